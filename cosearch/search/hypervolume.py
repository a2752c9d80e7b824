"""Hypervolume of a front (minimisation), the single wrapper the search and benchmarks use.

Optuna's implementation is private (``optuna._hypervolume``); it is called only here.
Points that do not dominate the reference point add nothing and are dropped first.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from optuna._hypervolume import compute_hypervolume

from .front import FRONT_SOURCES, pareto_mask, to_minimize

if TYPE_CHECKING:
    import pandas as pd

    from .objectives import Objective


def hypervolume(loss: np.ndarray, reference: Sequence[float]) -> float:
    """Volume dominated by ``loss`` (rows = points, minimised) and bounded by ``reference``."""
    ref = np.asarray(reference, dtype=np.float64)
    pts = np.asarray(loss, dtype=np.float64).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[pareto_mask(pts)]
    return float(compute_hypervolume(np.unique(pts, axis=0), ref, assume_pareto=True))


def hypervolume_history(loss: np.ndarray, feasible: np.ndarray, reference: Sequence[float],
                        at: Sequence[int] | None = None) -> np.ndarray:
    """Hypervolume of the feasible points among the first n trials, for each n in ``at``
    (default: every n). Infeasible trials count as trials but add no volume."""
    loss = np.asarray(loss, dtype=np.float64)
    ok = np.asarray(feasible, dtype=bool)
    at = list(range(1, len(loss) + 1)) if at is None else list(at)
    out, front = [], np.zeros((0, loss.shape[1] if loss.ndim == 2 else len(reference)))
    done = 0
    for n in at:
        new = loss[done:n][ok[done:n]]
        done = max(done, n)
        if len(new):
            front = np.vstack([front, new])
            front = front[pareto_mask(front)]
        out.append(hypervolume(front, reference))
    return np.asarray(out)


def reference_point(loss: np.ndarray) -> np.ndarray:
    """Nadir of the points plus 10% of each range (1 where a range is 0): for plots only;
    a search's summary uses its fixed reference (``study.fixed_reference``)."""
    hi, lo = loss.max(0), loss.min(0)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
    return hi + 0.1 * span


def hv_curve(df: pd.DataFrame, objectives: Sequence[Objective], points: int = 200,
             reference: Sequence[float] | None = None) -> tuple:
    """(trial counts, hypervolume after each, reference) over measured feasible trials;
    ``reference`` (minimised) defaults to one taken from the points themselves."""
    use = df[df["source"].isin(FRONT_SOURCES)]
    dirs = [o.direction for o in objectives]
    loss = to_minimize(use[[o.name for o in objectives]].to_numpy(dtype=np.float64), dirs)
    feas = use["feasible"].to_numpy(dtype=bool)
    if not feas.any():
        return np.zeros(0), np.zeros(0), None
    ref = np.asarray(reference, dtype=np.float64) if reference is not None else reference_point(loss[feas])
    at = np.unique(np.linspace(1, len(loss), min(points, len(loss))).astype(int))
    return at, hypervolume_history(loss, feas, ref, at), ref


def front_hypervolume(rows: list[dict], objectives: Sequence[Objective], reference: Sequence[float]) -> float:
    """Hypervolume of the measured, feasible rows against a fixed reference (minimised)."""
    use = [r for r in rows if r["feasible"] and r["source"] in FRONT_SOURCES]
    if not use:
        return 0.0
    loss = to_minimize(np.array([[r[o.name] for o in objectives] for r in use]), [o.direction for o in objectives])
    return hypervolume(loss, reference)
