"""The workload: which operators a sub-network runs, with their GEMM sizes and bits.

Two scenarios, with defaults chosen after HAT's latency measurements (one sentence of about
30 tokens; override any of them):

* ``prefill``: a whole sequence at once. Encoder-decoder: the encoder over ``seq_len``
  source tokens and the decoder teacher-forced over ``seq_len`` target tokens. Decoder-only:
  the decoder over ``seq_len`` tokens. Logits for every position.
* ``decode``: autoregressive generation of ``decode_tokens`` tokens with a KV cache, as HAT
  measures latency. Encoder-decoder: the encoder once over ``seq_len`` source tokens, the
  cross-attention keys/values once, then one decoder step per token (M = batch). Decoder-
  only: one pass over a ``seq_len``-token prompt, then one step per token. Every step
  reads the KV cache from DRAM, and the weights too unless they stay on chip
  (``residency.py``): a step's GEMMs are marked ``resident_ok`` with ``loads_resident``,
  the DRAM loads they make when kept on chip (1: the first step loads them; 0: the
  prompt pass already did).

The operator rules (:func:`layer_ops`, :func:`side_ops`) take plain numbers or numpy arrays,
so the per-operator graph (:func:`build_graph`, shapes from ``space.linears``) and the
vectorised path (``batch.py``, shapes from the genes) apply the same rules.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import networkx as nx
import numpy as np

from ..errors import UserError
from ..space import STORAGE_BITS, Arch, SearchSpace

LN_PASSES = 5        # mean, variance, normalise, scale, shift
SOFTMAX_PASSES = 5   # max, subtract, exp, sum, divide
ACT_FN_PASSES = 1    # ReLU/GELU on the FFN hidden layer
LOGIT_BITS = 16      # the output projection produces float logits


@dataclass(frozen=True)
class Scenario:
    """How the model runs: whole sequence (prefill) or token-by-token generation (decode)."""

    name: Literal["prefill", "decode"] = "prefill"
    seq_len: int = 30
    decode_tokens: int = 30
    batch: int = 1

    def __post_init__(self):
        if self.name not in ("prefill", "decode"):
            raise UserError(f"scenario {self.name!r}: choose prefill or decode")
        for k, hi in (("seq_len", MAX_TOKENS), ("decode_tokens", MAX_TOKENS), ("batch", MAX_BATCH)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= hi:
                raise UserError(f"scenario {k} must be a whole number from 1 to {hi} (got {v!r})")

    @property
    def steps(self) -> np.ndarray:
        return np.arange(1, self.decode_tokens + 1, dtype=np.float64)


def storage_bpe(bits) -> np.ndarray | float:
    """Bytes per stored weight (ternary packs 5 trits per byte: 1.6 bits)."""
    if np.ndim(bits) == 0:
        return STORAGE_BITS[bits] / 8
    return np.vectorize(lambda b: STORAGE_BITS[b] / 8, otypes=[float])(bits)


#: Largest scenario sizes: every count stays an exact integer in float64.
MAX_TOKENS = 1 << 16
MAX_BATCH = 1 << 12


def _gemm(name, M, K, N, count, wbits, w_bpe, ab, w_dram, kv_bytes=0.0, role="", runs=None, loads_resident=None):
    """A GEMM operator; ``runs``: how many back-to-back runs its ``count`` GEMMs form;
    ``w_dram``: its second operand (weights, KV cache) comes from DRAM each time;
    ``loads_resident``: DRAM loads of its weights if they stay on chip (None: they can't)."""
    return dict(name=name, kind="gemm", M=M, K=K, N=N, count=count, wbits=wbits, w_bpe=w_bpe,
                ab=ab, w_dram=w_dram, w_loads=count * w_dram, kv_bytes=kv_bytes, role=role,
                runs=count if runs is None else runs, resident_ok=loads_resident is not None,
                loads_resident=count * w_dram if loads_resident is None else loads_resident)


def _vec(name, elems, passes, count, ab, bpe=None, dram_in=False, role=""):
    return dict(name=name, kind="vector", elems=elems, passes=passes, count=count, ab=ab,
                bpe=ab / 8 if bpe is None else bpe, dram_in=dram_in, role=role)


def _attention(pre, L, n, hd, heads, ab, B, count, cached):
    """Score, softmax and context for ``L`` queries over ``n`` keys per head (``n`` may be
    an array over decode steps)."""
    # the B x heads products of one layer run back to back
    return [_gemm(f"{pre}.score", L, hd, n, B * heads * count, ab, ab / 8, ab, cached, role="score", runs=count),
            _vec(f"{pre}.softmax", B * heads * L * n, SOFTMAX_PASSES, count, ab, role="softmax"),
            _gemm(f"{pre}.context", L, n, hd, B * heads * count, ab, ab / 8, ab, cached, role="context",
                  runs=count)]


def layer_ops(space: SearchSpace, side: str, sc: Scenario, lin: dict, e, heads, ffn, ab, cross,
              prefix: str) -> list[dict]:
    """Operators of one layer in execution order. ``lin`` maps a linear's role to
    (in_features, out_features, name, weight_bits, act_bits); values may be numbers or
    arrays (one entry per layer configuration)."""
    B, S, T = sc.batch, sc.seq_len, sc.decode_tokens
    a = lin["q"][1]
    hd = a / heads
    encdec_dec = side == "decoder" and space.is_encdec

    def linear(role, M, count=1, kv=False, step=False):
        i, o, name, w, x = lin[role]
        kvb = np.ceil(M * count * o * (x / 8)) if kv else 0.0  # keys/values this layer caches
        # a decode step's weights can stay on chip: the first step loads them (encoder-
        # decoder), or the prompt pass already did (decoder-only)
        res = (1 if space.is_encdec else 0) if step else None
        return _gemm(name + sfx, M, i, o, count, w, storage_bpe(w), x, True, kv_bytes=kvb, role=role,
                     loads_resident=res)

    def block(M, L, kv_self, count, steps_kv=None, cached=False):
        """One full layer pass over M tokens (L per sequence) with kv_self keys."""
        kv_cache = sc.name == "decode"
        step = steps_kv is not None
        attn = "self_attn" if side == "decoder" else "attn"
        ops = [_vec(f"{prefix}{sfx}.ln1", M * e, LN_PASSES, count, ab, role="ln"),
               linear("q", M, count, step=step), linear("k", M, count, kv_cache, step),
               linear("v", M, count, kv_cache, step)]
        if steps_kv is None:
            ops += _attention(f"{prefix}.{attn}{sfx}", L, kv_self, hd, heads, ab, B, count, cached)
        else:  # one entry per decode step, each once
            ops += _attention(f"{prefix}.{attn}{sfx}", L, steps_kv, hd, heads, ab, B, 1, cached)
        ops += [linear("out", M, count, step=step), _vec(f"{prefix}{sfx}.res1", M * e, 1, count, ab, role="residual")]
        if encdec_dec:
            Ls = S * cross
            ops += [_vec(f"{prefix}{sfx}.ln_cross", M * e, LN_PASSES, count, ab, role="ln"),
                    linear("cross_q", M, count, step=step), linear("cross_k", B * Ls, 1, kv_cache),
                    linear("cross_v", B * Ls, 1, kv_cache)]
            ops += _attention(f"{prefix}.cross_attn{sfx}", L, Ls, hd, heads, ab, B, count, cached)
            ops += [linear("cross_out", M, count, step=step),
                    _vec(f"{prefix}{sfx}.res_cross", M * e, 1, count, ab, role="residual")]
        ops += [_vec(f"{prefix}{sfx}.ln2", M * e, LN_PASSES, count, ab, role="ln"),
                linear("fc1", M, count, step=step),
                _vec(f"{prefix}{sfx}.act", M * ffn, ACT_FN_PASSES, count, ab, role="act"),
                linear("fc2", M, count, step=step), _vec(f"{prefix}{sfx}.res2", M * e, 1, count, ab, role="residual")]
        return ops

    sfx = ""
    if sc.name == "prefill" or side == "encoder":
        return block(B * S, S, S, 1)
    kv0 = 0 if space.is_encdec else S
    ops = []
    if not space.is_encdec:
        sfx = ".prompt"
        ops += block(B * S, S, S, 1)
        sfx = ""
    # one step per generated token: M = batch; attention over the growing KV cache in DRAM
    steps = kv0 + sc.steps
    return ops + block(B, 1, None, T, steps_kv=steps, cached=True)


def side_ops(space: SearchSpace, side: str, sc: Scenario, e) -> tuple[list, list]:
    """Operators before the layers (embedding gather) and after them (final norm, logits)."""
    B, S, T = sc.batch, sc.seq_len, sc.decode_tokens
    ebits = space.spec.quantization.embedding_bits
    ebpe = STORAGE_BITS[ebits] / 8
    V = space.vocab_size

    def gather(M, count, sfx=""):
        return _vec(f"{side}.embed{sfx}", M * e, 0, count, LOGIT_BITS, bpe=ebpe, dram_in=True, role="embed")

    def final(M, count, sfx=""):
        return _vec(f"{side}.final_ln{sfx}", M * e, LN_PASSES, count, LOGIT_BITS, role="ln")

    def logits(M, count, step=False):
        # decode: the (tied) output projection can stay on chip; the first step loads it
        return _gemm(f"{side}.output_proj", M, e, V, count, ebits, ebpe, LOGIT_BITS, True, role="output_proj",
                     loads_resident=1 if step else None)

    if sc.name == "prefill" or side == "encoder":
        pre, post = [gather(B * S, 1)], [final(B * S, 1)]
        if side == "decoder":
            post.append(logits(B * S, 1))
        return pre, post
    pre = [] if space.is_encdec else [gather(B * S, 1, ".prompt")]
    post = [] if space.is_encdec else [final(B * S, 1, ".prompt")]
    return pre + [gather(B, T)], post + [final(B, T), logits(B, T, step=True)]


def build_graph(space: SearchSpace, arch: Arch, scenario: Scenario) -> nx.DiGraph:
    """The operator graph of one sub-network: nodes in execution order, each with its GEMM
    sizes (M, K, N, count), bits, bytes per element and role; edges follow the data."""
    g = nx.DiGraph(space=space.name, scenario=scenario.name)
    linears: dict[tuple, dict] = {}
    for spec in space.linears(arch):
        linears.setdefault((spec.side, spec.layer), {})[spec.role] = spec
    last_of_side: dict[str, str] = {}
    prev = None

    def add(op, extra_edges=()):
        nonlocal prev
        g.add_node(op["name"], **op)
        if prev is not None:
            g.add_edge(prev, op["name"])
        for src in extra_edges:
            g.add_edge(src, op["name"])
        prev = op["name"]

    for side in space.sides():
        layers = arch.encoder if side == "encoder" else arch.decoder
        e = arch.encoder_embed_dim if side == "encoder" else arch.decoder_embed_dim
        pre, post = side_ops(space, side, scenario, e)
        prev = None
        for op in pre:
            add(op)
        for i, la in enumerate(layers):
            specs = linears[(side, i)]
            lin = {r: (s.in_features, s.out_features, s.name, s.weight_bits, s.act_bits)
                   for r, s in specs.items()}
            layer_in = prev
            for op in layer_ops(space, side, scenario, lin, e, la.heads, la.ffn_dim, la.act_bits,
                                la.cross_layers, f"{side}.{i}"):
                op["layer"] = i
                extra = []
                if op["role"] == "residual" and layer_in is not None:
                    extra.append(layer_in)
                if op["role"] in ("cross_k", "cross_v") and "encoder" in last_of_side:
                    extra.append(last_of_side["encoder"])
                add(op, extra)
                if op["role"] == "residual":
                    layer_in = op["name"]
        for op in post:
            add(op)
        last_of_side[side] = [n for n in g if n.startswith(f"{side}.final_ln")][-1]
    return g
