"""Pareto fronts of minimisation problems (directions already applied).

Optuna's own non-domination helpers are private, so they are wrapped here, in one place:
if a future Optuna moves them, only this file changes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from optuna.study import _multi_objective as _mo

#: ``source`` of a trial whose quality was computed for that very arch: on the supernet, or
#: by the synthetic stand-in (never a predictor's guess)
QUALITY_SOURCES = ("measured", "synthetic")
#: trials that may join the front: computed quality, or no quality objective at all
FRONT_SOURCES = (*QUALITY_SOURCES, "cost-only")


def to_minimize(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Flip the sign of maximised columns so that every column is minimised."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return v * sign


def pareto_mask(loss: np.ndarray) -> np.ndarray:
    """True for the rows no other row dominates (duplicates of a front point all kept)."""
    loss = np.asarray(loss, dtype=np.float64)
    if len(loss) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(_mo._is_pareto_front(loss, assume_unique_lexsorted=False), dtype=bool)


def nondomination_rank(loss: np.ndarray, n_below: int | None = None) -> np.ndarray:
    """0 for the Pareto front, 1 for the front once 0 is removed, and so on. With
    ``n_below``, ranks are exact only until that many rows are ranked (the rest share a
    larger rank): enough to pick the best ``n_below`` and much faster on big studies."""
    loss = np.asarray(loss, dtype=np.float64)
    if len(loss) == 0:
        return np.zeros(0, dtype=int)
    return np.asarray(_mo._fast_non_domination_rank(loss, n_below=n_below), dtype=int)
