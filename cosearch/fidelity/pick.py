"""Which archs a fidelity check trains: stratified over size (or latency) and bit mixes.

A size proxy ranks archs of very different sizes well by construction; what a co-search
needs is the ranking among archs of similar cost. So the archs come in *bins*: bin
centres spread evenly (in log scale) over the sizes random archs of the space take, and
in each bin ``per_bin`` archs within ``BIN_RATIO`` of its centre (so any two of a bin
are within +-15% of each other) that differ in shape and bits: half with per-layer mixed
bit-widths (as the search samples them), half with one bit-width for every layer, each
group spread over its parameter counts (at equal weight MB, fewer bits means more
parameters). Everything comes from ``seed``: the same call picks the same archs.
Torch-free.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..space import Arch, SearchSpace

AXES = ("size", "latency")
#: a bin holds archs within this factor of its centre (1.07^2 ~ 1.15 between any two)
BIN_RATIO = 1.07
#: random archs drawn per pick (each also at one uniform bit-width)
CANDIDATES = 3000
#: the bin centres span these percentiles of the candidates' axis values
SPAN = (1.0, 99.0)


@dataclass
class Picked:
    """The chosen archs and where they come from (all recorded in the plan)."""

    archs: list[Arch]
    labels: list[str]
    bins: list[int]
    kinds: list[str]  # "mixed" (per-layer bits) | "uniform" (one bit-width)
    axis: list[float]  # the stratified value (weight MB or latency ms)
    in_band: list[bool]  # False: its bin had too few archs near the centre (nearest taken)
    centres: list[float] = field(default_factory=list)


def uniform_bits(arch: Arch) -> bool:
    layers = arch.encoder + arch.decoder
    return len({la.weight_bits for la in layers}) == 1 and len({la.act_bits for la in layers}) == 1


def candidates(space: SearchSpace, rng: np.random.Generator, n: int = CANDIDATES) -> list[Arch]:
    """``n`` random archs (per-layer bits) and each at one random uniform bit-width, plus
    the largest and smallest, without repeats (first occurrence kept)."""
    q = space.spec.quantization
    out = {space.largest(): None, space.smallest(): None}
    for _ in range(n):
        a = space.sample(rng)
        out.setdefault(a, None)
        u = space.with_bits(a, q.weight_bits[rng.integers(len(q.weight_bits))],
                            q.act_bits[rng.integers(len(q.act_bits))])
        out.setdefault(u, None)
    return list(out)


def _spread(pool: list[int], key: Sequence[float], k: int) -> list[int]:
    """``k`` of ``pool`` spread evenly over ``key`` (quantile positions, ties by order)."""
    if k <= 0 or not pool:
        return []
    order = sorted(pool, key=lambda i: (key[i], i))
    if k >= len(order):
        return order
    return [order[int((j + 0.5) * len(order) / k)] for j in range(k)]


def pick_archs(space: SearchSpace, n: int, per_bin: int = 4, seed: int = 0,
               axis_of=None, n_candidates: int = CANDIDATES) -> Picked:
    """``n`` archs in ``ceil(n / per_bin)`` bins (see the module doc). ``axis_of(archs)``
    gives the stratified value per arch (default: weight MB)."""
    rng = np.random.default_rng(seed)
    pool = candidates(space, rng, n_candidates)
    axis = np.asarray(axis_of(pool) if axis_of is not None else [space.weight_size_bits(a) / 8e6 for a in pool],
                      dtype=float)
    log_axis = np.log(axis)
    params = [space.param_count(a) for a in pool]
    kinds = ["uniform" if uniform_bits(a) else "mixed" for a in pool]
    n_bins = math.ceil(n / per_bin)
    lo, hi = np.percentile(log_axis, SPAN)
    centres = np.linspace(lo, hi, n_bins) if n_bins > 1 else np.array([np.median(log_axis)])
    taken: set[int] = set()
    out = Picked([], [], [], [], [], [], [float(math.exp(c)) for c in centres])
    for b, c in enumerate(centres):
        want = min(per_bin, n - b * per_bin)
        near = [i for i in range(len(pool)) if i not in taken and abs(log_axis[i] - c) <= math.log(BIN_RATIO)]
        mixed = [i for i in near if kinds[i] == "mixed"]
        uniform = [i for i in near if kinds[i] == "uniform"]
        n_uni = min(want // 2, len(uniform))
        chosen = _spread(uniform, params, n_uni)
        chosen += _spread(mixed, params, min(want - len(chosen), len(mixed)))
        if len(chosen) < want:  # too few near the centre: the nearest others
            rest = sorted((i for i in range(len(pool)) if i not in taken and i not in chosen),
                          key=lambda i: (abs(log_axis[i] - c), i))
            chosen += rest[: want - len(chosen)]
        for j, i in enumerate(chosen):
            taken.add(i)
            out.archs.append(pool[i])
            out.labels.append(f"b{b:02d}-{j}")
            out.bins.append(b)
            out.kinds.append(kinds[i])
            out.axis.append(float(axis[i]))
            out.in_band.append(bool(abs(log_axis[i] - c) <= math.log(BIN_RATIO)))
    return out


def unpicked_choices(space: SearchSpace, archs: Sequence[Arch]) -> list[str]:
    """Each choice of the space that no arch of ``archs`` takes (``decoder.layers=1``,
    ``decoder.act_bits=4``: a per-layer choice counts when any layer takes it). Bins spread
    over sizes, and picks are drawn from distinct archs, so a choice that allows few
    distinct archs (a shallow depth) can be missed: the check then says nothing about it."""
    q = space.spec.quantization
    out = []
    for side in space.sides():
        spec = space.side(side)
        stacks = [a.encoder if side == "encoder" else a.decoder for a in archs]
        layers = [la for st in stacks for la in st]
        taken = {"embed_dim": {a.encoder_embed_dim if side == "encoder" else a.decoder_embed_dim for a in archs},
                 "layers": {len(st) for st in stacks}}
        choices = {"embed_dim": spec.embed_dim, "layers": spec.layers, "ffn_dim": spec.ffn_dim,
                   "heads": spec.heads, "weight_bits": q.weight_bits, "act_bits": q.act_bits}
        if side == "decoder" and space.is_encdec and spec.cross_layers:
            choices["cross_layers"] = spec.cross_layers
        for field_name, options in choices.items():
            used = taken[field_name] if field_name in taken else {getattr(la, field_name) for la in layers}
            out += [f"{side}.{field_name}={o:g}" for o in options if not any(abs(o - u) < 1e-6 for u in used)]
    return out


def subset(n: int, k: int) -> list[int]:
    """``k`` of ``range(n)`` spread evenly (the archs of the seed-noise or teacher runs;
    the picks are in bin order, so these span the sizes)."""
    k = max(0, min(k, n))
    if k == 0:
        return []
    if k == 1:
        return [n // 2]
    return sorted({round(j * (n - 1) / (k - 1)) for j in range(k)})
