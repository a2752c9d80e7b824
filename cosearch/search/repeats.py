"""Noise-aware measurement: front candidates are measured again on fresh data.

One measurement of quality (validation loss on N batches, BLEU on M sentences) has an error
of its own, about as large as the differences along the front of a real supernet: lucky
archs join the front, and the sampler breeds from them. So after a batch is measured once,
every design whose point could join the measured front (its quality ``margin`` standard
errors better than measured, its costs as they are) is measured again on fresh data
(``repeat`` = 1, 2, ...: the next blocks of validation batches or sentences), and again,
while its mean, optimistic by the mean's standard error, could still join the front, up to
``repeats`` measurements in all (a race: most candidates drop out after one or two). It
is recorded with the mean of its measurements, their number (``loss_n``) and the mean's
standard error (``loss_se``). The sampler is told the means, so it selects
parents by them, and the front is made of them. Designs that cannot join the front cost
one measurement, as before.

The standard error of one measurement is the source's own (``loss_se``: the spread over
the batches) where it gives one, else the spread between repeats pooled over every arch
measured more than once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .front import to_minimize
from .objectives import QUALITY_COLUMNS


@dataclass(frozen=True)
class RepeatSettings:
    repeats: int = 1      # measurements of a front candidate in all (1: measure once, as before)
    margin: float = 1.0   # standard errors of optimism when deciding what could join the front


class Repeats:
    """Decides which freshly measured archs are measured again, and combines the results."""

    def __init__(self, settings: RepeatSettings, directions: list[str], q_index: int, column: str):
        self.s, self.dirs, self.q, self.column = settings, directions, q_index, column
        self.front = np.zeros((0, len(directions)))
        self._ss, self._dof = 0.0, 0  # pooled squared deviations between repeats of one arch

    @property
    def sigma(self) -> float:
        """The pooled standard deviation of one measurement (NaN before any repeat)."""
        return float(np.sqrt(self._ss / self._dof)) if self._dof else float("nan")

    def single_se(self, res: dict) -> np.ndarray:
        """Per arch of ``res``, the standard error of one measurement of the quality column."""
        n = len(res[self.column])
        se = np.asarray(res.get(f"{self.column}_se", np.full(n, np.nan)), dtype=np.float64)
        return np.where(np.isfinite(se), se, self.sigma)

    def candidates(self, values: np.ndarray, feasible: np.ndarray, se: np.ndarray) -> np.ndarray:
        """Rows (objective values, quality in column ``q``) whose optimistic point is not
        dominated by the front: worth measuring again."""
        if len(values) == 0:
            return np.zeros(0, dtype=bool)
        opt = to_minimize(values, self.dirs)
        opt[:, self.q] -= self.s.margin * np.nan_to_num(se, nan=0.0)
        if len(self.front) == 0:
            return feasible.copy()
        dominated = np.array([np.any(np.all(self.front <= p, axis=1) & np.any(self.front < p, axis=1))
                              for p in opt])
        return feasible & ~dominated

    def combine(self, first: dict, again: dict[int, list[dict]], n_archs: int, learn: bool = True) -> dict:
        """``first``: one measurement of each arch (columns over the batch's archs); ``again``:
        arch index -> its further measurements. Returns the columns with means, ``*_se``
        (of the mean) and ``*_n`` (measurements); ``learn``: pool the spread of the repeats."""
        cols = [c for c in QUALITY_COLUMNS if c in first]
        out = {c: np.asarray(first[c], dtype=np.float64).copy() for c in cols}
        n = np.ones(n_archs)
        for i, rows in again.items():
            for c in cols:
                xs = np.array([first[c][i]] + [r[c] for r in rows], dtype=np.float64)
                out[c][i] = xs.mean()
                if c == self.column and learn:
                    self._ss += float(np.sum((xs - xs.mean()) ** 2))
                    self._dof += len(xs) - 1
            n[i] = 1 + len(rows)
        if self.column in first:  # (after pooling: the repeats above may have grown the pool)
            out[f"{self.column}_se"] = self.single_se(first) / np.sqrt(n)
        out[f"{self.column}_n"] = n
        return out

    def add(self, values, feasible: bool) -> None:
        """A measured design's final point joins the front (feasible ones only)."""
        if feasible and values is not None:
            from .front import pareto_mask
            pts = np.vstack([self.front, to_minimize(np.array([values]), self.dirs)])
            self.front = pts[pareto_mask(pts)]
