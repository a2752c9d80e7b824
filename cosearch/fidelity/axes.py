"""Where a supernet and its reference weigh the search space differently, axis by axis.

A low tau says *that* inherited quality ranks archs unlike training alone, not *why*. An
axis is one number per arch read off its dict: a stack's depth (``encoder.depth``), a
per-layer field's mean over a stack (``decoder.weight_bits``), or a top-level number
(``decoder_embed_dim``). For each axis, Kendall tau of the axis with the inherited loss and
with the standalone loss (> 0: bigger, worse), and their difference with a paired bootstrap
interval over archs. An axis whose difference's interval excludes 0 is one the supernet
rewards or punishes unlike training alone: e.g. a supernet indifferent to encoder depth
against a short reference that punishes deep encoders (Multi30k, 48 archs).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .stats import N_BOOT, paired_tau_difference


def arch_axes(arch: dict) -> dict[str, float]:
    """The arch's numeric axes: ``STACK.depth`` and ``STACK.FIELD`` (the field's mean over the
    stack's layers) for every list of layer dicts, and every top-level number (not a bool);
    none for an arch recorded as anything but a dict."""
    out: dict[str, float] = {}
    if not isinstance(arch, dict):
        return out
    for key, value in arch.items():
        if isinstance(value, list):
            out[f"{key}.depth"] = float(len(value))
            fields = {f for layer in value if isinstance(layer, dict) for f, v in layer.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for f in sorted(fields):
                out[f"{key}.{f}"] = float(np.mean([layer[f] for layer in value
                                                   if isinstance(layer, dict) and f in layer]))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def axis_disagreement(archs: Sequence[dict], inherited: Sequence[float | None], reference: Sequence[float | None],
                      seed: int = 0, n_boot: int = N_BOOT) -> list[dict]:
    """Per axis that varies over ``archs``: ``inherited`` and ``standalone`` (its Kendall tau
    with each loss) and ``difference`` (inherited - standalone) with its paired 95%
    interval; sorted by the size of the difference, largest first. Losses are "lower is
    better"; archs with a loss missing are left out."""
    values = [arch_axes(a) for a in archs]
    names = list(dict.fromkeys(k for v in values for k in v))
    out = []
    for axis in names:
        x = [v.get(axis) for v in values]
        if len({v for v in x if v is not None}) < 2:
            continue  # a fixed axis ranks nothing
        d = paired_tau_difference([(x, inherited)], [(x, reference)], None, seed, n_boot)
        if d["kendall_diff"] is None:
            continue  # too few archs, or a constant loss
        out.append({"axis": axis, "n": d["n"], "inherited": d["kendall_a"][0], "standalone": d["kendall_b"][0],
                    "difference": d["kendall_diff"], "difference_ci": d["kendall_diff_ci"]})
    return sorted(out, key=lambda r: -abs(r["difference"]))


def clear_disagreements(rows: list[dict]) -> list[dict]:
    """The axes whose difference's interval excludes 0, largest first."""
    return [r for r in rows if None not in r["difference_ci"]
            and (r["difference_ci"][0] > 0 or r["difference_ci"][1] < 0)]
