"""Search spaces: the YAML schema, the ``Arch`` value, sampling, encoding and sizes.

A space describes every sub-network a supernet can run: embedding widths, depths,
per-layer FFN width, head count, (decoder) cross-attention span, per-layer weight and
activation bit-widths, plus the mixture-of-supernets (MoS) settings. ``SearchSpace`` is
pure Python/numpy so that the cost engine and the search never need torch.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from .errors import UserError
from .presets import load_preset_yaml

#: Weight bit-widths cosearch knows; 1.58 is ternary.
WEIGHT_BITS = (1, 1.58, 2, 3, 4, 8, 16)
#: Activation bit-widths; 16 means float.
ACT_BITS = (4, 8, 16)
#: Bits each weight takes in an exported file: ternary packs 5 trits per byte.
STORAGE_BITS = {1: 1.0, 1.58: 1.6, 2: 2.0, 3: 3.0, 4: 4.0, 8: 8.0, 16: 16.0}
#: Float parameters that are not quantized (biases, norms, scales) are stored in float32.
FLOAT_BITS = 32


def _plain_int(x):
    """numpy integers and whole floats -> int, so JSON, equality and digests agree."""
    if isinstance(x, (bool, np.bool_)):
        return x
    if isinstance(x, (int, np.integer)) or (isinstance(x, (float, np.floating)) and float(x).is_integer()):
        return int(x)
    return x


def _plain_bits(b):
    """Like canonical_bits, but leaves unknown values alone so validate_arch can name them."""
    try:
        return canonical_bits(b)
    except (TypeError, ValueError):
        return b


def canonical_bits(b: float) -> float:
    """1.58 stays a float; whole numbers become ints so JSON and hashes are stable."""
    for known in WEIGHT_BITS:
        if abs(float(b) - known) < 1e-6:
            return known
    raise ValueError(f"unknown bit-width {b}; allowed: {list(WEIGHT_BITS)}")


# --------------------------------------------------------------------------- schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Largest value of each size a space may name: far beyond any real transformer, low
#: enough that counting sub-networks and estimating memory stay instant (a space is
#: checked against this machine's memory only where a model is built).
SIZE_LIMITS = {"embed_dim": 2 ** 16, "ffn_dim": 2 ** 18, "layers": 1024, "heads": 1024,
               "cross_layers": 1024, "head_dim": 2 ** 16, "qkv_dim": 2 ** 16, "vocab_size": 2 ** 22,
               "max_positions": 2 ** 20, "experts": 256, "router_hidden": 2 ** 16}


def _at_most(name: str, value) -> None:
    if value is not None and value > SIZE_LIMITS[name]:
        raise ValueError(f"{name} {value} is larger than cosearch allows ({SIZE_LIMITS[name]:,})")


def _choices(v: list, what: str = "integers", name: str | None = None) -> list:
    if not isinstance(v, list) or not v:
        raise ValueError(f"must be a non-empty list of positive {what}")
    if any(x <= 0 for x in v):
        raise ValueError(f"all choices must be positive (got {v})")
    if name is not None:
        _at_most(name, max(v))
    if len(set(v)) != len(v):
        raise ValueError(f"choices repeat (got {v})")
    return sorted(v)


class SideSpec(_Strict):
    """Choices for the encoder or the decoder stack."""

    embed_dim: list[int]
    layers: list[int]
    ffn_dim: list[int]
    heads: list[int]
    #: attention width = heads * head_dim (heads are sliced) ...
    head_dim: int | None = None
    #: ... or a fixed q/k/v width shared by all head counts (HAT).
    qkv_dim: int | None = None
    #: decoder only (encoder_decoder family): how many of the last encoder layers
    #: the cross-attention reads.
    cross_layers: list[int] | None = None

    @field_validator("embed_dim", "layers", "ffn_dim", "heads", "cross_layers")
    @classmethod
    def _sorted(cls, v, info):
        return None if v is None else _choices(v, name=info.field_name)

    @model_validator(mode="after")
    def _attention_width(self):
        if (self.head_dim is None) == (self.qkv_dim is None):
            raise ValueError("give exactly one of head_dim (width = heads * head_dim) "
                             "or qkv_dim (fixed width, HAT style)")
        if self.qkv_dim is not None:
            bad = [h for h in self.heads if self.qkv_dim % h]
            if bad:
                raise ValueError(f"qkv_dim {self.qkv_dim} is not divisible by heads {bad}")
        if (self.head_dim or 1) <= 0 or (self.qkv_dim or 1) <= 0:
            raise ValueError("head_dim / qkv_dim must be positive")
        _at_most("head_dim", self.head_dim)
        _at_most("qkv_dim", self.qkv_dim)
        return self


class QuantSpec(_Strict):
    weight_bits: list[float] = [16]
    act_bits: list[int] = [16]
    #: embedding table and (tied) output projection: 8 or 16 bits.
    embedding_bits: Literal[8, 16] = 16

    @field_validator("weight_bits")
    @classmethod
    def _wbits(cls, v):
        out = []
        for b in _choices(v, "numbers"):
            try:
                out.append(canonical_bits(b))
            except ValueError:
                raise ValueError(f"{b} is not a weight bit-width; allowed: "
                                 f"{', '.join(map(str, WEIGHT_BITS))}") from None
        return out

    @field_validator("act_bits")
    @classmethod
    def _abits(cls, v):
        v = _choices(v)
        bad = [b for b in v if b not in ACT_BITS]
        if bad:
            raise ValueError(f"{bad} not allowed; activation bits are {', '.join(map(str, ACT_BITS))}")
        return v


class MoSSpec(_Strict):
    #: none = plain weight sharing (HAT); layer = one expert mixture per layer;
    #: neuron = one mixture per output neuron.
    mode: Literal["none", "layer", "neuron"] = "none"
    experts: int = 1
    router_hidden: int = 128
    sublayers: list[Literal["ffn", "attention"]] = ["ffn"]

    @model_validator(mode="after")
    def _check(self):
        if self.experts < 1:
            raise ValueError("experts must be >= 1")
        if self.mode == "none" and self.experts != 1:
            raise ValueError("mode 'none' uses no experts: set experts: 1 or mode: layer|neuron")
        if self.router_hidden < 1:
            raise ValueError("router_hidden must be >= 1")
        _at_most("experts", self.experts)
        _at_most("router_hidden", self.router_hidden)
        if "ffn" not in self.sublayers:
            raise ValueError("sublayers must include 'ffn' (attention is optional)")
        return self


class SpaceSpec(_Strict):
    name: str
    family: Literal["encoder_decoder", "decoder_only"]
    vocab_size: int
    max_positions: int = 256
    share_embeddings: bool = True
    dropout: float = 0.1
    encoder: SideSpec | None = None
    decoder: SideSpec
    quantization: QuantSpec = QuantSpec()
    mos: MoSSpec = MoSSpec()

    @model_validator(mode="after")
    def _family(self):
        if self.vocab_size < 2 or self.max_positions < 1:
            raise ValueError("vocab_size must be >= 2 and max_positions >= 1")
        _at_most("vocab_size", self.vocab_size)
        _at_most("max_positions", self.max_positions)
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1)")
        if self.family == "encoder_decoder":
            if self.encoder is None:
                raise ValueError("family encoder_decoder needs an 'encoder' section")
            if self.encoder.cross_layers is not None:
                raise ValueError("encoder.cross_layers is not allowed: cross_layers belongs to the decoder")
            if self.decoder.cross_layers is None:
                raise ValueError("decoder.cross_layers is required for encoder_decoder "
                                 "(e.g. [1, 2, 3]: how many last encoder layers cross-attention reads)")
            if max(self.decoder.cross_layers) > min(self.encoder.layers):
                raise ValueError(f"decoder.cross_layers max {max(self.decoder.cross_layers)} exceeds "
                                 f"the fewest encoder layers {min(self.encoder.layers)}")
        else:
            if self.encoder is not None:
                raise ValueError("family decoder_only takes no 'encoder' section")
            if self.decoder.cross_layers is not None:
                raise ValueError("decoder.cross_layers is only for family encoder_decoder")
        return self


def _format_validation_error(path: str, err: ValidationError) -> str:
    e = err.errors()[0]
    # Whole-file checks have no location; their messages name the fields themselves.
    loc = ".".join(str(x) for x in e["loc"])
    loc = f"{loc}: " if loc else ""
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown field; check the spelling against the schema in README.md"
    elif e["type"] == "missing":
        msg = "required field is missing"
    return f"{path}: {loc}{msg}"


# --------------------------------------------------------------------------- values
@dataclass(frozen=True)
class LayerArch:
    """One transformer layer's choices."""

    ffn_dim: int
    heads: int
    weight_bits: float = 16
    act_bits: int = 16
    #: decoder layers of an encoder-decoder: how many last encoder layers to attend to.
    cross_layers: int = 0

    def __post_init__(self):
        # 16.0 and 16 (or np.int64(128) and 128) are equal and hash alike; normalise them so
        # to_json() and digest() agree too (digests are cache keys).
        for k in ("ffn_dim", "heads", "act_bits", "cross_layers"):
            object.__setattr__(self, k, _plain_int(getattr(self, k)))
        object.__setattr__(self, "weight_bits", _plain_bits(self.weight_bits))


@dataclass(frozen=True)
class Arch:
    """An immutable sub-network: hashable, with a stable JSON round-trip."""

    decoder_embed_dim: int
    decoder: tuple[LayerArch, ...]
    encoder_embed_dim: int = 0
    encoder: tuple[LayerArch, ...] = ()

    def __post_init__(self):
        # Same reason as LayerArch: equal archs must have equal JSON and digests.
        object.__setattr__(self, "decoder_embed_dim", _plain_int(self.decoder_embed_dim))
        object.__setattr__(self, "encoder_embed_dim", _plain_int(self.encoder_embed_dim))
        object.__setattr__(self, "decoder", tuple(self.decoder))
        object.__setattr__(self, "encoder", tuple(self.encoder))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "Arch":
        def layers(xs):
            out = []
            for x in xs:
                x = dict(x)
                x["weight_bits"] = canonical_bits(x.get("weight_bits", 16))
                out.append(LayerArch(**x))
            return tuple(out)

        return cls(decoder_embed_dim=int(d["decoder_embed_dim"]), decoder=layers(d["decoder"]),
                   encoder_embed_dim=int(d.get("encoder_embed_dim", 0)),
                   encoder=layers(d.get("encoder", ())))

    @classmethod
    def from_json(cls, s: str) -> "Arch":
        return cls.from_dict(json.loads(s))

    def digest(self) -> str:
        """A short hash that is the same in every process and version (cache keys)."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LinearSpec:
    """One weight matrix of a sub-network: the single source for sizes and costs."""

    name: str
    in_features: int
    out_features: int
    weight_bits: float
    act_bits: int
    side: str  # "encoder" | "decoder"
    layer: int
    role: str  # q k v out cross_q cross_k cross_v cross_out fc1 fc2
    bias: bool = True

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class SizeReport:
    params: int
    weight_bits: float  # storage bits of everything, as exported


# --------------------------------------------------------------------------- the space
@dataclass
class SearchSpace:
    spec: SpaceSpec
    source: str = "<memory>"
    _genes: list = field(default_factory=list, repr=False)

    # ---- loading
    @classmethod
    def load(cls, name_or_path: str | Path) -> "SearchSpace":
        data, path = load_preset_yaml(name_or_path, "spaces")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data, source: str = "<memory>") -> "SearchSpace":
        if not isinstance(data, dict):
            raise UserError(f"{source}: a search space must be a YAML mapping with keys "
                            "name, family, vocab_size, decoder, ...")
        try:
            # model_validate, not SpaceSpec(**data): YAML keys may be numbers.
            spec = SpaceSpec.model_validate(data)
        except ValidationError as e:
            raise UserError(_format_validation_error(source, e)) from None
        return cls(spec=spec, source=source)

    def to_dict(self) -> dict:
        return self.spec.model_dump()

    # ---- shortcuts
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def is_encdec(self) -> bool:
        return self.spec.family == "encoder_decoder"

    @property
    def vocab_size(self) -> int:
        return self.spec.vocab_size

    def side(self, name: str) -> SideSpec:
        return self.spec.encoder if name == "encoder" else self.spec.decoder

    def sides(self) -> list[str]:
        return ["encoder", "decoder"] if self.is_encdec else ["decoder"]

    def max_layers(self, side: str) -> int:
        return max(self.side(side).layers)

    def attn_dim(self, side: str, heads: int) -> int:
        s = self.side(side)
        return s.qkv_dim if s.qkv_dim is not None else heads * s.head_dim

    def head_dim(self, side: str, heads: int) -> int:
        return self.attn_dim(side, heads) // heads

    def max_attn_dim(self, side: str) -> int:
        return self.attn_dim(side, max(self.side(side).heads))

    def max_embed_dim(self, side: str) -> int:
        return max(self.side(side).embed_dim)

    def embed_table_dim(self) -> int:
        """Width of the (shared) embedding table: the widest side."""
        return max(self.max_embed_dim(s) for s in self.sides())

    # ---- genes: every choice as (key, options); arch <-> gene dict
    def _layer_gene_keys(self, side: str) -> list[tuple[str, tuple]]:
        s, q = self.side(side), self.spec.quantization
        keys = [("ffn_dim", tuple(s.ffn_dim)), ("heads", tuple(s.heads)),
                ("weight_bits", tuple(q.weight_bits)), ("act_bits", tuple(q.act_bits))]
        if side == "decoder" and self.is_encdec:
            keys.append(("cross_layers", tuple(s.cross_layers)))
        return keys

    def genes(self) -> list[tuple[tuple, tuple]]:
        """All genes: ((side, field[, layer]), options); inactive layers still have genes."""
        if not self._genes:
            g = []
            for side in self.sides():
                s = self.side(side)
                g.append(((side, "embed_dim"), tuple(s.embed_dim)))
                g.append(((side, "layers"), tuple(s.layers)))
                for i in range(self.max_layers(side)):
                    for k, opts in self._layer_gene_keys(side):
                        g.append(((side, k, i), opts))
            self._genes = g
        return self._genes

    def _from_genes(self, v: dict) -> Arch:
        out = {}
        for side in self.sides():
            n = v[(side, "layers")]
            layers = []
            for i in range(n):
                kw = {k: v[(side, k, i)] for k, _ in self._layer_gene_keys(side)}
                if "cross_layers" in kw:
                    kw["cross_layers"] = min(kw["cross_layers"], v[("encoder", "layers")])
                layers.append(LayerArch(**kw))
            out[side] = tuple(layers)
            out[side + "_embed"] = v[(side, "embed_dim")]
        return Arch(decoder_embed_dim=out["decoder_embed"], decoder=out["decoder"],
                    encoder_embed_dim=out.get("encoder_embed", 0), encoder=out.get("encoder", ()))

    def _to_genes(self, arch: Arch, rng: np.random.Generator) -> dict:
        """Gene dict of an arch; genes of absent layers are drawn at random."""
        v = {key: opts[rng.integers(len(opts))] for key, opts in self.genes()}
        for side in self.sides():
            layers = arch.encoder if side == "encoder" else arch.decoder
            v[(side, "embed_dim")] = arch.encoder_embed_dim if side == "encoder" else arch.decoder_embed_dim
            v[(side, "layers")] = len(layers)
            for i, la in enumerate(layers):
                for k, _ in self._layer_gene_keys(side):
                    v[(side, k, i)] = getattr(la, k)
        return v

    # ---- sampling and variation
    def sample(self, rng=None, deepest: bool = False, shallowest: bool = False) -> Arch:
        """A uniform random arch; ``deepest`` / ``shallowest``: the same draws with every stack
        at its most / fewest layers (the draws are made either way, so the stream after it does
        not depend on them)."""
        if deepest and shallowest:
            raise ValueError("an arch cannot be both deepest and shallowest")
        rng = np.random.default_rng(rng)
        genes = {key: opts[rng.integers(len(opts))] for key, opts in self.genes()}
        if deepest or shallowest:
            pick = max if deepest else min
            genes.update({key: pick(opts) for key, opts in self.genes() if key[1:] == ("layers",)})
        return self._from_genes(genes)

    def _extreme(self, pick) -> Arch:
        return self._from_genes({key: pick(opts) for key, opts in self.genes()})

    def largest(self) -> Arch:
        """Every choice at its maximum, bits included (the distillation teacher)."""
        return self._extreme(max)

    def smallest(self) -> Arch:
        return self._extreme(min)

    def with_bits(self, arch: Arch, weight_bits: float | None = None, act_bits: int | None = None) -> Arch:
        """The same arch with every layer at the given bits (probe configurations)."""
        def f(la):
            return replace(la, weight_bits=canonical_bits(weight_bits) if weight_bits is not None else la.weight_bits,
                           act_bits=act_bits if act_bits is not None else la.act_bits)
        return replace(arch, encoder=tuple(map(f, arch.encoder)), decoder=tuple(map(f, arch.decoder)))

    def mutate(self, arch: Arch, p: float, rng=None) -> Arch:
        """Each gene is redrawn with probability p (HAT's evolutionary mutation)."""
        rng = np.random.default_rng(rng)
        v = self._to_genes(arch, rng)
        for key, opts in self.genes():
            if rng.random() < p:
                v[key] = opts[rng.integers(len(opts))]
        return self._from_genes(v)

    def crossover(self, a: Arch, b: Arch, rng=None) -> Arch:
        """Uniform crossover: each gene from a or b with equal probability."""
        rng = np.random.default_rng(rng)
        va, vb = self._to_genes(a, rng), self._to_genes(b, rng)
        # A layer only one parent has takes that parent's genes on both sides, so that every
        # gene of the child comes from a or b (not from the random filler of absent layers).
        for side in self.sides():
            na, nb = va[(side, "layers")], vb[(side, "layers")]
            for i in range(min(na, nb), max(na, nb)):
                src, dst = (va, vb) if na > nb else (vb, va)
                for k, _ in self._layer_gene_keys(side):
                    dst[(side, k, i)] = src[(side, k, i)]
        return self._from_genes({k: (va[k] if rng.random() < 0.5 else vb[k]) for k, _ in self.genes()})

    def validate_arch(self, arch: Arch, source: str = "arch") -> Arch:
        """Raise UserError naming the first choice the space does not allow."""
        def check(what, val, opts):
            if val not in opts:
                raise UserError(f"{source}: {what} = {val} is not in the space {self.name!r} "
                                f"(choices: {list(opts)})")
        for side in self.sides():
            layers = arch.encoder if side == "encoder" else arch.decoder
            emb = arch.encoder_embed_dim if side == "encoder" else arch.decoder_embed_dim
            check(f"{side}_embed_dim", emb, self.side(side).embed_dim)
            check(f"{side} layer count", len(layers), self.side(side).layers)
            for i, la in enumerate(layers):
                keys = self._layer_gene_keys(side)
                for k, opts in keys:
                    if k == "cross_layers":
                        opts = tuple(c for c in opts if c <= len(arch.encoder)) or opts
                    check(f"{side}[{i}].{k}", getattr(la, k), opts)
                if "cross_layers" not in dict(keys):
                    check(f"{side}[{i}].cross_layers", la.cross_layers, (0,))
        if not self.is_encdec and (arch.encoder or arch.encoder_embed_dim):
            raise UserError(f"{source}: space {self.name!r} is decoder_only; the arch has an encoder")
        return arch

    # ---- counting
    def cardinality(self) -> int:
        total = 1
        for side in self.sides():
            s = self.side(side)
            per_layer = math.prod(len(o) for _, o in self._layer_gene_keys(side))
            total *= len(s.embed_dim) * sum(per_layer ** n for n in s.layers)
        return total

    def cardinality_log10(self) -> float:
        return math.log10(self.cardinality())  # exact for Python ints of any size

    # ---- encoding for routers and predictors
    def encoding_size(self) -> int:
        n = 2 * len(self.sides())
        for side in self.sides():
            n += self.max_layers(side) * (1 + len(self._layer_gene_keys(side)))
        return n

    @staticmethod
    def _norm(val, opts, log=False) -> float:
        lo, hi = min(opts), max(opts)
        if hi == lo:
            return 0.0
        if log:
            return (math.log2(val) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
        return (val - lo) / (hi - lo)

    def encode(self, arch: Arch) -> np.ndarray:
        """Fixed-length float32 vector in [0, 1]: per side [embed, depth], then per layer
        slot [present, ffn, heads, weight bits (log), act bits (log)(, cross span)];
        absent layers are all zeros. The layout is stable: saved routers depend on it."""
        out: list[float] = []
        for side in self.sides():
            s = self.side(side)
            emb = arch.encoder_embed_dim if side == "encoder" else arch.decoder_embed_dim
            layers = arch.encoder if side == "encoder" else arch.decoder
            out += [self._norm(emb, s.embed_dim), self._norm(len(layers), s.layers)]
            keys = self._layer_gene_keys(side)
            for i in range(self.max_layers(side)):
                if i < len(layers):
                    la = layers[i]
                    out.append(1.0)
                    out += [self._norm(getattr(la, k), opts, log=k.endswith("bits")) for k, opts in keys]
                else:
                    out += [0.0] * (1 + len(keys))
        return np.asarray(out, dtype=np.float32)

    def encode_many(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.stack([self.encode(a) for a in archs]) if archs else np.zeros((0, self.encoding_size()), np.float32)

    # ---- sizes
    def linears(self, arch: Arch) -> list[LinearSpec]:
        """Every quantizable weight matrix of the sub-network, in execution order."""
        out = []
        e_enc = arch.encoder_embed_dim
        for side in self.sides():
            layers = arch.encoder if side == "encoder" else arch.decoder
            e = e_enc if side == "encoder" else arch.decoder_embed_dim
            for i, la in enumerate(layers):
                a = self.attn_dim(side, la.heads)
                kw = dict(weight_bits=la.weight_bits, act_bits=la.act_bits, side=side, layer=i)
                pre = f"{side}.{i}"
                attn = "self_attn" if side == "decoder" else "attn"
                for r in ("q", "k", "v"):
                    out.append(LinearSpec(f"{pre}.{attn}.{r}", e, a, role=r, **kw))
                out.append(LinearSpec(f"{pre}.{attn}.out", a, e, role="out", **kw))
                if side == "decoder" and self.is_encdec:
                    out.append(LinearSpec(f"{pre}.cross_attn.q", e, a, role="cross_q", **kw))
                    out.append(LinearSpec(f"{pre}.cross_attn.k", e_enc, a, role="cross_k", **kw))
                    out.append(LinearSpec(f"{pre}.cross_attn.v", e_enc, a, role="cross_v", **kw))
                    out.append(LinearSpec(f"{pre}.cross_attn.out", a, e, role="cross_out", **kw))
                out.append(LinearSpec(f"{pre}.ffn.fc1", e, la.ffn_dim, role="fc1", **kw))
                out.append(LinearSpec(f"{pre}.ffn.fc2", la.ffn_dim, e, role="fc2", **kw))
        return out

    def embedding_shapes(self, arch: Arch) -> list[tuple[str, int, int]]:
        """(name, rows, cols) of embedding tables; the output projection is tied."""
        V = self.vocab_size
        if not self.is_encdec:
            return [("embed", V, arch.decoder_embed_dim)]
        if self.spec.share_embeddings:
            return [("embed", V, max(arch.encoder_embed_dim, arch.decoder_embed_dim))]
        return [("encoder_embed", V, arch.encoder_embed_dim), ("decoder_embed", V, arch.decoder_embed_dim)]

    def norm_params(self, arch: Arch) -> int:
        """Layer-norm parameters (weight and bias): pre-norm layers plus a final norm per side."""
        n = 0
        for side in self.sides():
            layers = arch.encoder if side == "encoder" else arch.decoder
            e = arch.encoder_embed_dim if side == "encoder" else arch.decoder_embed_dim
            per = 3 if (side == "decoder" and self.is_encdec) else 2
            n += 2 * e * (per * len(layers) + 1)
        return n

    def size(self, arch: Arch) -> SizeReport:
        """Analytic parameter count and the exported weight size in bits."""
        emb_bits = self.spec.quantization.embedding_bits
        params, bits = 0, 0.0
        for _, r, c in self.embedding_shapes(arch):
            params += r * c
            bits += r * c * STORAGE_BITS[emb_bits] + (r * FLOAT_BITS if emb_bits < 16 else 0)
        for lin in self.linears(arch):
            params += lin.params
            bits += lin.in_features * lin.out_features * STORAGE_BITS[lin.weight_bits]
            bits += (lin.out_features if lin.bias else 0) * FLOAT_BITS
            if lin.weight_bits < 16:
                bits += lin.out_features * FLOAT_BITS  # per-channel scale
        nparams = self.norm_params(arch)
        return SizeReport(params=params + nparams, weight_bits=bits + nparams * FLOAT_BITS)

    def supernet_params(self) -> int:
        """About how many parameters the supernet over this space holds (the largest
        weights, each mixture-of-supernets linear once per expert, plus its router):
        what building it allocates, counted without building it."""
        mos, largest = self.spec.mos, self.largest()
        mixed = {"fc1", "fc2"} | ({f"{p}{r}" for p in ("", "cross_") for r in ("q", "k", "v", "out")}
                                  if "attention" in mos.sublayers else set())
        total = self.size(largest).params
        for lin in self.linears(largest):
            if mos.mode != "none" and lin.role in mixed:
                outputs = mos.experts * (1 if mos.mode == "layer" else lin.out_features)
                total += (mos.experts - 1) * lin.params + mos.router_hidden * (self.encoding_size() + 1 + outputs)
        return total

    def check_fits_memory(self, bytes_per_param: int, doing: str, arch: Arch | None = None) -> None:
        """``UserError`` before anything is allocated when the supernet (or the one
        ``arch``) at ``bytes_per_param`` cannot fit in this machine's memory."""
        from .inputs import check_memory
        params = self.supernet_params() if arch is None else self.size(arch).params
        check_memory(params * bytes_per_param, f"{doing} the {params:,}-parameter "
                     f"{'model' if arch is not None else 'supernet'} of space {self.name!r} ({self.source})",
                     "use a space with smaller sizes (embed_dim, ffn_dim, layers, vocab_size, experts)")

    def param_count(self, arch: Arch) -> int:
        return self.size(arch).params

    def weight_size_bits(self, arch: Arch) -> float:
        return self.size(arch).weight_bits

    # ---- summary for the CLI
    def summary(self) -> dict:
        lo, hi = self.smallest(), self.largest()
        return {
            "name": self.name, "family": self.family, "source": self.source,
            "cardinality_log10": round(self.cardinality_log10(), 3),
            "params_min": self.param_count(lo), "params_max": self.param_count(hi),
            "weight_mb_min": self.weight_size_bits(lo) / 8e6, "weight_mb_max": self.weight_size_bits(hi) / 8e6,
            "encoding_size": self.encoding_size(),
            "choices": self.spec.model_dump(),
        }
