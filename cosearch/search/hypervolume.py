"""Hypervolume of a front (minimisation), the single wrapper the search and benchmarks use.

Optuna's implementation is private (``optuna._hypervolume``); it is called only here.
Points that do not dominate the reference point add nothing and are dropped first.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from optuna._hypervolume import compute_hypervolume

from .front import pareto_mask


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
