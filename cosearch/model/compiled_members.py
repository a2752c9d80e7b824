"""Whole-graph ``torch.compile`` of the sandwich members that recur every step.

An eager sandwich step on a GPU is bound by kernel launches and Python dispatch, not by
the GPU (an H100 at 32k tokens: ~3,800 launches for the plain largest model, 11% MFU).
Compiling the whole supernet forward turns each member into a few hundred fused kernels,
but Dynamo specialises a graph on the module settings that ``Supernet.set_arch`` writes
(widths, heads, depths, bit-widths): a random sub-network would compile a new graph at
every step. The largest and the smallest members do not change from step to step (the
smallest only when a bit-width stage starts), so they go through one compiled model (a
graph each, at most four in a run; batch shapes are dynamic, lengths padded to a multiple
of 8) and the random members stay eager. The whole supernet forward traces as one graph
with no breaks, on both weight paths. ``fused.compile_counts()["fixed_members"]`` counts
the graphs.

Opt-in: ``$COSEARCH_COMPILE_MEMBERS=fixed`` (off by default until a GPU run has measured
it over a whole training run; on an H100 a graph took about 1.5 minutes to compile, as
estimated from a run's log). ``$COSEARCH_COMPILE_MEMBERS=all`` compiles every member
instead, block by block at width buckets (``cosearch.model.bucketed_members``).
"""
from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from ..errors import UserError
from .fused import counting_backend

#: ``fixed``: compile the largest and smallest members; ``all``: every member, block by block
#: at width buckets; unset or empty: all eager
COMPILE_ENV = "COSEARCH_COMPILE_MEMBERS"
COMPILE_CHOICES = ("", "fixed", "all")
#: the sandwich roles whose sub-network is the same at every step of a bit-width stage
FIXED_ROLES = frozenset({"largest", "smallest"})
#: compiled inputs are padded to a length that is a multiple of this: inductor guards on a
#: length's alignment to 8 (an H100 run compiled a graph per alignment and hit Dynamo's limit
#: of 8 graphs, after which a member ran eagerly)
LENGTH_MULTIPLE = 8


def compile_choice() -> str:
    """``$COSEARCH_COMPILE_MEMBERS``: '' (eager), 'fixed' or 'all' (``UserError`` otherwise)."""
    choice = os.environ.get(COMPILE_ENV, "")
    if choice not in COMPILE_CHOICES:
        raise UserError(f"{COMPILE_ENV}={choice!r} is invalid; use 'fixed' or 'all' (or unset it)")
    return choice


class MemberForward:
    """Runs one sandwich member's forward: a fixed member (largest, smallest) through
    ``torch.compile(net.model)``, every other one eagerly through ``model`` (``net``; under
    DDP too: the gradients are all-reduced once after all members, ``training.grad_sync``).
    ``backend`` is ``torch.compile``'s (tests use ``aot_eager``: no compiler needed).
    """

    def __init__(self, net: nn.Module, backend: str = "inductor", roles=FIXED_ROLES):
        self.net, self.roles = net, frozenset(roles)
        self.compiled = padded_compiled(net.model, net.pad_id, backend=backend, count_as="fixed_members")

    def __call__(self, model: nn.Module, member, inputs: tuple) -> Tensor:
        if member.role in self.roles:
            self.net.set_arch(member.arch)
            # an empty arch-code cache, as at the trace: set_arch keeps a filled one when the
            # arch is unchanged (the same arch twice in a row), and Dynamo guards on its
            # contents, so a filled cache would compile a second graph of the same arch
            self.net.arch_code.set(self.net.arch_code.code)
            return self.compiled(*inputs)
        return model(*inputs, arch=member.arch)


def padded_compiled(model: nn.Module, pad_id: int, backend="inductor", mode: str | None = None,
                    count_as: str = "model"):
    """``torch.compile(model)`` called on token inputs padded to a multiple of
    ``LENGTH_MULTIPLE`` (with ``pad_id``), batch and length marked dynamic: one graph for
    every batch shape; returns the logits of the real positions. Its graphs count in
    ``fused.compile_counts()[count_as]``, except with a ``mode`` (inductor's: a counting
    backend cannot take one)."""
    compiled = (torch.compile(model, mode=mode) if mode is not None
                else torch.compile(model, backend=counting_backend(count_as, backend)))

    def run(*inputs: Tensor) -> Tensor:
        # contiguous: a sliced input (tgt[:, :-1]) has other strides, hence another graph
        padded = [pad_length(x, pad_id).contiguous() for x in inputs]
        for x in padded:  # dynamic from the first call (else a static graph first, then another)
            torch._dynamo.maybe_mark_dynamic(x, 0)
            torch._dynamo.maybe_mark_dynamic(x, 1)
        return compiled(*padded)[:, : inputs[-1].shape[1]]
    return run


def pad_length(tokens: Tensor, pad_id: int, multiple: int = LENGTH_MULTIPLE) -> Tensor:
    """``tokens`` (B, T) with pad tokens appended up to a length that is a multiple of
    ``multiple``. The logits of the first T positions do not change: padded source tokens
    are masked out of attention, and padded target positions come after every real one
    (causal attention), so the caller slices their logits away."""
    extra = -tokens.shape[1] % multiple
    return tokens if extra == 0 else torch.nn.functional.pad(tokens, (0, extra), value=pad_id)


def eager_forward(model: nn.Module, member, inputs: tuple) -> Tensor:
    """The member's forward with no compilation (the default)."""
    return model(*inputs, arch=member.arch)


def member_forward(net: nn.Module, compile_fixed: bool | None = None):
    """``MemberForward(net)`` when compiling the fixed members, ``BucketedForward(net)`` when
    compiling all (default: the environment's choice, on CUDA only: inductor on the CPU
    compiles C++ for minutes to gain little), else :func:`eager_forward`."""
    choice, cuda = compile_choice(), next(net.parameters()).device.type == "cuda"
    if compile_fixed is None:
        compile_fixed = choice == "fixed" and cuda
    if compile_fixed:
        return MemberForward(net)
    if choice == "all" and cuda:
        from .bucketed_members import BucketedForward  # it imports this module
        return BucketedForward(net)
    return eager_forward
