"""The sandwich rule with in-place distillation: which sub-networks train at a step, and
their losses.

Each step trains the largest sub-network at its highest precision (task loss with label
smoothing; its detached outputs are the teacher), the smallest at the lowest *enabled*
bit-widths, and ``n_random`` random sub-networks whose per-layer bit-widths are drawn
from the enabled ones. The non-largest members minimise
``(1 - distill) * task_loss + distill * KL(teacher || student)``: pure distillation
(BigNAS) lets weak early teachers hold the small networks back. The default is pure task
loss (``distill`` 0, as MoS and HAT train for translation): at the budgets measured, 0.5 slowed
the shared weights and never ranked sub-networks better (benchmarks/results/fidelity_notes.md).

Bit-widths are enabled in stages (quantization notes: float first, then 8/4/3, then
2/ternary/1): by default float only for the first 20% of the steps, then >= 3 bits,
from 50% everything. A bit-width's learned scales stay at their statistic-based init
until it is enabled, so enabling it initialises it from the current weights.

Everything is a pure function of ``(seed, step)``: all data-parallel workers and a
resumed run draw the same sub-networks.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..space import Arch, SearchSpace

#: Weight bit-widths allowed in the middle stage (ParetoQ: >= 3 bits stays close to float).
MID_STAGE_MIN_BITS = 3


@dataclass(frozen=True)
class Member:
    """One sub-network of a sandwich step."""

    role: str  # largest | smallest | random
    arch: Arch


def enabled_bits(space: SearchSpace, step: int, steps: int,
                 stages: tuple[float, float] | None) -> tuple[tuple, tuple]:
    """(weight bits, activation bits) that may be sampled at ``step`` (1-based) of ``steps``.

    ``stages`` = (f1, f2): before ``f1 * steps`` only the highest precision, before
    ``f2 * steps`` weights of at least 3 bits (and every activation width), then all.
    ``None`` enables everything from the start.
    """
    q = space.spec.quantization
    wbits, abits = tuple(q.weight_bits), tuple(q.act_bits)
    if stages is None:
        return wbits, abits
    frac = (step - 1) / max(steps, 1)
    if frac < stages[0]:
        return (max(wbits),), (max(abits),)
    if frac < stages[1]:
        mid = tuple(b for b in wbits if b >= MID_STAGE_MIN_BITS) or (max(wbits),)
        return mid, abits
    return wbits, abits


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The generator that draws step ``step``'s sub-networks (same on every worker)."""
    return np.random.default_rng([int(seed), int(step), 0x5A17])


def _with_random_bits(space: SearchSpace, arch: Arch, wbits: tuple, abits: tuple,
                      rng: np.random.Generator) -> Arch:
    def f(la):
        return replace(la, weight_bits=wbits[rng.integers(len(wbits))],
                       act_bits=abits[rng.integers(len(abits))])
    return replace(arch, encoder=tuple(map(f, arch.encoder)), decoder=tuple(map(f, arch.decoder)))


def sandwich(space: SearchSpace, seed: int, step: int, steps: int, n_random: int = 2,
             stages: tuple[float, float] | None = (0.2, 0.5), deep_random: int = 0,
             shallow_random: int = 0) -> list[Member]:
    """The members of step ``step``: largest first (the teacher), smallest, then randoms.

    ``deep_random``: the first that many random members are drawn at every stack's most
    layers (random widths and bits). Uniform members reach a stack's last layers only when
    they draw its full depth, and inherited losses rank deep archs worse than training them
    alone does (tau of depth with loss -0.31 against -0.40 on tinyshakespeare and linux-c,
    fidelity ``axes``); this trains those layers' narrow slices every step. A deep member
    draws bits for more layers, so the members after it change too; 0 leaves the step as it was.

    ``shallow_random``: the next that many random members are drawn at every stack's fewest
    layers, the mirror lever. On Multi30k inherited losses rank deep decoders *better* than
    training them alone for 2,600 steps does (tau of decoder depth with loss -0.48 against
    -0.23), and deep members made that worse; a shallow member trains the first layers as a
    stack's last ones, at random widths and bits, every step. It draws bits for fewer layers,
    so the members after it change too; 0 leaves the step as it was."""
    wbits, abits = enabled_bits(space, step, steps, stages)
    rng = step_rng(seed, step)
    members = [Member("largest", space.largest()),
               Member("smallest", space.with_bits(space.smallest(), min(wbits), min(abits)))]
    for k in range(n_random):
        arch = space.sample(rng, deepest=k < deep_random,
                            shallowest=deep_random <= k < deep_random + shallow_random)
        members.append(Member("random", _with_random_bits(space, arch, wbits, abits, rng)))
    return members


#: how far (as a ratio of weight size) a worst-of-pool candidate may be from the slot's first draw
POOL_SIZE_BAND = 1.15
#: draws per candidate before a slot settles for fewer candidates
POOL_TRIES = 50


def candidate_pools(space: SearchSpace, members: list[Member], seed: int, step: int, steps: int,
                    pool: int, stages: tuple[float, float] | None = (0.2, 0.5)) -> list[list[Arch]]:
    """For each random member of ``members``: itself and up to ``pool - 1`` other archs of
    about its weight size (within ``POOL_SIZE_BAND``), with bits from the enabled ones.

    AttentiveNAS's worst-up sampling compares candidates of one cost: comparing across
    sizes would always pick the smallest. Drawn from their own ``(seed, step)`` stream, so
    ``pool = 1`` leaves the sandwich exactly as :func:`sandwich` draws it.
    """
    wbits, abits = enabled_bits(space, step, steps, stages)
    rng = np.random.default_rng([int(seed), int(step), 0x9001])
    pools = []
    for m in members:
        if m.role != "random":
            continue
        size = space.weight_size_bits(m.arch)
        found = [m.arch]
        for _ in range(POOL_TRIES * (pool - 1)):
            if len(found) == pool:
                break
            a = _with_random_bits(space, space.sample(rng), wbits, abits, rng)
            other = space.weight_size_bits(a)
            if max(size, other) <= POOL_SIZE_BAND * min(size, other):
                found.append(a)
        pools.append(found)
    return pools


def worst_of_pools(members: list[Member], pools: list[list[Arch]], loss_of) -> list[Member]:
    """``members`` with each random member replaced by the candidate of its pool with the
    highest ``loss_of(arch)`` (ties: the first), the others unchanged."""
    out, slots = [], iter(pools)
    for m in members:
        if m.role == "random":
            pool = next(slots)
            # one host read per slot, not per candidate: the candidates' forwards queue on
            # the GPU without waiting for each other (argmax takes the first of ties)
            losses = torch.stack([torch.as_tensor(loss_of(a), dtype=torch.float32) for a in pool])
            m = Member("random", pool[int(losses.argmax())])
        out.append(m)
    return out


def staged_arch(arch: Arch, wbits: tuple, abits: tuple) -> Arch:
    """``arch`` with each layer's bit-widths raised to the lowest enabled ones at or above
    them (a bit-width not yet enabled trains at the next enabled one)."""
    def up(b, enabled):
        return b if b in enabled else min((x for x in enabled if x >= b), default=max(enabled))

    def f(la):
        return replace(la, weight_bits=up(la.weight_bits, wbits), act_bits=up(la.act_bits, abits))
    return replace(arch, encoder=tuple(map(f, arch.encoder)), decoder=tuple(map(f, arch.decoder)))


def standalone(space: SearchSpace, arch: Arch, step: int, steps: int,
               stages: tuple[float, float] | None = (0.2, 0.5)) -> list[Member]:
    """The one member of a standalone run's step: ``arch``, its bit-widths staged as the
    supernet's (float first, then >= 3 bits, then all), so both see the same recipe."""
    wbits, abits = enabled_bits(space, step, steps, stages)
    return [Member("standalone", staged_arch(arch, wbits, abits))]


def task_loss(logits: torch.Tensor, target: torch.Tensor, pad_id: int,
              label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean token cross-entropy (label-smoothed) over non-pad targets, in float32."""
    v = logits.shape[-1]
    return F.cross_entropy(logits.float().reshape(-1, v), target.reshape(-1), ignore_index=pad_id,
                           label_smoothing=label_smoothing)


def distill_loss(logits: torch.Tensor, teacher_logp: torch.Tensor, target: torch.Tensor,
                 pad_id: int) -> torch.Tensor:
    """Mean over non-pad tokens of KL(teacher || student); ``teacher_logp`` is detached
    log-probabilities."""
    logp = F.log_softmax(logits.float(), dim=-1)
    kl = F.kl_div(logp, teacher_logp, log_target=True, reduction="none").sum(-1)
    mask = target != pad_id
    return (kl * mask).sum() / mask.sum().clamp_min(1)


def member_loss(logits: torch.Tensor, target: torch.Tensor, pad_id: int, label_smoothing: float,
                teacher_logp: torch.Tensor | None, distill: float
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(loss to minimise, task loss, KL or None) of one sandwich member: the task loss
    alone for the teacher, else ``(1 - distill) * task + distill * KL``."""
    ce = task_loss(logits, target, pad_id, label_smoothing)
    if teacher_logp is None:
        return ce, ce, None
    kd = distill_loss(logits, teacher_logp, target, pad_id)
    return (1 - distill) * ce + distill * kd, ce, kd
