"""One gradient all-reduce per training step, through DDP, with no ``find_unused_parameters``.

A sandwich step runs several sub-networks, each using a different part of the supernet.
Every member's forward and backward runs on the bare module, so the gradients accumulate
locally, as under DDP's ``no_sync`` (DDP's hooks stay idle outside a DDP forward). Then
:func:`all_reduce_gradients` runs one forward and backward through the DDP wrapper of a
zero-valued function of *every* parameter: each parameter's gradient hook fires exactly
once, so DDP's reducer all-reduces (and averages) the summed gradients in its buckets,
and it never needs ``find_unused_parameters`` (whose graph walk and used-parameter
all-reduce stalled every step) or a static graph.

The zero gradients it adds leave the sums unchanged. A parameter that no member used has
no gradient before the sync (on every rank: all ranks train the same sub-networks) and
gets ``None`` back after it, so AdamW skips it exactly as in a single-process step (a
zero gradient would still move it by its momentum).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

_ZEROS: dict = {}


def _zero(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A cached 0-d zero: expanded to each parameter's shape, it costs no kernel."""
    key = (dtype, device)
    if key not in _ZEROS:
        _ZEROS[key] = torch.zeros((), dtype=dtype, device=device)
    return _ZEROS[key]


class _ZeroOfAll(torch.autograd.Function):
    """0 in the forward pass; a zero gradient for every input in the backward pass."""

    @staticmethod
    def forward(ctx, *params: torch.Tensor) -> torch.Tensor:
        ctx.like = [(p.shape, p.dtype, p.device) for p in params]
        return params[0].new_zeros(())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return tuple(_zero(dtype, device).expand(shape) for shape, dtype, device in ctx.like)


class _SyncPass(nn.Module):
    """What DDP wraps: the supernet's parameters, and a forward that touches all of them."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self) -> torch.Tensor:
        return _ZeroOfAll.apply(*[p for p in self.net.parameters() if p.requires_grad])


def data_parallel(net: nn.Module, device: torch.device) -> DistributedDataParallel:
    """The DDP wrapper that :func:`all_reduce_gradients` syncs ``net``'s gradients through
    (the process group must exist; it broadcasts rank 0's weights once, here)."""
    return DistributedDataParallel(_SyncPass(net), device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_gradients(ddp: DistributedDataParallel) -> None:
    """Average the locally accumulated gradients of ``ddp``'s module over all ranks."""
    params = [p for p in ddp.module.net.parameters() if p.requires_grad]
    unused = [p for p in params if p.grad is None]
    ddp().backward()
    for p in unused:
        p.grad = None
