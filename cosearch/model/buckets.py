"""Width buckets: a supernet layer run at one of a few fixed shapes, with the arch's exact
sizes and bit-widths as tensors, so that compiled code does not specialise on the arch.

``torch.compile`` specialises a graph on every Python number it reads: widths, head counts
and bit-widths of each layer. A random sub-network would compile a new graph at every
step. Here an active size is rounded up to a *bucket* (``BucketPlan``: by default the two
largest choices of each FFN width and head count); the layer runs at the bucket's shape
and masks the rest, and its bit-widths select their quantizer through tensors:

* an elastic linear layer computes its full bucket of output rows and multiplies the rows
  past the active ones by 0 (their gradients are then 0 too); input columns past the active
  ones are 0 already (they come from such rows, through ReLU or attention over zero
  values), and the per-row scale statistic and LSQ's gradient scales count only the
  active columns and rows, as the sliced layer does;
* the weight quantizer evaluates the regimes of the space's bit-widths (binary, ternary,
  2-bit, LSQ with its range as tensors, fp16) and selects the layer's with ``where``; the
  activation quantizer likewise (identity, 8-bit min-max, LSQ). The selected bit-width's
  learned scale is passed in; the others get no gradient, as in the sliced layer.

So a compiled attention or FFN block has one graph per (bucket shape, embedding width),
whatever the sizes inside the bucket and the bit-widths, and computes the same values and
gradients as the sliced layer (up to the rounding of a matmul over extra zero columns).
The price is the masked work: a 512-wide FFN layer in a 1024 bucket costs a 1024-wide one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fused import _straight_through
from .quant import TERNARY, _STAT_EPS, _clip_range, _codes_of, _levels_of, _lsq_range, _qp, bits_key
from ..space import SearchSpace, canonical_bits

#: buckets per elastic dimension that ``BucketPlan.from_space`` keeps by default
DEFAULT_BUCKETS = 2


# --------------------------------------------------------------------------- the plan
def keep_largest(choices, n: int) -> tuple:
    """The ``n`` largest of ``choices`` (sorted): every choice rounds up to one of them."""
    return tuple(sorted(set(choices))[-max(1, n):])


def round_up(value: int, buckets: tuple) -> int:
    """The smallest bucket that holds ``value``."""
    return min(b for b in buckets if b >= value)


@dataclass(frozen=True)
class BucketPlan:
    """Bucket sizes per side: FFN widths and head counts. Head counts are exact in spaces
    whose attention width is fixed (``qkv_dim``): there the head count changes how the
    width splits, which a mask cannot express."""

    ffn: dict
    heads: dict

    @classmethod
    def from_space(cls, space: SearchSpace, per_dim: int = DEFAULT_BUCKETS) -> "BucketPlan":
        ffn, heads = {}, {}
        for side in space.sides():
            sd = space.side(side)
            ffn[side] = keep_largest(sd.ffn_dim, per_dim)
            heads[side] = tuple(sorted(set(sd.heads))) if sd.qkv_dim is not None else keep_largest(sd.heads, per_dim)
        return cls(ffn, heads)

    def ffn_bucket(self, side: str, width: int) -> int:
        return round_up(width, self.ffn[side])

    def heads_bucket(self, side: str, heads: int) -> int:
        return round_up(heads, self.heads[side])


def block_shapes(space: SearchSpace, plan: BucketPlan) -> set:
    """Every block shape a bucketed run of ``space`` can compile a graph for (one graph each
    per training mode): FFN (width, bucket, dropout; encoder and decoder share equal ones),
    self-attention per side (width, bucket) and cross-attention (both widths, bucket)."""
    shapes = set()
    for side in space.sides():
        for e in space.side(side).embed_dim:
            dropout = space.spec.dropout * e / space.max_embed_dim(side)
            shapes |= {("ffn", e, f, dropout) for f in plan.ffn[side]}
            for h in plan.heads[side]:
                shapes.add(("self", side, e, space.attn_dim(side, h)))
                if side == "decoder" and space.is_encdec:
                    shapes |= {("cross", e, k, space.attn_dim(side, h)) for k in space.side("encoder").embed_dim}
    return shapes


# --------------------------------------------------------------------------- per-layer tensors
class Regime(NamedTuple):
    """A bit-width as 0-d tensors: which quantizer, its LSQ range, the statistic's divisor
    and the straight-through clipping range."""

    is16: Tensor
    is1: Tensor
    is_ternary: Tensor
    is2: Tensor
    qn: Tensor
    qp: Tensor
    stat_div: Tensor
    lo: Tensor
    hi: Tensor


class LinearBucket(NamedTuple):
    """What an ``ElasticLinear`` in a bucket reads instead of its Python sizes and bits."""

    out_mask: Tensor  # (bucket rows,) 1 for the active rows
    n_cols: Tensor  # active input columns (0-d, float32)
    weight: Regime
    weight_gs: Tensor  # LSQ gradient scale of the active weight, 1 / sqrt(o * i * Qp)
    log_factor: Tensor  # the weight bit-width's learned log-factors (a stand-in at 16 bits)
    act: Regime
    act_gs: Tensor  # 1 / sqrt(i * Qp) of the activation LSQ
    log_clip: Tensor  # the activation bit-width's learned log clip (a stand-in at 8 and 16)
    code: Tensor | None  # the arch code the router reads (None without MoS)


#: per-layer tensors are cached by value *and* by the slot (q, k, v, out, fc1, fc2) of their
#: layer in its block: Dynamo guards on which inputs of a graph are the same tensor, so two
#: slots must never share one (equal sizes would alias them in one call and not in the next)
_CACHE: dict = {}


def _cached(key, make):
    t = _CACHE.get(key)
    if t is None:
        t = _CACHE[key] = make()
    return t


def _scalar(field: str, value: float, slot: str, device) -> Tensor:
    return _cached((field, float(value), slot, device), lambda: torch.tensor(float(value), device=device))


def regime(bits: float, slot: str, device, act: bool = False) -> Regime:
    """The :class:`Regime` of weight (or activation) bit-width ``bits`` for layer slot ``slot``."""
    b = canonical_bits(bits)

    def make():
        lsq = b >= 3 and b != 16
        qn, qp = _lsq_range(int(b)) if lsq else (1, 1)
        lo, hi = _clip_range(b) if b != 16 else (-1.0, 1.0)
        flags = [b == 16, b == 1 and not act, b == TERNARY, b == 2]
        return Regime(*[torch.tensor(f, device=device) for f in flags],
                      *[torch.tensor(float(v), device=device) for v in (qn, qp, _qp(b) if b != 16 else 1, lo, hi)])
    return _cached(("regime", b, act, slot, device), make)


def row_mask(active: int, total: int, slot: str, device) -> Tensor:
    return _cached(("mask", active, total, slot, device),
                   lambda: (torch.arange(total, device=device) < active).to(torch.float32))


def stand_in(shape: tuple, slot: str, device) -> nn.Parameter:
    """A zero parameter outside every model, passed where a bit-width has no learned scale:
    compiled code then sees the same kind of input at every bit-width (a plain tensor
    instead would be another guard), and the selection gives it a zero gradient."""
    return _cached(("stand_in", tuple(shape), slot, device), lambda: nn.Parameter(torch.zeros(shape, device=device)))


def linear_bucket(lin: nn.Module, rows: int, cols: int, code: Tensor | None, slot: str) -> LinearBucket:
    """The tensors of ``lin`` (configured at its active sizes and bits) in a bucket of
    ``rows`` x ``cols``; ``slot`` names its place in its block (q, k, v, out, fc1, fc2)."""
    device = lin.weight.device
    o, i, wb, ab = lin.out_features, lin.in_features, canonical_bits(lin.weight_bits), int(lin.act_bits)
    lf = lin.wq.log_factor[bits_key(wb)] if wb != 16 else stand_in((lin.out_max, 1), slot, device)
    clip = lin.aq.log_clip[f"b{ab}"] if ab < 8 else stand_in((), slot, device)
    w_gs = 1.0 / math.sqrt(o * i * _qp(wb)) if wb != 16 else 1.0
    a_gs = 1.0 / math.sqrt(i * _lsq_range(ab)[1]) if ab < 8 else 1.0
    return LinearBucket(row_mask(o, rows, slot, device), _scalar("n_cols", i, slot, device),
                        regime(wb, slot, device), _scalar("w_gs", w_gs, slot, device), lf,
                        regime(ab, slot, device, act=True), _scalar("a_gs", a_gs, slot, device), clip,
                        code if lin.router is not None else None)


# --------------------------------------------------------------------------- expressions
def _levels(u: Tensor, r: Regime, choices: tuple) -> Tensor:
    """Grid levels of ``u`` (float32) for the regime ``r``, among the bit-widths ``choices``:
    the fixed grids through ``quant._codes_of`` / ``_levels_of``, LSQ with its range as tensors."""
    options = [(flag, _levels_of(_codes_of(u, b), b))
               for b, flag in ((1, r.is1), (TERNARY, r.is_ternary), (2, r.is2)) if b in choices]
    if any(b >= 3 for b in choices):
        level = torch.clamp(torch.round(u), -r.qn, r.qp) + 0.0
    else:
        level = options.pop()[1]
    for cond, value in options:
        level = torch.where(cond, value, level)
    return level


def _grid(x: Tensor, s: Tensor, r: Regime, gs: Tensor, choices: tuple) -> Tensor:
    """``fused.grid_fake_quant`` with the bit-width as tensors."""
    u = (x / s).detach()
    level = _levels(u, r, choices)
    inside = ((u >= r.lo) & (u <= r.hi)).to(x.dtype)
    surrogate = x * inside + (s * gs) * (level - u * inside)
    return _straight_through(level * s.detach(), surrogate)


def quantized_weight(w: Tensor, st: LinearBucket, choices: tuple, out_dtype) -> Tensor:
    """The fake-quantized bucket weight ``w`` (rows, cols): the reference's values and
    gradients on the active slice (``fused.quantized_weights`` with tensor bits)."""
    q16 = w if out_dtype is not None else _straight_through(w.half().to(w.dtype), w)
    low = tuple(b for b in choices if b != 16)
    if not low:
        return q16.to(out_dtype or w.dtype)
    r, wf = st.weight, w.float()
    cols = (torch.arange(w.shape[-1], device=w.device) < st.n_cols).to(torch.float32)
    a = wf.detach().abs() * cols
    stat = a.amax(dim=1, keepdim=True) / r.stat_div
    if 1 in low:
        stat = torch.where(r.is1, a.sum(dim=1, keepdim=True) / st.n_cols, stat)
    scale = st.log_factor[: w.shape[0]].exp() * stat.clamp_min(_STAT_EPS)
    q = _grid(wf, scale, r, st.weight_gs, low)
    return torch.where(r.is16, q16.float(), q).to(out_dtype or w.dtype)


def quantize_input(lin: nn.Module, x: Tensor) -> Tensor:
    """``ActQuantizer`` with the bit-width as tensors (per-token; 16 bits: identity)."""
    st, choices = lin.bucket, lin.aq.bit_choices
    if all(b == 16 for b in choices):
        return x
    r, xf = st.act, x.float()
    stat = xf.detach().abs().amax(dim=-1, keepdim=True).clamp_min(_STAT_EPS) / r.qp
    out = x
    if 8 in choices:
        q8 = torch.clamp(torch.round(xf / stat), -r.qn, r.qp) * stat
        out = torch.where(r.qp == 127, _straight_through(q8.to(x.dtype), x), out)
    low = tuple(b for b in choices if b < 8)
    if low:
        q = _grid(xf, st.log_clip.exp() * stat, r, st.act_gs, low).to(x.dtype)
        out = torch.where(r.qp < 127, q, out)
    return torch.where(r.is16, x, out)


def linear(lin: nn.Module, xq: Tensor) -> Tensor:
    """An ``ElasticLinear`` in its bucket on the (quantized) input ``xq``."""
    st = lin.bucket
    device = lin.weight.device
    out_dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    w = quantized_weight(lin.mixed_weight(st.code), st, lin.wq.bit_choices + (16,), out_dtype)
    y = F.linear(xq, w, lin.active_bias())
    return y * st.out_mask.to(y.dtype)
