"""The predictor screen: measure a candidate only when it could join the front."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..space import SearchSpace
from .front import pareto_mask, to_minimize
from .objectives import finite_or_none
from .params import Design
from .predictor import QualityPredictor, rank_correlation


class Screen:
    """The predictor screen (HAT-style): the first ``warmup`` designs are all measured;
    then a predictor fitted only on measured points (refitted every ``refit`` new ones)
    predicts the quality column of each candidate, and a candidate is measured only when
    its optimistic point (prediction one ensemble spread better) is not dominated by the
    measured front; the others are recorded with the predicted value (``source=predicted``).
    So every design that could join the front is measured before it does."""

    def __init__(self, space: SearchSpace, directions: list[str], q_index: int, column: str,
                 warmup: int = 1000, refit: int = 100, seed: int = 0):
        self.space, self.dirs, self.q, self.column = space, directions, q_index, column
        self.warmup, self.refit, self.seed = warmup, refit, seed
        self.X: list[np.ndarray] = []
        self.y: list[float] = []
        self.front = np.zeros((0, len(directions)))
        self.model: QualityPredictor | None = None
        self._fitted_at = 0
        self.pairs: list[tuple[float, float]] = []  # (predicted before measuring, measured): held out

    def add(self, design: Design, value: float, values: list[float] | None, feasible: bool):
        """A measured arch (never a predicted one), once: a point of the predictor, and its
        design joins the front."""
        self.X.append(self.space.encode(design.arch))
        self.y.append(value)
        self.add_front(values, feasible)
        if len(self.y) >= self.warmup and len(self.y) - self._fitted_at >= min(self.refit, len(self.y)):
            self.model = QualityPredictor(seed=self.seed).fit(np.array(self.X), np.array(self.y))
            self._fitted_at = len(self.y)

    def add_front(self, values: list[float] | None, feasible: bool):
        """A measured design whose arch the predictor already has (other knobs)."""
        if feasible and values is not None:
            pts = np.vstack([self.front, to_minimize(np.array([values]), self.dirs)])
            self.front = pts[pareto_mask(pts)]

    def predict(self, designs: Sequence[Design]) -> tuple[np.ndarray, np.ndarray] | None:
        if self.model is None:
            return None
        X = self.space.encode_many([d.arch for d in designs])
        return self.model.predict(X), self.model.predict_std(X)

    def worth_measuring(self, values: np.ndarray, feasible: np.ndarray, std: np.ndarray) -> np.ndarray:
        """values: objective rows with the predicted quality in column q."""
        if len(self.front) == 0:
            return feasible.copy()
        opt = values.copy()
        sign = -1.0 if self.dirs[self.q] == "maximize" else 1.0
        opt[:, self.q] -= sign * std  # optimistic: one spread better than predicted
        loss = to_minimize(opt, self.dirs)
        dominated = np.array([np.any(np.all(self.front <= p, axis=1) & np.any(self.front < p, axis=1))
                              for p in loss])
        return feasible & ~dominated

    def report(self) -> dict | None:
        if not self.pairs:
            return {"metric": self.column, "n": 0, "kendall": None, "spearman": None,
                    "measured": len(self.y), "warmup": self.warmup}
        p, m = zip(*self.pairs)
        r = rank_correlation(p, m)
        return {"metric": self.column, **{k: finite_or_none(v) for k, v in r.items()}, "measured": len(self.y),
                "warmup": self.warmup}
