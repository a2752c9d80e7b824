"""Fake quantizers for the mixed-precision supernet, and integer codes for export.

Weights, per output channel (row) with scale ``s`` and ``u = w / s``:

* 1 bit (binary): ``s * sign(w)`` with sign(0) = +1, so a row always has two levels.
* 1.58 bits (ternary) and 2 bits: ParetoQ-style stretched elastic quantization (SEQ):
  ``[-s, s]`` is cut into k equal bins and every weight goes to its bin's centre, so
  ternary gives ``s * {0, +-2/3}`` and 2 bits ``s * {+-1/4, +-3/4}`` (no wasted level).
* 3, 4, 8 bits: LSQ, ``s * clamp(round(u), -2^(b-1), 2^(b-1)-1)``.
* 16 bits: the weight rounded to fp16 (that is how "float" weights are stored).

Every regime is ``q = s * level(code(u))`` where ``code`` is a small signed integer in the
two's-complement range of ``ceil(bits)`` bits (binary {-1, 0}, ternary {-1, 0, 1}, 2 bits
{-2..1}); ``quantize_codes``/``dequantize_codes`` use the very same ``level * s`` float32
product, so exported codes plus scales reproduce the fake-quantized weights bit-exactly.

Gradients (straight-through): ``dq/dw`` is 1 where ``u`` lies inside the clipping range
(``|u| <= 1`` for 1/1.58/2 bits, ``-Qn <= u <= Qp`` for LSQ) and 0 outside; ``dq/ds`` is
the LSQ one, ``level - u`` inside and ``level`` outside, times ``gs = 1/sqrt(numel(W)*Qp)``
(Qp = 1 for 1, 1.58 and 2 bits).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..space import canonical_bits

TERNARY = 1.58
#: Per-row statistic floor, so an all-zero row gets a tiny positive scale, not 0/0.
_STAT_EPS = 1e-12


def _lsq_range(bits: int) -> tuple[int, int]:
    """(Qn, Qp) of symmetric signed LSQ levels -Qn..Qp."""
    return 2 ** (bits - 1), 2 ** (bits - 1) - 1


def _qp(bits: float) -> int:
    """The Qp in LSQ's gradient scale: 1 for the sub-3-bit regimes."""
    return 1 if bits <= 2 else _lsq_range(int(bits))[1]


def _clip_range(bits: float) -> tuple[float, float]:
    """Range of ``u = w/s`` inside which the weight gradient passes."""
    if bits <= 2:
        return -1.0, 1.0
    qn, qp = _lsq_range(int(bits))
    return float(-qn), float(qp)


def _codes_of(u: Tensor, bits: float) -> Tensor:
    """Signed integer codes (as float32) of ``u = w/s``; never -0 (see _codes_of_raw)."""
    return _codes_of_raw(u, bits) + 0.0  # -0.0 + 0.0 = +0.0: zero weights export bit-exactly


def _codes_of_raw(u: Tensor, bits: float) -> Tensor:
    if bits == 1:
        return (u >= 0).float() - 1.0                      # {-1, 0}: sign with sign(0) = +1
    if bits == TERNARY:
        # bins [-1, -1/3), [-1/3, 1/3], (1/3, 1] -> -1, 0, 1; ties at 1/3 go to zero
        return torch.round(1.5 * u).clamp(-1.0, 1.0)
    if bits == 2:
        return torch.floor(2.0 * u).clamp(-2.0, 1.0)      # four bins of width 1/2
    qn, qp = _lsq_range(int(bits))
    return torch.round(u).clamp(-qn, qp)


def _levels_of(codes: Tensor, bits: float) -> Tensor:
    """Grid value (in units of the scale) of each code; exact float32 arithmetic."""
    if bits == 1:
        return 2.0 * codes + 1.0                            # {-1, +1}
    if bits == TERNARY:
        return codes * (2.0 / 3.0)                          # {-2/3, 0, 2/3}
    if bits == 2:
        return (codes + 0.5) * 0.5                          # {-3/4, -1/4, 1/4, 3/4}
    return codes


def _grid_quant(w: Tensor, s: Tensor, bits: float) -> tuple[Tensor, Tensor, Tensor]:
    """(q, level, u) in float32; q = level * s, the one product export also uses."""
    u = w / s
    level = _levels_of(_codes_of(u, bits), bits)
    return level * s, level, u


class _GridFakeQuant(torch.autograd.Function):
    """Grid quantization with the straight-through / LSQ gradients of the module doc."""

    @staticmethod
    def forward(ctx, w: Tensor, s: Tensor, bits: float, gs: float) -> Tensor:
        q, level, u = _grid_quant(w, s, bits)
        ctx.save_for_backward(u, level)
        ctx.bits, ctx.gs, ctx.s_shape, ctx.s_dtype = bits, gs, s.shape, s.dtype
        return q

    @staticmethod
    def backward(ctx, grad: Tensor):
        u, level = ctx.saved_tensors
        lo, hi = _clip_range(ctx.bits)
        inside = (u >= lo) & (u <= hi)
        grad_w = grad * inside if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            # Outside the range q = level * s exactly, so dq/ds = level. For clipped ternary
            # weights that is +-2/3, the value the forward really uses (the released ParetoQ
            # code uses +-1 there); we keep the gradient consistent with the forward.
            dq_ds = torch.where(inside, level - u, level)
            grad_s = (grad * dq_ds * ctx.gs).sum_to_size(ctx.s_shape).to(ctx.s_dtype)
        return grad_w, grad_s, None, None


class _StraightThrough(torch.autograd.Function):
    """Returns ``q`` exactly; the gradient goes to ``x`` unchanged, masked where given."""

    @staticmethod
    def forward(ctx, x: Tensor, q: Tensor, mask: Tensor | None) -> Tensor:
        ctx.save_for_backward(mask)
        return q

    @staticmethod
    def backward(ctx, grad: Tensor):
        (mask,) = ctx.saved_tensors
        return (grad if mask is None else grad * mask), None, None


def fp16_round(w: Tensor) -> Tensor:
    """``w`` rounded to fp16 (in ``w``'s dtype) with a straight-through gradient."""
    return _StraightThrough.apply(w, w.half().to(w.dtype), None)


def fake_quant_weight(w: Tensor, bits: float, scale: Tensor | None) -> Tensor:
    """Fake-quantize ``w`` (out, in) at ``bits`` with per-row ``scale`` (out, 1) > 0.

    Computed in float32 and returned in ``w``'s dtype; ``scale`` is ignored at 16 bits.
    """
    b = canonical_bits(bits)
    if b == 16:
        return fp16_round(w)
    if scale is None:
        raise ValueError(f"a scale is needed to quantize weights to {b} bits")
    gs = 1.0 / math.sqrt(w.numel() * _qp(b))
    q = _GridFakeQuant.apply(w.float(), scale.float(), b, gs)
    return q.to(w.dtype)


def quantize_codes(w_q: Tensor, bits: float, scale: Tensor | None) -> Tensor:
    """Integer codes of a (fake-quantized or float) weight: int8 below 16 bits.

    Codes are signed (binary {-1, 0}, ternary {-1, 0, 1}, b bits -2^(b-1)..2^(b-1)-1);
    at 16 bits they are the fp16 bit patterns as int16.
    """
    b = canonical_bits(bits)
    with torch.no_grad():
        if b == 16:
            return w_q.detach().half().view(torch.int16)
        return _codes_of(w_q.detach().float() / scale.detach().float(), b).to(torch.int8)


def dequantize_codes(codes: Tensor, bits: float, scale: Tensor | None) -> Tensor:
    """Float32 weights of ``codes``; inverse of ``quantize_codes`` on fake-quantized input."""
    b = canonical_bits(bits)
    if b == 16:
        return codes.view(torch.float16).float()
    return _levels_of(codes.float(), b) * scale.float()


def bits_key(bits: float) -> str:
    """A ParameterDict-safe name of a bit-width: 1.58 -> 'b1_58', 4 -> 'b4'."""
    return "b" + str(canonical_bits(bits)).replace(".", "_")


def weight_scale_stat(w: Tensor, bits: float) -> Tensor:
    """Per-row statistic (rows, 1) that learned scale factors multiply (detached).

    It is the recommended initial scale itself (ParetoQ): 1 bit mean|w|; ternary and
    2 bits max|w|; 3/4/8 bits max|w| / (2^(b-1)-1). So a factor of 1 is the standard
    init for any weight, and when the supernet's composed weight changes with the
    architecture (MoS mixing, input slicing) the scale follows it.
    """
    b = canonical_bits(bits)
    a = w.detach().float().abs()
    if b == 1:
        stat = a.mean(dim=1, keepdim=True)
    else:
        stat = a.amax(dim=1, keepdim=True) / _qp(b)
    return stat.clamp_min(_STAT_EPS)


class WeightQuantizer(nn.Module):
    """Per-bit-width learned scales for one (elastic) weight matrix.

    Bit-widths share the float weight but each keeps its own per-row log-factor
    (``ParameterDict`` keyed by ``bits_key``); ``scale = exp(param[:rows]) * stat(w)``
    with ``stat`` from ``weight_scale_stat``. exp keeps the scale positive and makes the
    learned part multiplicative; param 0 means the statistic-based init.
    """

    def __init__(self, max_out: int, bit_choices: Sequence[float]):
        super().__init__()
        self.max_out = int(max_out)
        self.bit_choices = tuple(canonical_bits(b) for b in bit_choices)
        self.log_factor = nn.ParameterDict({
            bits_key(b): nn.Parameter(torch.zeros(self.max_out, 1)) for b in self.bit_choices if b != 16})

    def reset(self, bits: float) -> None:
        """Back to the statistic-based init (use when a bit-width is enabled)."""
        with torch.no_grad():
            self.log_factor[bits_key(bits)].zero_()

    def scale(self, w: Tensor, bits: float) -> Tensor:
        """Scale (rows, 1) for ``w`` (rows <= max_out, in) at ``bits`` < 16."""
        key = bits_key(bits)
        if key not in self.log_factor:
            raise ValueError(f"bit-width {bits} has no scale here; this quantizer has {self.bit_choices}")
        rows = w.shape[0]
        if rows > self.max_out:
            raise ValueError(f"weight has {rows} rows but the quantizer was built for {self.max_out}")
        return self.log_factor[key][:rows].exp() * weight_scale_stat(w, bits)

    def forward(self, w: Tensor, bits: float) -> Tensor:
        """Fake-quantized ``w``; 16 bits is fp16 rounding with a straight-through gradient."""
        if canonical_bits(bits) == 16:
            return fp16_round(w)
        return fake_quant_weight(w, bits, self.scale(w, bits))

    @torch.no_grad()
    def frozen(self, w: Tensor, bits: float) -> tuple[Tensor, Tensor | None]:
        """(``forward(w, bits)``, its scale; None at 16 bits) as new float32 tensors, for a weight
        that no longer trains (extraction stores both): the forward's very numbers, with the
        scale computed once and no autograd bookkeeping."""
        b = canonical_bits(bits)
        if b == 16:
            return w.half().to(w.dtype).float(), None
        s = self.scale(w, b)
        return _grid_quant(w.float(), s.float(), b)[0].to(w.dtype).float(), s.float()


def token_scale(xf: Tensor, bits: int) -> tuple[int, int, Tensor]:
    """(Qn, Qp, per-token min-max scale max|x| / Qp) of float32 activations ``xf``; no gradient
    flows through the scale (the learned clipping factor carries it)."""
    qn, qp = _lsq_range(bits)
    return qn, qp, xf.detach().abs().amax(dim=-1, keepdim=True).clamp_min(_STAT_EPS) / qp


class ActQuantizer(nn.Module):
    """Per-token (last dim) symmetric activation fake quantization.

    16 bits: identity. 8 bits: dynamic min-max, scale max|x|/127 per token (LLM-QAT).
    3..7 bits: a learned clipping factor per bit-width (``exp(param)``, init 1 = min-max)
    times max|x|/Qp per token, with LSQ gradients to the factor, scaled by
    gs = 1/sqrt(features*Qp) (features = last dim; the loss already averages over tokens).
    Scales are float32; the output has the input's dtype.
    """

    def __init__(self, bit_choices: Sequence[int]):
        super().__init__()
        self.bit_choices = tuple(int(b) for b in bit_choices)
        bad = [b for b in self.bit_choices if not (3 <= b <= 8 or b == 16)]
        if bad:
            raise ValueError(f"activation bits {bad} not supported; use 3..8 or 16")
        self.log_clip = nn.ParameterDict({
            f"b{b}": nn.Parameter(torch.zeros(())) for b in self.bit_choices if b < 8})

    def clip(self, bits: int) -> Tensor | None:
        """The learned log clipping factor of ``bits`` (None at 8 and 16 bits: min-max or
        identity); ``ValueError`` for a bit-width this quantizer was not built for."""
        if bits not in self.bit_choices:
            raise ValueError(f"activation bit-width {bits} not in {self.bit_choices}")
        return self.log_clip[f"b{bits}"] if bits < 8 else None

    def forward(self, x: Tensor, bits: int) -> Tensor:
        """Fake-quantized ``x`` (same shape and dtype)."""
        bits = int(bits)
        log_clip = self.clip(bits)
        if bits == 16:
            return x
        if not torch.is_grad_enabled():
            return _frozen_act_quant(x, bits, log_clip)
        xf = x.float()
        qn, qp, stat = token_scale(xf, bits)
        if bits == 8:
            q = torch.round(xf / stat).clamp(-qn, qp) * stat  # min-max: nothing clips
            return _StraightThrough.apply(x, q.to(x.dtype), None)
        gs = 1.0 / math.sqrt(x.shape[-1] * qp)
        step = log_clip.exp() * stat
        return _GridFakeQuant.apply(xf, step, bits, gs).to(x.dtype)


def _frozen_act_quant(x: Tensor, bits: int, log_clip: Tensor | None) -> Tensor:
    """``ActQuantizer.forward`` without gradients (evaluation): the same float32 numbers
    (same ops in the same order, in place where the forward makes a new tensor anyway), so
    an evaluated loss is bit-identical, from about half the host ops."""
    qn, qp = _lsq_range(bits)
    xf = x if x.dtype == torch.float32 else x.float()
    step = xf.abs().amax(dim=-1, keepdim=True).clamp_min_(_STAT_EPS).div_(qp)  # token_scale's stat
    if bits == 8:
        q = (xf / step).round_().clamp_(-qn, qp).mul_(step)
    else:
        q = _grid_quant(xf, log_clip.exp() * step, bits)[0]
    return q if q.dtype == x.dtype else q.to(x.dtype)
