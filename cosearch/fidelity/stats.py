"""Rank agreement with bootstrap intervals (scipy), across all archs and within size bins.

Every score here is a *predicted loss* against the *reference loss* (lower is better
for both); a proxy where bigger predicts better enters as its negative. Intervals are
95% percentile bootstraps over archs (``scipy.stats.bootstrap``, resampling arch indices
so paired values stay paired), seeded for reproducibility.

Within-bin tau: Kendall's tau over the pairs of archs whose weight sizes are within
``ratio`` of each other, ``(concordant - discordant) / (concordant + discordant)``, pairs
tied in either score left out (a bootstrap resample repeats archs; a repeat is tied with
itself). A size proxy is near 0 there by construction; that is where a supernet must rank.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps

#: bootstrap resamples per interval
N_BOOT = 1000
#: two archs are in one size bin when their weight MB are within this factor (+-15%)
BIN_RATIO = 1.15
#: simulated reference redraws per noise-ceiling estimate
N_SIM = 400


def _finite(*cols: Sequence[float | None]) -> np.ndarray:
    """Row indices where every column has a finite value."""
    arr = np.array([[np.nan if v is None else float(v) for v in c] for c in cols], dtype=float)
    return np.flatnonzero(np.isfinite(arr).all(axis=0))


def kendall(pred, ref) -> float:
    return float(sps.kendalltau(pred, ref).statistic)


def spearman(pred, ref) -> float:
    return float(sps.spearmanr(pred, ref).statistic)


def within_bin_tau(pred, ref, size, ratio: float = BIN_RATIO) -> tuple[float, int]:
    """(tau over the untied pairs of similar size, how many such pairs)."""
    p, r, s = (np.asarray(x, dtype=float) for x in (pred, ref, size))
    i, j = np.triu_indices(len(p), k=1)
    near = np.maximum(s[i], s[j]) <= ratio * np.minimum(s[i], s[j])
    sign = np.sign(p[i] - p[j]) * np.sign(r[i] - r[j])
    used = near & (sign != 0)
    n = int(used.sum())
    return (float(sign[used].sum() / n) if n else float("nan")), n


def bootstrap_interval(stat: Callable[[np.ndarray], float], n: int, seed: int = 0,
                       n_boot: int = N_BOOT) -> list[float | None]:
    """95% percentile interval of ``stat(indices)`` over resamples of ``range(n)``
    ([None, None] when fewer than 3 archs or the statistic is undefined). One undefined
    resample (all one arch repeated: no pair to rank) makes the whole interval undefined, so
    with 4-5 archs the interval is in practice always None, and within bins often up to 8."""
    if n < 3:
        return [None, None]
    res = sps.bootstrap((np.arange(n),), stat, vectorized=False, n_resamples=n_boot, method="percentile",
                        confidence_level=0.95, random_state=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    return [None if not np.isfinite(lo) else float(lo), None if not np.isfinite(hi) else float(hi)]


def _nan_safe(f):
    def g(*a):
        try:
            return f(*a)
        except ValueError:  # a resample with too few distinct values
            return float("nan")
    return g


def rank_agreement(pred, ref, size=None, seed: int = 0, n_boot: int = N_BOOT) -> dict:
    """Kendall tau and Spearman of ``pred`` vs ``ref`` with intervals, and (with
    ``size``) the within-bin tau with its interval; rows with a missing value are left out."""
    with warnings.catch_warnings():  # resamples of a few archs are often constant: nan, not noise
        warnings.simplefilter("ignore", sps.ConstantInputWarning)
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        return _rank_agreement(pred, ref, size, seed, n_boot)


def _rank_agreement(pred, ref, size, seed: int, n_boot: int) -> dict:
    cols = [pred, ref] + ([size] if size is not None else [])
    keep = _finite(*cols)
    p = np.asarray([pred[k] for k in keep], dtype=float)
    r = np.asarray([ref[k] for k in keep], dtype=float)
    n = len(keep)
    out: dict = {"n": n}
    if n < 3:
        out.update(kendall_tau=None, kendall_ci=[None, None], spearman=None, spearman_ci=[None, None])
    else:
        # a constant column (a proxy that is equal for every pick) has no rank: None, not nan
        out["kendall_tau"] = _finite_or_none(kendall(p, r))
        out["kendall_ci"] = bootstrap_interval(_nan_safe(lambda i: kendall(p[i], r[i])), n, seed, n_boot)
        out["spearman"] = _finite_or_none(spearman(p, r))
        out["spearman_ci"] = bootstrap_interval(_nan_safe(lambda i: spearman(p[i], r[i])), n, seed, n_boot)
    if size is not None:
        s = np.asarray([size[k] for k in keep], dtype=float)
        tau, pairs = within_bin_tau(p, r, s) if n >= 2 else (float("nan"), 0)
        out["within_bin_tau"] = tau if np.isfinite(tau) else None
        out["within_bin_pairs"] = pairs
        out["within_bin_ci"] = (bootstrap_interval(lambda i: within_bin_tau(p[i], r[i], s[i])[0], n, seed, n_boot)
                                if pairs >= 3 else [None, None])
    return out


def gaps(pred, ref) -> dict:
    """Mean, mean absolute and largest absolute ``pred - ref`` (> 0: the prediction is
    the higher loss), over rows with both values."""
    keep = _finite(pred, ref)
    if not len(keep):
        return {"n": 0, "mean": None, "mean_abs": None, "max_abs": None}
    d = np.asarray([pred[k] - ref[k] for k in keep], dtype=float)
    return {"n": int(len(d)), "mean": float(d.mean()), "mean_abs": float(np.abs(d).mean()),
            "max_abs": float(np.abs(d).max())}


def tau_difference(preds_a: Sequence[Sequence[float | None]], preds_b: Sequence[Sequence[float | None]],
                   ref: Sequence[float | None], size: Sequence[float] | None = None, seed: int = 0,
                   n_boot: int = N_BOOT) -> dict:
    """Does variant A rank better than variant B against the same reference?

    ``preds_a`` / ``preds_b``: one predicted-loss column per supernet seed of each variant,
    over the same archs as ``ref``. The difference is the mean over A's seeds of Kendall
    tau (and, with ``size``, of the within-bin tau) minus the same over B's seeds. Its 95%
    interval is a paired bootstrap over archs: one draw of arch indices serves every column,
    so what makes an arch hard for both variants cancels. The supernet seeds are not
    resampled (three cannot be): the per-seed taus are returned for reading that spread.
    Rows with a value missing in any column are left out.
    """
    return paired_tau_difference([(p, ref) for p in preds_a], [(p, ref) for p in preds_b], size, seed, n_boot)


def paired_tau_difference(pairs_a: Sequence[tuple[Sequence, Sequence]], pairs_b: Sequence[tuple[Sequence, Sequence]],
                          size: Sequence[float] | None = None, seed: int = 0, n_boot: int = N_BOOT) -> dict:
    """Mean Kendall tau (and within-bin tau) over the (prediction, reference) column pairs
    of A minus the same over B's, with a paired bootstrap interval over archs.

    :func:`tau_difference` is the case of one reference for every pair. Giving each side
    its own reference asks the other question: does one ranker agree better with a longer
    reference than with a shorter one of the same archs (A: the pairs with the longer)?
    Tau is symmetric, so a pair's order does not matter. ``within_bin_pairs`` is the
    fewest untied within-bin pairs any reference of the pairs has."""
    refs = [r for _, r in (*pairs_a, *pairs_b)]
    cols = [c for pair in (*pairs_a, *pairs_b) for c in pair] + ([size] if size is not None else [])
    keep = _finite(*cols) if cols else np.arange(0)

    def arr(c):
        return np.asarray([c[k] for k in keep], dtype=float)

    a = [(arr(p), arr(r)) for p, r in pairs_a]
    b = [(arr(p), arr(r)) for p, r in pairs_b]
    n = len(keep)
    out: dict = {"n": n, "seeds_a": len(pairs_a), "seeds_b": len(pairs_b)}
    if n < 3 or not a or not b:
        return {**out, "kendall_diff": None, "kendall_diff_ci": [None, None]}

    def taus(i):
        return [kendall(p[i], r[i]) for p, r in a], [kendall(p[i], r[i]) for p, r in b]

    def kendall_diff(i):
        ta, tb = taus(i)
        return float(np.mean(ta) - np.mean(tb))

    full = np.arange(n)
    with warnings.catch_warnings():  # constant resamples: nan, left out of the interval as in rank_agreement
        warnings.simplefilter("ignore", sps.ConstantInputWarning)
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        ta, tb = taus(full)
        diff = kendall_diff(full)
        out.update(kendall_a=_finite_or_none(ta), kendall_b=_finite_or_none(tb), kendall_diff=_finite_or_none(diff),
                   kendall_diff_ci=bootstrap_interval(_nan_safe(kendall_diff), n, seed, n_boot),
                   every_seed_of_a_above_b=bool(np.isfinite(diff)) and min(ta) > max(tb))
        if size is not None:
            s = arr(size)

            def within(i):
                return ([within_bin_tau(p[i], r[i], s[i])[0] for p, r in a],
                        [within_bin_tau(p[i], r[i], s[i])[0] for p, r in b])

            def within_diff(i):
                wa, wb = within(i)
                return float(np.mean(wa) - np.mean(wb))

            wa, wb = within(full)
            pairs = min(within_bin_tau(arr(r), arr(r), s)[1] for r in refs)
            out.update(within_bin_a=_finite_or_none(wa), within_bin_b=_finite_or_none(wb), within_bin_pairs=pairs,
                       within_bin_diff=_finite_or_none(within_diff(full)),
                       within_bin_diff_ci=(bootstrap_interval(within_diff, n, seed, n_boot) if pairs >= 3
                                           else [None, None]))
    return out


def reference_ceiling(ref: Sequence[float | None], first: Sequence[float], second: Sequence[float],
                      size: Sequence[float] | None = None, seed: int = 0, n_sim: int = N_SIM) -> dict:
    """How well a perfect ranker could agree with a one-seed reference: the noise ceiling.

    ``first`` / ``second``: the reference metric of the seed-noise archs from two training
    seeds. Each run is taken as the arch's true value, plus a shift common to every arch of
    one seed (every arch trained with a seed sees the same batches in the same order, so the
    seed can help or hurt them all alike: a shift moves no ranking), plus independent normal
    noise of one sd ``sigma``. So the differences, centred on their mean,
    give ``sigma^2 = sum((d - mean d)^2) / 2(n - 1)``, with a 95% interval from the
    chi-square law (n - 1 degrees of freedom). The true values are the reference shrunk
    towards its mean until their variance is ``var(ref) - sigma^2`` (what noise adds, taken
    back out). The ceiling is the mean Kendall tau (and within-bin tau) of those true values
    against ``n_sim`` noisy redraws of the reference, at sigma and at each end of its
    interval (``*_range``: the ceiling at the upper sigma first). The range covers the
    uncertainty in sigma only. The within-bin figure is an upper estimate: the shrink is set
    by the spread across all archs, so within a bin, where the true spread is smaller, it
    leaves some of the noise in the "true" values.
    A supernet's tau can only be read against it; with 6-12 noise archs the range is wide.
    """
    d = np.asarray([b - a for a, b in zip(first, second) if a is not None and b is not None], dtype=float)
    d = d[np.isfinite(d)]
    keep = _finite(ref, size) if size is not None else _finite(ref)
    r = np.asarray([ref[k] for k in keep], dtype=float)
    s = None if size is None else np.asarray([size[k] for k in keep], dtype=float)
    out: dict = {"noise_pairs": int(len(d)), "n": int(len(r)), "sims": n_sim}
    if len(d) < 2 or len(r) < 3:
        return {**out, "noise_sd": None, "noise_sd_ci": [None, None], "seed_shift": None, "kendall_tau": None,
                "kendall_range": [None, None], "within_bin_tau": None, "within_bin_range": [None, None]}
    dof = len(d) - 1
    ss = float(((d - d.mean()) ** 2).sum())
    sigma = float(np.sqrt(ss / (2 * dof)))
    hi, lo = (float(np.sqrt(ss / (2 * sps.chi2.ppf(q, dof)))) for q in (0.025, 0.975))
    z = np.random.default_rng(seed).standard_normal((n_sim, len(r)))  # one set of draws for every sigma

    def ceiling(sd: float) -> tuple[float, float | None]:
        var = r.var(ddof=1)  # unbiased, as sigma^2 is: a biased one calls small references all noise
        if var <= sd * sd:  # the spread is all noise: there is no ranking to find
            return 0.0, (None if s is None else 0.0)
        truth = r.mean() + np.sqrt((var - sd * sd) / var) * (r - r.mean())
        tau = float(np.mean([kendall(truth, truth + sd * row) for row in z]))
        if s is None:
            return tau, None
        within = [w for w in (within_bin_tau(truth, truth + sd * row, s)[0] for row in z) if np.isfinite(w)]
        return tau, (float(np.mean(within)) if within else None)

    (tau, within), (tau_hi, within_hi), (tau_lo, within_lo) = ceiling(sigma), ceiling(hi), ceiling(lo)
    return {**out, "noise_sd": sigma, "noise_sd_ci": [lo, hi], "seed_shift": float(d.mean()),
            "kendall_tau": tau, "kendall_range": [tau_hi, tau_lo],
            "within_bin_tau": within, "within_bin_range": [within_hi, within_lo]}


def _finite_or_none(v):
    """A float, or a list of them, with nan / inf as None (JSON has no nan)."""
    if isinstance(v, list):
        return [_finite_or_none(x) for x in v]
    return float(v) if np.isfinite(v) else None
