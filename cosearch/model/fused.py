"""The fused weight and activation paths of the supernet's linear layers.

The reference path (``ElasticLinear.mixed_weight`` + ``WeightQuantizer``, ``ActQuantizer``)
runs a dozen small kernels per layer: router MLP, softmax, expert mixture, slice, per-row
statistic, scale, fake quantization and its hand-written backward. Here the same numbers
are written as plain tensor expressions (the straight-through gradients come from a
surrogate term that is zero in the forward pass, so the forward value is the reference's
``level * scale`` product exactly), and ``torch.compile`` turns each into a few fused
kernels, forward and backward.

Recompilation is bounded: there is one compiled function per (MoS mode, bit-width, output
dtype, number of stacked layers), each on its own code object, and the weight functions
work on the parameters' full (static) shapes, with the active columns masked in the per-row
statistic and LSQ's gradient scale passed as a tensor; the caller slices the active part.
So a function compiles once per layer shape (the multi30k sandwich: 31 graphs in all, none
after its second step), not once per active size; dynamic shapes recompiled on strides and
coincident sizes instead. Activation quantization is compiled with dynamic shapes (tokens
vary). ``compile_counts()`` says how many graphs each function compiled. Several layers
that read the same input at the same bits (q, k and v of an attention) are quantized in one
call and multiplied in one matmul.

Without ``torch.compile`` (``set_compile(False)``, or on the CPU by default) the same
expressions run eagerly; tests compare both with the reference path.
"""
from __future__ import annotations

import math
import os
import types
import warnings
from collections import Counter
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .quant import _STAT_EPS, _clip_range, _codes_of, _levels_of, _qp, bits_key, token_scale
from ..space import canonical_bits

_COMPILES: Counter = Counter()
_STATE = {"compile": None}  # None: compile on CUDA only


def set_compile(on: bool | None) -> None:
    """True: always ``torch.compile``; False: never (eager expressions); None: on CUDA only."""
    _STATE["compile"] = on


def compile_counts() -> dict[str, int]:
    """Graphs compiled so far, by compiled function (a recompile adds one)."""
    return dict(_COMPILES)


#: ``fused`` or ``reference``: the weight path training uses (default: reference; on an H200
#: the compiled fused path made the whole sandwich step 14% slower after too short a warm-up;
#: warmed up on an H100 it is 1.12x faster: benchmarks/results/archive/2026-12-04-journal.md)
PATH_ENV = "COSEARCH_WEIGHT_PATH"


def fused_by_default() -> bool:
    """Whether training uses the fused path: only with ``$COSEARCH_WEIGHT_PATH=fused`` (warmed
    up on an H100 it is 1.07-1.12x faster for the whole sandwich step, but the recorded recipe
    and fidelity results were trained on the reference path, and under bf16 its gradients
    differ from the reference's by rounding)."""
    choice = os.environ.get(PATH_ENV, "")
    if choice not in ("", "fused", "reference"):
        raise UserError(f"{PATH_ENV}={choice!r} is invalid; use 'fused' or 'reference' (or unset it)")
    return choice == "fused"


def use_fused(model: nn.Module, on: bool = True) -> nn.Module:
    """Switch every linear layer of ``model`` (supernet or extracted) to the fused path."""
    for m in model.modules():
        if hasattr(m, "fused"):
            m.fused = on
    return model


# --------------------------------------------------------------------------- expressions
def _straight_through(value: Tensor, surrogate: Tensor) -> Tensor:
    """``value`` in the forward pass, the gradient of ``surrogate`` in the backward pass."""
    return value.detach() + (surrogate - surrogate.detach())


def grid_fake_quant(w: Tensor, s: Tensor, bits: float, gs: float) -> Tensor:
    """``quant._GridFakeQuant`` as an expression: same forward (exactly), same gradients."""
    u = (w / s).detach()
    level = _levels_of(_codes_of(u, bits), bits)
    lo, hi = _clip_range(bits)
    inside = ((u >= lo) & (u <= hi)).to(w.dtype)
    # d/dw = inside; d/ds = gs * (level - u) inside the range and gs * level outside
    surrogate = w * inside + (s * gs) * (level - u * inside)
    return _straight_through(level * s.detach(), surrogate)


def _row_stat(w: Tensor, bits: float, cols: Tensor, n_cols: Tensor) -> Tensor:
    """``quant.weight_scale_stat`` over the active columns (``cols`` a 0/1 mask, ``n_cols`` their count)."""
    a = w.detach().abs() * cols
    stat = a.sum(dim=1, keepdim=True) / n_cols if bits == 1 else a.amax(dim=1, keepdim=True) / _qp(bits)
    return stat.clamp_min(_STAT_EPS)


def composed_weight(weight: Tensor, router: tuple | None, code: Tensor | None, mode: str) -> Tensor:
    """W(arch) of one layer at its full size: the router's mixture of the experts ``weight``
    (m, out_max, in_max); the caller slices the active rows and columns."""
    if mode == "none":
        return weight[0]
    w1, b1, w2, b2 = router
    logits = F.linear(F.relu(F.linear(code, w1, b1)), w2, b2)
    if mode == "layer":
        return (torch.softmax(logits, dim=-1).view(-1, 1, 1) * weight).sum(0)
    alpha = torch.softmax(logits.view(weight.shape[1], weight.shape[0]), dim=-1)
    return (alpha.t().unsqueeze(-1) * weight).sum(0)


def quantized_weights(weights: list, routers: list, code: Tensor | None, log_factors: list, n_cols: Tensor,
                      gs: Tensor | None, mode: str, bits: float, out_dtype: torch.dtype | None) -> Tensor:
    """The fake-quantized W(arch) of each layer at full size, stacked: (n, out_max, in_max).

    Shapes are the parameters' (static): the per-row statistic reads only the first
    ``n_cols`` columns (a 0-d tensor) and ``gs`` (0-d) is LSQ's gradient scale of the active
    (o, i) slice, so rows and columns outside the slice do not change the slice's values or
    gradients (the caller slices them away). ``out_dtype`` None: fp16 rounding at 16 bits
    (the reference's float weights) and the weight's dtype; a dtype (autocast's): no fp16
    pass at 16 bits, cast to it.
    """
    out = []
    cols = (torch.arange(weights[0].shape[-1], device=n_cols.device) < n_cols).to(torch.float32)
    for weight, router, log_factor in zip(weights, routers, log_factors):
        w = composed_weight(weight, router, code, mode)
        if bits == 16:
            q = w if out_dtype is not None else _straight_through(w.half().to(w.dtype), w)
        else:
            wf = w.float()
            scale = log_factor.exp() * _row_stat(wf, bits, cols, n_cols)
            q = grid_fake_quant(wf, scale, bits, gs)
        out.append(q.to(out_dtype or w.dtype))
    return torch.stack(out)


def act_fake_quant(x: Tensor, log_clip: Tensor | None, bits: int) -> Tensor:
    """``ActQuantizer.forward`` as an expression (per-token symmetric; 16 bits: identity)."""
    if bits == 16:
        return x
    xf = x.float()
    qn, qp, stat = token_scale(xf, bits)
    if bits == 8:
        q = torch.round(xf / stat).clamp(-qn, qp) * stat
        return _straight_through(q.to(x.dtype), x)
    gs = 1.0 / math.sqrt(x.shape[-1] * qp)
    return grid_fake_quant(xf, log_clip.exp() * stat, bits, gs).to(x.dtype)


# --------------------------------------------------------------------------- compiled versions
def counting_backend(name: str, inner="inductor"):
    """A ``torch.compile`` backend: ``inner`` (a backend name or function), counting each
    graph it compiles under ``name`` in :func:`compile_counts`."""
    def backend(gm, example_inputs):
        _COMPILES[name] += 1
        # the composable-backend pattern of the torch.compile custom-backend docs
        return torch._dynamo.lookup_backend(inner)(gm, example_inputs)
    return backend


def compile_own_code(fn, name: str, count_as: str | None = None, backend="inductor", dynamic: bool | None = None):
    """``torch.compile(fn)`` on a code object of its own: Dynamo keeps its graph cache (and
    its limit of 8 graphs) per code object, and the closures made here share one, so
    without this the 9th variant would silently run eagerly. Its graphs count in
    :func:`compile_counts` under ``count_as`` (default ``name``)."""
    ident = "fused_" + "".join(c if c.isalnum() else "_" for c in name)
    names = {"co_name": ident, **({"co_qualname": ident} if hasattr(fn.__code__, "co_qualname") else {})}
    own = types.FunctionType(fn.__code__.replace(**names), fn.__globals__, ident, fn.__defaults__, fn.__closure__)
    return torch.compile(own, dynamic=dynamic, backend=counting_backend(count_as or name, backend))


@lru_cache(maxsize=None)
def _compiled_weights(mode: str, bits: float, out_dtype, n: int):
    def fn(weights, routers, code, log_factors, n_cols, gs):
        return quantized_weights(weights, routers, code, log_factors, n_cols, gs, mode, bits, out_dtype)
    return compile_own_code(fn, f"weight[{mode},{bits},{out_dtype},x{n}]", dynamic=False)


@lru_cache(maxsize=None)
def _compiled_act(bits: int):
    def fn(x, log_clip):
        return act_fake_quant(x, log_clip, bits)
    return compile_own_code(fn, f"act[{bits}]", dynamic=True)


def _compiling(device: torch.device) -> bool:
    on = _STATE["compile"]
    return device.type == "cuda" if on is None else on


# --------------------------------------------------------------------------- layer entry points
def _autocast_dtype(device: torch.device):
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


def elastic_weights(layers: list) -> Tensor:
    """Fake-quantized W(arch) of one or more ``ElasticLinear`` layers of equal shapes, bits and
    MoS mode, at full size: (n, out_max, in_max); the active part is ``[:, :o, :i]``."""
    first = layers[0]
    bits = canonical_bits(first.weight_bits)
    device = first.weight.device
    out_dtype = _autocast_dtype(device)
    mode = first.mos
    o, i = first.out_features, first.in_features
    code = first.arch_code.tensor(device) if mode != "none" else None
    weights = [l.weight for l in layers]
    routers = [None if l.router is None else (l.router[0].weight, l.router[0].bias, l.router[2].weight,
                                              l.router[2].bias) for l in layers]
    log_factors = [None if bits == 16 else l.wq.log_factor[bits_key(bits)] for l in layers]
    gs = None if bits == 16 else _scalar(device, 1.0 / math.sqrt(o * i * _qp(bits)))
    args = (weights, routers, code, log_factors, _scalar(device, float(i)), gs)
    if _compiling(device):
        return _guarded(_compiled_weights(mode, bits, out_dtype, len(layers)), quantized_weights,
                        args, (mode, bits, out_dtype))
    return quantized_weights(*args, mode, bits, out_dtype)


_SCALARS: dict = {}


def _scalar(device: torch.device, value: float) -> Tensor:
    """A cached 0-d float32 tensor on ``device`` (no host-to-device copy per call)."""
    key = (device, value)
    t = _SCALARS.get(key)
    if t is None:
        t = _SCALARS[key] = torch.tensor(value, dtype=torch.float32, device=device)
    return t


def quantize_activation(aq: nn.Module, x: Tensor, bits: int) -> Tensor:
    """``aq(x, bits)`` through the fused expression (``aq`` an ``ActQuantizer``)."""
    bits = int(bits)
    log_clip = aq.clip(bits)
    if bits == 16:
        return x
    if _compiling(x.device):
        return _guarded(_compiled_act(bits), act_fake_quant, (x, log_clip), (bits,))
    return act_fake_quant(x, log_clip, bits)


def _guarded(compiled, eager, args: tuple, constants: tuple):
    """The compiled function; if compiling fails (no compiler, a backend bug), warn once and
    run the same expression eagerly from then on."""
    try:
        return compiled(*args)
    except torch.OutOfMemoryError:
        raise  # not a compiler failure, and the eager path needs more memory still
    except Exception as e:  # noqa: BLE001 - any compiler failure falls back to the eager path
        warnings.warn(f"torch.compile of the fused path failed ({type(e).__name__}: {e}); running it eagerly")
        set_compile(False)
        return eager(*args, *constants)

