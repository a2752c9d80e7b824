"""Where a supernet and its reference weigh the search space differently, axis by axis.

A low tau says *that* inherited quality ranks archs unlike training alone, not *why*. An
axis is one number per arch read off its dict: a stack's depth (``encoder.depth``), a
per-layer field's mean over a stack (``decoder.weight_bits``), or a top-level number
(``decoder_embed_dim``). For each axis, Kendall tau of the axis with the inherited loss and
with the standalone loss (> 0: bigger, worse), and their difference with a paired bootstrap
interval over archs. An axis whose difference's interval excludes 0 goes with the loss
unlike it does when training alone: e.g. a supernet indifferent to encoder depth against a
short reference where deep encoders do worse (Multi30k, 48 archs). Each tau is marginal:
the axes are correlated (archs are picked within size bins), so an axis apart is where to
look, not a cause.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .stats import N_BOOT, paired_tau_difference


def arch_axes(arch: dict) -> dict[str, float]:
    """The arch's numeric axes: ``STACK.depth`` for every list (a stack of layers), and
    ``STACK.FIELD``, the mean over the stack's layer dicts of each field that is a number
    in each layer that has it; every top-level number. Bools are no numbers here; an arch
    recorded as anything but a dict has no axes."""
    out: dict[str, float] = {}
    if not isinstance(arch, dict):
        return out
    for key, value in arch.items():
        if isinstance(value, list):
            out[f"{key}.depth"] = float(len(value))
            layers = [layer for layer in value if isinstance(layer, dict)]
            for f in sorted({f for layer in layers for f in layer}):
                vals = [layer[f] for layer in layers if f in layer]
                if all(_is_number(v) for v in vals):
                    out[f"{key}.{f}"] = float(np.mean(vals))
        elif _is_number(value):
            out[key] = float(value)
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def axis_columns(archs: Sequence[dict]) -> dict[str, list[float | None]]:
    """Each axis that varies over ``archs`` (named in any of them): its value per arch, None
    where an arch lacks it."""
    values = [arch_axes(a) for a in archs]
    out = {}
    for axis in dict.fromkeys(k for v in values for k in v):
        x = [v.get(axis) for v in values]
        if len({v for v in x if v is not None}) >= 2:  # a fixed axis ranks nothing
            out[axis] = x
    return out


def axis_disagreement(archs: Sequence[dict], inherited: Sequence[float | None], reference: Sequence[float | None],
                      seed: int = 0, n_boot: int = N_BOOT) -> list[dict]:
    """Per axis that varies over ``archs``: ``inherited`` and ``standalone`` (its Kendall tau
    with each loss) and ``difference`` (inherited - standalone) with its paired 95%
    interval; sorted by the size of the difference, largest first. Losses are "lower is
    better"; archs with a loss missing are left out."""
    out = []
    for axis, x in axis_columns(archs).items():
        d = paired_tau_difference([(x, inherited)], [(x, reference)], None, seed, n_boot)
        if d["kendall_diff"] is None:
            continue  # too few archs, or a constant loss
        out.append({"axis": axis, "n": d["n"], "inherited": d["kendall_a"][0], "standalone": d["kendall_b"][0],
                    "difference": d["kendall_diff"], "difference_ci": d["kendall_diff_ci"]})
    return sorted(out, key=lambda r: -abs(r["difference"]))


def clear_disagreements(rows: list[dict]) -> list[dict]:
    """The axes whose difference's 95% interval excludes 0, largest first. Each interval is
    for its own axis, not adjusted for how many were looked at: of 13 axes with no real
    difference, about 0.65 would show one by chance."""
    return [r for r in rows if None not in r["difference_ci"]
            and (r["difference_ci"][0] > 0 or r["difference_ci"][1] < 0)]
