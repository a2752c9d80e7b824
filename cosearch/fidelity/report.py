"""The fidelity report: per arch inherited vs standalone quality, and how well the
supernet ranks compared with zero-cost proxies, the reference's own seed noise and a
distilled standalone control.

Per metric (validation loss, test loss where the data has a test split, test BLEU when
asked), with ranks read as "lower is better":

* ``inherited``: Kendall tau, Spearman (95% bootstrap intervals) and the within-bin tau
  (pairs within 15% on the axis the archs were picked along: weight MB, or latency) of
  inherited vs standalone, the standalone being each arch's best sweep point by
  validation loss (``inherited_vs_untuned``: against the run's own recipe instead);
* ``proxies``: the same for each zero-cost proxy (bigger predicts better);
* ``gap``: inherited minus standalone (> 0: inherited is worse), mean, mean |.|, max |.|;
* ``seed_noise``: a second standalone seed against the first on a subset, and (``seed_mean``)
  inherited and the proxies against the mean of the two seeds there;
* ``reference_ceiling``: from that seed noise, the tau (and within-bin tau) a perfect
  ranker would reach against the one-seed reference of the run's own recipe over all the
  archs, with a range from the noise's 95% interval: read every tau against it;
* ``reference_budgets``: with a steps sweep, how the reference ranks at each longer
  budget against the run's own (is the reference settled?) and how inherited ranks there;
* ``distilled``: standalone with the supernet's largest as teacher minus plain standalone
  (< 0: the teacher alone helps), and inherited vs distilled ranks;
* ``axes`` (headline metric only): per axis of the arch (a stack's depth, a per-layer field,
  a top-level number), its tau with the inherited and with the standalone loss and their
  difference with a paired interval, largest first: which choices go with the inherited loss
  unlike with the standalone one;
* ``goals``: the issue's targets checked on the headline metric (test loss, else valid).
"""
from __future__ import annotations

import math
from pathlib import Path

from ..space import SearchSpace
from .axes import axis_disagreement
from .plan import Plan
from .proxies import PROXIES, proxy_values
from .stats import gaps, paired_tau_difference, rank_agreement, reference_ceiling

#: metric -> sign that turns it into "lower is better"
METRICS = {"valid_loss": 1.0, "test_loss": 1.0, "test_bleu": -1.0}
GOALS = {"tau": 0.85, "tau_lower": 0.75, "n": 48, "proxy_margin": 0.15, "proxy_weak_below": 0.8,
         "within_bin_tau": 0.6}


def per_arch(plan: Plan, inherited: list[dict | None], measured: dict[str, dict | None]) -> list[dict]:
    """One row per arch: its picks, proxies, inherited and standalone results."""
    space = SearchSpace.from_dict(plan.space)
    proxies = proxy_values(space, [plan.arch(i) for i in range(len(plan.archs))], int(plan.settings["seq_len"]))
    rows = []
    for i, arch in enumerate(plan.archs):
        jobs = [j for j in plan.jobs if j["arch"] == i]
        sweep = [dict(dropout=j["dropout"], steps=j["steps"], job=j["name"], **(measured.get(j["name"]) or {}))
                 for j in jobs if j["role"] == "grid"]
        done = [p for p in sweep if _finite(p.get("valid_loss")) and not _diverged(p)]  # a diverged point is out
        untuned = sweep[0] if sweep and sweep[0] in done else None  # the run's own recipe comes first
        extra = {j["role"]: measured.get(j["name"]) for j in jobs if j["role"] != "grid"}
        rows.append({
            "label": plan.labels[i], "bin": plan.bins[i], "kind": plan.kinds[i], "in_band": plan.in_band[i],
            "axis": plan.axis[i], "arch": arch, **{p: proxies[p][i] for p in PROXIES},
            "inherited": inherited[i] if i < len(inherited) else None,
            "standalone": min(done, key=lambda p: p["valid_loss"]) if done else None,
            "untuned": untuned, "seed2": extra.get("noise"), "distilled": extra.get("distilled"),
            "sweep": sweep})
    return rows


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def metric_column(rows: list[dict], what: str, metric: str) -> list[float | None]:
    """``row[what][metric]`` of each per-arch row as "lower is better" (None where missing,
    and for every metric of a diverged model: one whose loss is not finite)."""
    sign = METRICS[metric]
    return [sign * r[what][metric] if r.get(what) and _finite(r[what].get(metric)) and not _diverged(r[what])
            else None for r in rows]


def _diverged(entry: dict) -> bool:
    return any(k.endswith("_loss") and not _finite(v) for k, v in entry.items())


def diverged(rows: list[dict]) -> list[str]:
    """``label: which`` of every model that was scored but gave no finite loss (left out)."""
    out = []
    for r in rows:
        out += [f"{r['label']}: {what}" for what in ("inherited", "seed2", "distilled")
                if r.get(what) and _diverged(r[what])]
        out += [f"{r['label']}: standalone (dropout {p['dropout']:g}, {p['steps']} steps)" for p in r.get("sweep", [])
                if _diverged(p)]
    return out


def bin_axis(rows: list[dict]) -> list[float]:
    """Each per-arch row's value on the axis its archs were picked along: weight MB, or
    latency with --stratify latency (within-bin pairs are archs within 15% on it)."""
    return [r.get("axis", r["weight_mb"]) for r in rows]


def summarise(rows: list[dict], metric: str, seed: int = 0) -> dict:
    """The statistics of one metric (see the module doc)."""
    size = bin_axis(rows)
    inh, sa, untuned = (metric_column(rows, what, metric) for what in ("inherited", "standalone", "untuned"))
    out = {"inherited": rank_agreement(inh, sa, size, seed), "gap": gaps(inh, sa),
           "inherited_vs_untuned": rank_agreement(inh, untuned, size, seed), "proxies": {}}
    for p in PROXIES:
        out["proxies"][p] = rank_agreement([-r[p] for r in rows], sa, size, seed)
    taus = {p: v["kendall_tau"] for p, v in out["proxies"].items() if v["kendall_tau"] is not None}
    out["best_proxy"] = max(taus, key=taus.get) if taus else None
    noise = [k for k, r in enumerate(rows) if r.get("seed2")]
    if noise:
        s2, s1 = metric_column(rows, "seed2", metric), untuned
        out["seed_noise"] = {"archs": noise, **rank_agreement([s2[k] for k in noise], [s1[k] for k in noise],
                                                              [size[k] for k in noise], seed),
                             "gap": gaps([s2[k] for k in noise], [s1[k] for k in noise]),
                             "inherited_on_these": rank_agreement([inh[k] for k in noise], [s1[k] for k in noise]),
                             "seed_mean": seed_mean_reference(rows, noise, inh, s1, s2, size, seed)}
        # against the run's own recipe, the runs the noise was measured on (the best sweep point
        # is a minimum over noisy runs: its noise is not the one measured)
        out["reference_ceiling"] = reference_ceiling(untuned, [s1[k] for k in noise], [s2[k] for k in noise], size,
                                                     seed)
    budgets = reference_budgets(rows, metric, size, inh, untuned, seed)
    if budgets:
        out["reference_budgets"] = budgets
    kd = [k for k, r in enumerate(rows) if r.get("distilled")]
    if kd:
        dis = metric_column(rows, "distilled", metric)
        out["distilled"] = {"archs": kd, "minus_standalone": gaps([dis[k] for k in kd], [untuned[k] for k in kd]),
                            "inherited_vs_distilled": rank_agreement([inh[k] for k in kd], [dis[k] for k in kd]),
                            "inherited_minus_distilled": gaps([inh[k] for k in kd], [dis[k] for k in kd])}
    return out


def seed_mean_reference(rows: list[dict], noise: list[int], inh, s1, s2, size, seed: int = 0) -> dict:
    """On the archs with two standalone seeds: inherited and each proxy against the mean of the
    two (a reference with half the seed noise's variance, so a ranking claim does not rest on
    one seed's luck). Both seeds are runs of the run's own recipe, as for the seed noise (not
    the best sweep point). With the noise runs on every arch (``--noise-archs`` = ``--archs``)
    this is the whole check against a two-seed reference."""
    mean = [None if s1[k] is None or s2[k] is None else (s1[k] + s2[k]) / 2 for k in noise]
    sub = [size[k] for k in noise]
    return {"n": sum(v is not None for v in mean),
            "inherited": rank_agreement([inh[k] for k in noise], mean, sub, seed),
            "proxies": {p: rank_agreement([-rows[k][p] for k in noise], mean, sub, seed) for p in PROXIES}}


def reference_budgets(rows: list[dict], metric: str, size, inherited, untuned, seed: int = 0) -> dict:
    """Is the standalone reference's ranking settled at the run's steps? For each longer
    point of the steps sweep (at the run's dropout): its ranking against the run's steps
    (``reference``: a low tau says the short reference ranks how fast an arch learns, not
    how good it gets), its loss minus the run's steps' (``gap``), the inherited ranking
    against it (``inherited``), and ``inherited_minus_reference``: inherited's tau against
    it minus the run's-steps runs' own, with a paired bootstrap interval over archs (> 0:
    the supernet ranks the longer runs better than training each arch for the run's steps
    does). Keyed by the step count."""
    # per arch: its sweep points at the run's own dropout and longer than the run's steps
    longer = [{p["steps"]: {"point": p} for p in r["sweep"][1:]
               if p["dropout"] == r["sweep"][0]["dropout"] and p["steps"] > r["sweep"][0]["steps"]}
              for r in rows]
    out = {}
    for steps in sorted({k for points in longer for k in points}):
        col = metric_column([points.get(steps, {}) for points in longer], "point", metric)
        # the user's baseline without a supernet: train every arch for the run's steps alone
        d = paired_tau_difference([(inherited, col)], [(untuned, col)], size, seed)
        out[str(steps)] = {"reference": rank_agreement(col, untuned, size, seed), "gap": gaps(col, untuned),
                           "inherited": rank_agreement(inherited, col, size, seed),
                           "inherited_minus_reference": {k: d.get(k) for k in (
                               "kendall_diff", "kendall_diff_ci", "within_bin_diff", "within_bin_diff_ci")}}
    return out


def goals(summary: dict) -> dict:
    """The issue's goals on one metric's summary: each value and whether it is met."""
    inh, best = summary["inherited"], summary.get("best_proxy")
    proxy = summary["proxies"].get(best) if best else None
    lo = inh["kendall_ci"][0]
    g = {"n": inh["n"], "n_ok": inh["n"] >= GOALS["n"], "tau": inh["kendall_tau"],
         "tau_ok": inh["kendall_tau"] is not None and inh["kendall_tau"] >= GOALS["tau"],
         "tau_lower": lo, "tau_lower_ok": lo is not None and lo >= GOALS["tau_lower"], "best_proxy": best}
    if proxy is not None and proxy["kendall_tau"] is not None and inh["kendall_tau"] is not None:
        g["best_proxy_tau"] = proxy["kendall_tau"]
        if proxy["kendall_tau"] < GOALS["proxy_weak_below"]:
            p_hi = proxy["kendall_ci"][1]
            g["beats_proxy_ok"] = (inh["kendall_tau"] >= proxy["kendall_tau"] + GOALS["proxy_margin"]
                                   and lo is not None and p_hi is not None and lo > p_hi)
    within = inh.get("within_bin_tau")
    proxies_within = [v.get("within_bin_tau") for v in summary["proxies"].values() if v.get("within_bin_tau") is not None]
    w_lo = inh.get("within_bin_ci", [None])[0]
    g.update(within_bin_tau=within, within_bin_lower=w_lo,
             within_bin_ok=within is not None and within >= GOALS["within_bin_tau"],
             within_bin_beats_proxies_ok=(w_lo is not None and bool(proxies_within) and w_lo > max(proxies_within)))
    ceiling = summary.get("reference_ceiling")
    if ceiling:  # what a perfect ranker would score against this reference: a goal above it cannot be met
        g.update(reference_ceiling=ceiling["kendall_tau"], reference_ceiling_range=ceiling["kendall_range"],
                 within_bin_ceiling=ceiling["within_bin_tau"])
    return g


def score_rows(rows: list[dict], seed: int = 0) -> dict:
    """The statistics of per-arch rows: each metric's summary, the headline metric (test
    loss where there is a test split) and its goals. Rows are all a report needs, so a
    kept report can be scored again when the statistics change."""
    metrics = [m for m in METRICS if any(r["inherited"] and m in r["inherited"] for r in rows)]
    summary = {m: summarise(rows, m, seed) for m in metrics}
    headline = "test_loss" if "test_loss" in summary else "valid_loss"
    if headline in summary:  # on the headline metric only: ~13 bootstraps over archs each
        summary[headline]["axes"] = axis_disagreement(
            [r.get("arch") for r in rows], metric_column(rows, "inherited", headline),
            metric_column(rows, "standalone", headline), seed)
    return {"headline": headline, "goals": goals(summary[headline]) if headline in summary else None,
            "summary": summary, "diverged": diverged(rows)}


def build_report(plan: Plan, inherited: list[dict | None], measured: dict[str, dict | None],
                 failed: dict[str, str] | None = None, supernet: dict | None = None,
                 standalone_from: str | list[str] | None = None, tokenizer: str | None = None,
                 max_tokens: int | None = None, unpicked_choices: list[str] | None = None) -> dict:
    """``standalone_from``: the earlier check (or checks) whose standalone scores were
    reused (None: trained for this check). ``tokenizer``, ``max_tokens``: the digest every
    model was scored with and the tokens per scoring batch (with ``eval_tokens`` they decide
    which tokens were scored; a rescoring against other standalone scores compares them).
    ``unpicked_choices``: the space's choices no checked arch takes (None: not recorded)."""
    rows = per_arch(plan, inherited, measured)
    done = sum(1 for j in plan.jobs if measured.get(j["name"]))
    return {"run": plan.run, "supernet": supernet, "settings": plan.settings,
            **score_rows(rows, int(plan.settings["seed"])), "per_arch": rows,
            "jobs": {"planned": len(plan.jobs), "measured": done, "failed": failed or {}, "from": standalone_from,
                     "shard": plan.settings.get("shard")},
            "bins": {"centres": plan.centres, "axis": plan.settings["stratify"]}, "tokenizer": tokenizer,
            "max_tokens": max_tokens, "unpicked_choices": unpicked_choices}


def plot(report: dict, path: Path) -> None:
    """Inherited vs standalone (left, y = x dashed) and standalone vs the best zero-cost
    proxy with its least-squares line in log scale (right), on the headline metric."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = report["headline"]
    s = report["summary"].get(m, {})
    best = s.get("best_proxy") or "weight_mb"
    rows = [r for r in report["per_arch"] if r["inherited"] and r["standalone"] and _finite(r["inherited"].get(m))
            and _finite(r["standalone"].get(m))]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.6))
    if rows:
        x = np.array([r["inherited"][m] for r in rows])
        y = np.array([r["standalone"][m] for r in rows])
        mb = np.array([r["weight_mb"] for r in rows])
        px = np.array([r[best] for r in rows], dtype=float)
        sc = a.scatter(x, y, c=np.log10(mb), cmap="viridis", s=28)
        # each axis spans its own points: with a large gap (a short supernet's inherited losses
        # nats above standalone) a common square range would squash the ranking into a corner
        a.set_xlim(*_span(x))
        a.set_ylim(*_span(y))
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        seen = max(x.min(), y.min()) <= min(x.max(), y.max())  # y = x crosses the view
        a.plot([lo, hi], [lo, hi], "k--", lw=0.8,
               label="y = x" if seen else f"y = x (out of view: mean gap {float(np.mean(x - y)):+.2f})")
        fig.colorbar(sc, ax=a, label="log10 weight MB")
        b.scatter(px, y, s=24, c=np.log10(mb), cmap="viridis", label="standalone")
        if len(set(px)) >= 2 and (px > 0).all():  # a proxy equal for every arch has no line
            k, c = np.polyfit(np.log(px), y, 1)
            grid = np.geomspace(px.min(), px.max(), 50)
            b.plot(grid, k * np.log(grid) + c, "r-", lw=1.2, label=f"{best} proxy (fit in log)")
            b.set_xscale("log")
    inh = s.get("inherited", {})
    title = f"inherited vs standalone: tau {_fmt(inh.get('kendall_tau'))} {_ci(inh.get('kendall_ci'))}, " \
            f"in-bin {_fmt(inh.get('within_bin_tau'))} (n={inh.get('n', 0)})"
    ceiling = s.get("reference_ceiling") or {}
    if ceiling.get("kendall_tau") is not None:
        title += f"\nperfect ranker vs this reference: tau {_fmt(ceiling['kendall_tau'])} {_ci(ceiling['kendall_range'])}"
    a.set(xlabel=f"inherited {m}", ylabel=f"standalone {m}", title=title)
    p = s.get("proxies", {}).get(best, {})
    b.set(xlabel=best, ylabel=f"standalone {m}", title=f"best proxy {best}: tau {_fmt(p.get('kendall_tau'))} "
          f"{_ci(p.get('kendall_ci'))}, in-bin {_fmt(p.get('within_bin_tau'))}")
    for ax in (a, b):
        ax.title.set_fontsize(9)
        if ax.get_legend_handles_labels()[0]:  # nothing to plot (no arch scored both ways): no legend
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _span(v, margin: float = 0.05) -> tuple[float, float]:
    """Axis limits holding every value of ``v``, with a margin (a single value gets one too)."""
    lo, hi = float(min(v)), float(max(v))
    pad = margin * (hi - lo) if hi > lo else max(abs(lo) * margin, 1e-3)
    return lo - pad, hi + pad


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def _ci(ci) -> str:
    return "" if not ci or ci[0] is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"
