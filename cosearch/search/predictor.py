"""A quality predictor on ``space.encode``: a bootstrap ensemble of small numpy MLPs.

HAT predicts latency with an MLP on the arch encoding; here the same idea predicts
validation loss so that only promising candidates are measured on the supernet. Each
member is a one-hidden-layer tanh MLP trained full-batch with Adam on a bootstrap resample
(targets standardised); the ensemble mean is the prediction and the spread an uncertainty.
Pure numpy: a few hundred archs fit in well under a second.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def rank_correlation(predicted, measured) -> dict:
    """Spearman's rho and Kendall's tau between predictions and measurements."""
    from scipy import stats  # slow to import; only needed here

    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    if len(p) < 3 or np.ptp(p) == 0 or np.ptp(m) == 0:
        return {"n": int(len(p)), "spearman": float("nan"), "kendall": float("nan")}
    return {"n": int(len(p)), "spearman": float(stats.spearmanr(p, m).statistic),
            "kendall": float(stats.kendalltau(p, m).statistic)}


@dataclass
class _MLP:
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: float

    def forward(self, x):
        h = np.tanh(x @ self.w1 + self.b1)
        return h @ self.w2 + self.b2, h


@dataclass
class QualityPredictor:
    """Ensemble-of-MLPs regressor: ``fit(X, y)``, ``predict(X)``, ``predict_std(X)``."""

    members: int = 5
    hidden: int = 32
    epochs: int = 400
    lr: float = 0.01
    l2: float = 1e-4
    seed: int = 0
    name: str = "mlp-ensemble"
    _nets: list = field(default_factory=list, repr=False)
    _y: tuple = (0.0, 1.0)

    def fit(self, X: np.ndarray, y: np.ndarray) -> "QualityPredictor":
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if len(X) < 2:
            raise ValueError("a predictor needs at least 2 measured archs")
        mu, sd = float(y.mean()), float(y.std() or 1.0)
        self._y = (mu, sd)
        z = (y - mu) / sd
        rng = np.random.default_rng(self.seed)
        self._nets = []
        for _ in range(self.members):
            idx = rng.integers(len(X), size=len(X))
            self._nets.append(self._train(X[idx], z[idx], rng))
        return self

    def _train(self, X, z, rng) -> _MLP:
        d = X.shape[1]
        net = _MLP(rng.normal(0, 1 / np.sqrt(d), (d, self.hidden)), np.zeros(self.hidden),
                   rng.normal(0, 1 / np.sqrt(self.hidden), self.hidden), 0.0)
        params = [net.w1, net.b1, net.w2]
        m = [np.zeros_like(p) for p in params] + [0.0]
        v = [np.zeros_like(p) for p in params] + [0.0]
        b1_, b2_, eps, n = 0.9, 0.999, 1e-8, len(X)
        for t in range(1, self.epochs + 1):
            out, h = net.forward(X)
            g_out = 2 * (out - z) / n
            g_w2 = h.T @ g_out + self.l2 * net.w2
            g_b2 = float(g_out.sum())
            g_h = np.outer(g_out, net.w2) * (1 - h * h)
            g_w1 = X.T @ g_h + self.l2 * net.w1
            g_b1 = g_h.sum(0)
            grads = [g_w1, g_b1, g_w2, g_b2]
            for i, g in enumerate(grads):
                m[i] = b1_ * m[i] + (1 - b1_) * g
                v[i] = b2_ * v[i] + (1 - b2_) * g * g
                step = self.lr * (m[i] / (1 - b1_ ** t)) / (np.sqrt(v[i] / (1 - b2_ ** t)) + eps)
                if i < 3:
                    params[i] -= step
                else:
                    net.b2 -= step
        return net

    def _all(self, X) -> np.ndarray:
        if not self._nets:
            raise RuntimeError("predictor is not fitted")
        X = np.asarray(X, dtype=np.float64)
        mu, sd = self._y
        return np.stack([net.forward(X)[0] for net in self._nets]) * sd + mu

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._all(X).mean(0)

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        return self._all(X).std(0)


def cross_validate(X: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0, **kw) -> dict:
    """Out-of-fold predictions for every row -> rank correlation and RMSE."""
    X, y = np.asarray(X), np.asarray(y, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(X))
    pred = np.empty(len(X))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        pred[test] = QualityPredictor(seed=seed + f, **kw).fit(X[train], y[train]).predict(X[test])
    out = rank_correlation(pred, y)
    out["rmse"] = float(np.sqrt(np.mean((pred - y) ** 2)))
    return out
