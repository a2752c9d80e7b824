"""Transformer building blocks shared by the supernet and extracted sub-networks.

The forward code (attention, layers, encoder/decoder, incremental decoding) is written
once. A supernet is this model built from *elastic* parts (largest weights, experts,
routers, per-bit quantizers; the active sizes are set by ``Supernet.set_arch``); an
extracted sub-network is the same model built from *plain* parts of exactly the arch's
sizes. Sharing the code is what makes extraction parity exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import buckets as bucket_path
from . import fused as fused_path
from .quant import ActQuantizer, WeightQuantizer


# --------------------------------------------------------------------------- helpers
@lru_cache(maxsize=64)
def _sinusoid_cpu(length: int, dim: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
    ang = pos * freq[None]
    pe = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
    if dim % 2:
        pe = torch.cat([pe, torch.zeros(length, 1)], dim=1)
    return pe


@lru_cache(maxsize=64)
def sinusoid(length: int, dim: int, device, dtype=torch.float32) -> torch.Tensor:
    """Sinusoidal positions computed for the active width (not a slice of the widest), kept
    on the device: a copy from the host per forward pass would wait for the GPU each time."""
    return _sinusoid_cpu(length, dim).to(device=device, dtype=dtype)


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout``, without dispatching an op that returns ``x`` when not training."""
    return F.dropout(x, p, training) if training else x


class ArchCode:
    """The current arch's encoding, shared by all routers of one supernet (not a module)."""

    def __init__(self):
        self.code: np.ndarray | None = None
        self._cache: dict = {}

    def set(self, code: np.ndarray) -> None:
        self.code, self._cache = code, {}

    def tensor(self, device) -> torch.Tensor:
        t = self._cache.get(device)
        if t is None:
            t = self._cache[device] = torch.as_tensor(self.code, device=device)
        return t


# --------------------------------------------------------------------------- MoS init
#: experts start as one xavier init plus noise of this std relative to the init's std
EXPERT_INIT_NOISE = 0.05
#: the router's last layer starts with std GAIN / sqrt(fan-in): mixtures then already differ
#: per arch (by a few %), so experts get different gradients (zero would make every
#: expert's gradient equal, and Adam's per-element scaling keeps small differences small)
ROUTER_INIT_GAIN = 1.5


def init_experts(m: int, out_max: int, in_max: int) -> torch.Tensor:
    """(m, out, in) expert weights that start as one xavier-initialised weight plus small
    noise, so any mixture of them starts as the plain layer (independent inits would make
    the uniform mixture 1/sqrt(m) smaller) while the experts can still drift apart."""
    w0 = nn.init.xavier_uniform_(torch.empty(out_max, in_max))
    if m == 1:
        return w0[None]
    noise = torch.randn(m - 1, out_max, in_max) * (EXPERT_INIT_NOISE * float(w0.std()))
    return torch.cat([w0[None], w0 + noise])


def init_router_output(last: nn.Linear) -> None:
    """Small random weights, zero bias: near-uniform mixtures that already differ per
    arch, so the experts get different gradients from the first step."""
    nn.init.normal_(last.weight, std=ROUTER_INIT_GAIN / math.sqrt(last.in_features))
    nn.init.zeros_(last.bias)


# --------------------------------------------------------------------------- linears
class ElasticLinear(nn.Module):
    """A linear layer of the supernet: m experts of the largest shape, an optional router,
    per-bit weight quantizers and an activation quantizer. The active sub-layer uses the
    leading ``out_features`` rows and ``in_features`` columns. ``fused`` (see
    ``cosearch.model.fused.use_fused``) computes the same weights and activations in fused kernels.
    ``bucket`` (set by ``cosearch.model.bucketed_members.configure_buckets``, cleared by
    ``configure``) runs it at a bucket's shape with the active sizes and bits as tensors."""

    fused = False
    bucket = None

    def __init__(self, in_max: int, out_max: int, *, bias: bool = True, weight_bits=(16,),
                 act_bits=(16,), experts: int = 1, mos: str = "none", router_hidden: int = 128,
                 arch_code: ArchCode | None = None, code_size: int = 0):
        super().__init__()
        self.mos = mos if experts > 1 or mos != "none" else "none"
        m = experts if self.mos != "none" else 1
        self.weight = nn.Parameter(init_experts(m, out_max, in_max))
        self.bias = nn.Parameter(torch.zeros(out_max)) if bias else None
        self.router = None
        if self.mos != "none":
            n_out = m if self.mos == "layer" else m * out_max
            self.router = nn.Sequential(nn.Linear(code_size, router_hidden), nn.ReLU(),
                                        nn.Linear(router_hidden, n_out))
            init_router_output(self.router[2])
        self.arch_code = arch_code
        self.wq = WeightQuantizer(out_max, tuple(weight_bits))
        self.aq = ActQuantizer(tuple(act_bits))
        self.experts, self.in_max, self.out_max = m, in_max, out_max
        self.in_features, self.out_features = in_max, out_max
        self.weight_bits, self.act_bits = max(weight_bits), max(act_bits)

    def configure(self, in_features: int, out_features: int, weight_bits, act_bits) -> None:
        self.in_features, self.out_features = in_features, out_features
        self.weight_bits, self.act_bits = weight_bits, act_bits
        self.bucket = None

    def mixture_weights(self, code: torch.Tensor | None = None) -> torch.Tensor | None:
        """Router output: (m,) for layer-wise MoS, (out, m) for neuron-wise (``code``: the
        arch code tensor, default the supernet's current one)."""
        if self.router is None:
            return None
        logits = self.router(self.arch_code.tensor(self.weight.device) if code is None else code)
        if self.mos == "layer":
            return torch.softmax(logits, dim=-1)
        return torch.softmax(logits.view(self.out_max, self.experts)[: self.out_features], dim=-1)

    def mixed_weight(self, code: torch.Tensor | None = None) -> torch.Tensor:
        """W(arch): the expert mixture of the active slice, before quantization."""
        o, i = self.out_features, self.in_features
        experts = self.weight[:, :o, :i]
        alpha = self.mixture_weights(code)
        if alpha is None:
            return experts[0]
        # broadcast-multiply-sum: an einsum here lowers to a slow batched matmul on GPUs
        if self.mos == "layer":
            return (alpha.view(-1, 1, 1) * experts).sum(0)
        return (alpha.t().unsqueeze(-1) * experts).sum(0)

    def quantized_weight(self) -> torch.Tensor:
        if self.fused:
            return fused_path.elastic_weights([self])[0, : self.out_features, : self.in_features]
        w = self.mixed_weight()
        if self.weight_bits == 16 and torch.is_autocast_enabled(w.device.type):
            # autocast rounds to bf16 anyway (coarser than fp16): skip the fp16 pass
            return w
        return self.wq(w, self.weight_bits)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.bucket is not None:
            return bucket_path.quantize_input(self, x)
        return fused_path.quantize_activation(self.aq, x, self.act_bits) if self.fused else self.aq(x, self.act_bits)

    def active_bias(self) -> torch.Tensor | None:
        return self.bias[: self.out_features] if self.bias is not None else None

    def forward(self, x: torch.Tensor, input_quantized: bool = False) -> torch.Tensor:
        if self.bucket is not None:
            return bucket_path.linear(self, x if input_quantized else self.quantize_input(x))
        return F.linear(x if input_quantized else self.quantize_input(x), self.quantized_weight(), self.active_bias())


class QLinear(nn.Module):
    """A plain linear layer of an extracted sub-network: weights already mixed, sliced and
    fake-quantized (``weight_scale`` keeps the per-channel scale for integer export)."""

    fused = False

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 weight_bits: float = 16, act_bits: int = 16, empty: bool = False):
        super().__init__()
        # empty: tensors left None for the caller to set (extraction: no zeros to overwrite)
        self.weight = None if empty else nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias and not empty else None
        self.register_buffer("weight_scale", torch.ones(out_features, 1) if weight_bits < 16 and not empty else None)
        self.aq = ActQuantizer((act_bits,))
        self.in_features, self.out_features = in_features, out_features
        self.weight_bits, self.act_bits = weight_bits, act_bits

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return fused_path.quantize_activation(self.aq, x, self.act_bits) if self.fused else self.aq(x, self.act_bits)

    def forward(self, x: torch.Tensor, input_quantized: bool = False) -> torch.Tensor:
        return F.linear(x if input_quantized else self.quantize_input(x), self.weight, self.bias)


# --------------------------------------------------------------------------- norms, embeddings
class ElasticLayerNorm(nn.Module):
    """LayerNorm over the leading ``dim`` features (a plain one when dim == max)."""

    def __init__(self, max_dim: int, eps: float = 1e-5, empty: bool = False):
        super().__init__()
        self.weight = None if empty else nn.Parameter(torch.ones(max_dim))
        self.bias = None if empty else nn.Parameter(torch.zeros(max_dim))
        self.dim, self.eps = max_dim, eps

    def forward(self, x):
        d, w, b = self.dim, self.weight, self.bias
        if d != w.shape[0]:  # a full-width norm (every extracted one) needs no slicing ops
            w, b = w[:d], b[:d]
        return F.layer_norm(x, (d,), w, b, self.eps)


class ElasticEmbedding(nn.Module):
    """The (shared) token table; the output projection is tied to it. The table is
    quantized once at its widest active width and each side reads its leading columns,
    so encoder and decoder agree on one quantized table (as an export stores it)."""

    def __init__(self, vocab: int, max_dim: int, bits: float = 16):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab, max_dim) * max_dim ** -0.5)
        self.wq = WeightQuantizer(vocab, (bits,))
        self.bits, self.dim = bits, max_dim

    def table(self) -> torch.Tensor:
        return self.wq(self.weight[:, : self.dim], self.bits)


class PlainEmbedding(nn.Module):
    """An extracted table: already quantized; ``weight_scale`` is kept for export."""

    def __init__(self, vocab: int, dim: int, bits: float = 16, empty: bool = False):
        super().__init__()
        self.weight = None if empty else nn.Parameter(torch.zeros(vocab, dim))
        self.register_buffer("weight_scale", torch.ones(vocab, 1) if bits < 16 and not empty else None)
        self.bits, self.dim = bits, dim

    def table(self) -> torch.Tensor:
        return self.weight


# --------------------------------------------------------------------------- blocks
def _stackable(*layers) -> bool:
    """Fused elastic layers of one shape, bits and MoS mode: their weights stack into one matmul."""
    a = layers[0]
    return isinstance(a, ElasticLinear) and a.fused and a.bucket is None and all(
        isinstance(b, ElasticLinear) and b.fused and b.mos == a.mos and b.experts == a.experts
        and (b.in_features, b.out_features, b.weight_bits) == (a.in_features, a.out_features, a.weight_bits)
        and (b.bias is None) == (a.bias is None) for b in layers[1:])


def _stacked_projection(layers: tuple, x: torch.Tensor) -> list:
    """Outputs of several stackable layers on the same (already quantized) input, one matmul
    over their full-height weights (rows past ``out_features`` are computed and dropped:
    shapes stay static, so the fused weight kernels compile once per layer shape)."""
    a = layers[0]
    n, o, i = len(layers), a.out_features, a.in_features
    w = fused_path.elastic_weights(list(layers))  # (n, out_max, in_max)
    bias = None if a.bias is None else torch.cat([l.bias for l in layers])
    y = F.linear(x, w.view(n * a.out_max, a.in_max)[:, :i], bias)
    y = y.view(*y.shape[:-1], n, a.out_max)
    return [y[..., j, :o] for j in range(n)]


class Attention(nn.Module):
    def __init__(self, q: nn.Module, k: nn.Module, v: nn.Module, out: nn.Module, heads: int, head_dim: int):
        super().__init__()
        self.q, self.k, self.v, self.out = q, k, v, out
        self.heads, self.head_dim = heads, head_dim

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        B, T, _ = t.shape
        return t.view(B, T, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, memory=None, key_mask=None, causal=False, cache=None):
        """Self-attention (memory None) or cross-attention over ``memory``. ``cache`` (a
        dict) holds keys/values for incremental decoding. ``key_mask`` (bool, True = attend)
        broadcasts to (B, heads, T, keys); a causal self-attention given one uses it instead
        of SDPA's own causal mask (it must then be causal itself: ``padded_causal_mask``)."""
        B, T, _ = x.shape
        # q, k and v read the same input at the same bits: quantize it once
        xq = self.q.quantize_input(x)
        if memory is None and cache is None and _stackable(self.q, self.k, self.v):
            q, k, v = map(self._split, _stacked_projection((self.q, self.k, self.v), xq))
        elif memory is None:
            q = self._split(self.q(xq, True))
            k, v = self._split(self.k(xq, True)), self._split(self.v(xq, True))
            if cache is not None:
                if "k" in cache:
                    k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
                cache["k"], cache["v"] = k, v
        elif cache is not None and "k" in cache:
            q = self._split(self.q(xq, True))
            k, v = cache["k"], cache["v"]
        else:
            q = self._split(self.q(xq, True))
            mq = self.k.quantize_input(memory)
            if _stackable(self.k, self.v):
                k, v = map(self._split, _stacked_projection((self.k, self.v), mq))
            else:
                k, v = self._split(self.k(mq, True)), self._split(self.v(mq, True))
            if cache is not None:
                cache["k"], cache["v"] = k, v
        # a branch, not `causal and T > 1`: under torch.compile with dynamic shapes that is a
        # symbolic bool, which SDPA refuses (a graph break); a branch becomes a guard
        is_causal = True if causal and T > 1 and key_mask is None else False
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, is_causal=is_causal)
        return self.out(o.transpose(1, 2).reshape(B, T, self.heads * self.head_dim))


class FeedForward(nn.Module):
    def __init__(self, fc1: nn.Module, fc2: nn.Module):
        super().__init__()
        self.fc1, self.fc2 = fc1, fc2
        self.dropout = 0.0

    def forward(self, x):
        h = F.relu(self.fc1(x))
        return self.fc2(_dropout(h, self.dropout, self.training))


class EncoderLayer(nn.Module):
    def __init__(self, ln1, attn, ln2, ffn):
        super().__init__()
        self.ln1, self.attn, self.ln2, self.ffn = ln1, attn, ln2, ffn
        self.dropout = 0.0

    def forward(self, x, key_mask):
        p, tr = self.dropout, self.training
        x = x + _dropout(self.attn(self.ln1(x), key_mask=key_mask), p, tr)
        return x + _dropout(self.ffn(self.ln2(x)), p, tr)


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer; ``cross_layers`` says how many of the last encoder layers
    its cross-attention reads (their outputs concatenated along time, as HAT does)."""

    def __init__(self, ln1, self_attn, ln2, ffn, ln_cross=None, cross_attn=None, cross_layers: int = 0):
        super().__init__()
        self.ln1, self.self_attn, self.ln2, self.ffn = ln1, self_attn, ln2, ffn
        self.ln_cross, self.cross_attn = ln_cross, cross_attn
        self.cross_layers = cross_layers
        self.dropout = 0.0

    def forward(self, x, memory=None, cache=None, self_mask=None):
        """memory: ``EncoderOut`` or None (decoder-only); self_mask: None (plain causal) or
        the (B, 1, T, keys) bool mask of ``padded_causal_mask``."""
        p, tr = self.dropout, self.training
        c_self = cache.setdefault("self", {}) if cache is not None else None
        x = x + _dropout(self.self_attn(self.ln1(x), key_mask=self_mask, causal=True, cache=c_self), p, tr)
        if self.cross_attn is not None:
            mem, mask = memory.last(self.cross_layers)
            c_cross = cache.setdefault("cross", {}) if cache is not None else None
            x = x + _dropout(self.cross_attn(self.ln_cross(x), memory=mem, key_mask=mask, cache=c_cross), p, tr)
        return x + _dropout(self.ffn(self.ln2(x)), p, tr)


@dataclass
class EncoderOut:
    """Normalised outputs of the last encoder layers (oldest first) and the source mask."""

    states: list
    key_mask: torch.Tensor  # (B, 1, 1, S) bool, True = attend
    #: ``last(k)`` without gradients, by k: decoder layers (and decoding steps) reading the
    #: same k share one concatenation (with gradients each builds its own, as always)
    _last: dict = field(default_factory=dict, repr=False, compare=False)

    def last(self, k: int):
        if k > 1 and not torch.is_grad_enabled() and k in self._last:
            return self._last[k]
        mem = torch.cat(self.states[-k:], dim=1) if k > 1 else self.states[-1]
        mask = self.key_mask.repeat(1, 1, 1, k) if k > 1 else self.key_mask
        if k > 1 and not torch.is_grad_enabled():
            self._last[k] = mem, mask
        return mem, mask

    def index_select(self, idx: torch.Tensor) -> "EncoderOut":
        return EncoderOut([s.index_select(0, idx) for s in self.states], self.key_mask.index_select(0, idx))


# --------------------------------------------------------------------------- padding
def padded_causal_mask(attention_mask: torch.Tensor, length: int) -> torch.Tensor:
    """(B, 1, T, S) bool self-attention mask, True = attend, for the last ``length`` = T of
    S positions whose keys ``attention_mask`` (B, S) marks (1 = token, 0 = padding): a query
    sees the non-padding keys up to its own position. Every query also sees itself, so a
    padding query's row is never empty (SDPA gives NaN for an empty row); no token's query
    ever reads a padding key, so padding changes no token's output."""
    keys = attention_mask.to(torch.bool)
    total = keys.shape[1]
    q = torch.arange(total - length, total, device=keys.device)[:, None]
    k = torch.arange(total, device=keys.device)[None, :]
    return (((k <= q) & keys[:, None, :]) | (k == q))[:, None]


def positions_from_mask(attention_mask: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T) position of each of the last ``length`` positions: the number of tokens
    before it (padding does not count), so a left-padded prompt starts at position 0."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos[:, -length:].clamp_min(0)


# --------------------------------------------------------------------------- the model
class Transformer(nn.Module):
    """Encoder-decoder or decoder-only transformer, pre-norm, sinusoidal positions, output
    projection tied to the token table. Active sizes live in plain attributes so the
    supernet can change them between steps."""

    def __init__(self, family: str, embed: nn.Module, encoder_layers: list, decoder_layers: list,
                 encoder_norm: nn.Module | None, decoder_norm: nn.Module, *, pad_id: int = 0,
                 encoder_dim: int = 0, decoder_dim: int = 0, dropout: float = 0.0,
                 max_positions: int | None = None):
        super().__init__()
        self.family, self.pad_id = family, pad_id
        #: the trained range of positions (None: not known, as in the supernet)
        self.max_positions = max_positions
        #: refuse inputs past max_positions with a one-line UserError: set on deployed models
        #: (``open_exported``); evaluation keeps scoring over-long test sentences as before
        self.check_positions = False
        self.embed = embed
        self.encoder_layers = nn.ModuleList(encoder_layers)
        self.decoder_layers = nn.ModuleList(decoder_layers)
        self.encoder_norm, self.decoder_norm = encoder_norm, decoder_norm
        self.encoder_dim, self.decoder_dim = encoder_dim, decoder_dim
        self.n_encoder, self.n_decoder = len(encoder_layers), len(decoder_layers)
        self.dropout = dropout
        #: how many last encoder outputs any decoder layer reads
        self.max_cross = max([getattr(l, "cross_layers", 0) for l in decoder_layers] or [0])

    # ---- embeddings
    def _check_positions(self, end: int) -> None:
        if self.check_positions and self.max_positions is not None and end > self.max_positions:
            from ..errors import UserError
            raise UserError(f"the input reaches position {end} but this model was trained for at most "
                            f"max_positions {self.max_positions}; shorten the input (or the generation)")

    def _embed(self, table, tokens, dim, offset=0, position_ids=None):
        x = F.embedding(tokens, table[:, :dim]) * math.sqrt(dim)
        end = offset + tokens.shape[1]
        if position_ids is None:
            self._check_positions(end)
            # one table per width (rows do not depend on its length): decoding steps hit the cache
            pos = sinusoid(max(end, self.max_positions or 0), dim, x.device, x.dtype)[offset:end]
        else:
            if self.check_positions and not self.training:  # one host sync: fine when decoding
                self._check_positions(int(position_ids.max()) + 1)
            # rows of the table the unpadded path slices, so padding changes no bit
            pos = F.embedding(position_ids, sinusoid(max(end, self.max_positions or 0), dim, x.device, x.dtype))
        return _dropout(x + pos, self.dropout, self.training)

    # ---- encoder
    def encode(self, src: torch.Tensor, table: torch.Tensor | None = None) -> EncoderOut:
        table = self.embed.table() if table is None else table
        key_mask = (src != self.pad_id)[:, None, None, :]
        x = self._embed(table, src, self.encoder_dim)
        states, keep_from = [], self.n_encoder - max(self.max_cross, 1)
        for i in range(self.n_encoder):
            x = self.encoder_layers[i](x, key_mask)
            if i >= keep_from:
                states.append(x)
        return EncoderOut([self.encoder_norm(s) for s in states], key_mask)

    # ---- decoder
    def _decode(self, table, tokens, memory, cache=None, offset=0, attention_mask=None, position_ids=None):
        self_mask = None
        if attention_mask is not None:  # padding: an explicit mask (no mask: SDPA's fast causal path)
            self_mask = padded_causal_mask(attention_mask, tokens.shape[1])
            if position_ids is None:
                position_ids = positions_from_mask(attention_mask, tokens.shape[1])
        x = self._embed(table, tokens, self.decoder_dim, offset, position_ids)
        for i in range(self.n_decoder):
            layer_cache = cache.setdefault(i, {}) if cache is not None else None
            x = self.decoder_layers[i](x, memory, layer_cache, self_mask)
        x = self.decoder_norm(x)
        return F.linear(x, table[:, : self.decoder_dim])

    def forward(self, *inputs: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """encoder_decoder: ``forward(src, tgt_in)`` (padding in ``src`` is masked, targets
        are right-padded); decoder_only: ``forward(tokens[, attention_mask[, position_ids]])``
        with ``attention_mask`` (B, T) 1 = token, 0 = padding (left or right) and
        ``position_ids`` (B, T) (default: tokens before, padding not counted). Returns
        logits (B, T, vocab); padding positions' logits are meaningless."""
        table = self.embed.table()
        if self.family == "decoder_only":
            tokens, *rest = inputs  # the mask may come positionally, so training batches pass it through
            if rest:
                attention_mask, *rest = rest
            if rest:
                (position_ids,) = rest
            return self._decode(table, tokens, None, attention_mask=attention_mask, position_ids=position_ids)
        src, tgt_in = inputs
        return self._decode(table, tgt_in, self.encode(src, table))

    def decode_step(self, tokens: torch.Tensor, memory: EncoderOut | None, cache: dict, step: int,
                    attention_mask: torch.Tensor | None = None,
                    position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Incremental decoding with a KV cache: ``tokens`` (B, T) after ``step`` cached
        positions; returns logits (B, vocab) of the last one. ``cache`` starts as {} and is
        updated in place. Decoder-only, batches of unequal lengths: ``attention_mask``
        (B, step + T) covers the cached and the new positions (0 = padding) and
        ``position_ids`` (B, T) gives each new token's position (default: from the mask)."""
        return self._decode(self.embed.table(), tokens, memory, cache, offset=step,
                            attention_mask=attention_mask, position_ids=position_ids)[:, -1]

    @staticmethod
    def reorder_cache(cache: dict, idx: torch.Tensor) -> dict:
        """Select beams: every cached key/value tensor indexed along the batch."""
        def sel(d):
            return {k: (sel(v) if isinstance(v, dict) else v.index_select(0, idx)) for k, v in d.items()}
        return sel(cache)
