"""The same supernets scored against two standalone references of the same archs: a short
one and a longer one. Does the supernet rank more like the longer reference?

Reads two ``benchmarks/fidelity.py`` result JSONs whose checks picked the same archs
(e.g. ``--standalone-steps 300`` and ``--standalone-steps 900`` of one space, data and arch
seed). Inherited losses are deterministic for a supernet seed, so a supernet seed found in
both must give the same ones (checked, and the largest difference recorded); a seed found in
one JSON only is scored against both references all the same. Writes, on the headline
metric (test loss, else valid loss):

* ``references``: the longer reference's ranking against the shorter one (a low tau: the
  short one ranks how fast an arch learns, not how good it gets), and its mean gap;
* per variant and per zero-cost proxy: Kendall tau and within-bin tau against each
  reference, per supernet seed, and the difference longer - shorter (mean over seeds) with a
  paired bootstrap 95% interval over archs (one draw of archs serves both references);
* each reference's noise ceiling as its check reported it;
* ``depths``: for each layer stack of the arch (a list in its dict: ``encoder``,
  ``decoder``, ``layers``), Kendall tau of the stack's depth with each reference and with each
  variant's inherited loss (mean over seeds): which axis of the space the two references,
  and the supernet, weigh differently.

Usage: ``python benchmarks/fidelity_references.py SHORT.json LONG.json --out OUT.json``
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cosearch.fidelity.proxies import PROXIES  # noqa: E402
from cosearch.fidelity.report import metric_column  # noqa: E402
from cosearch.fidelity.stats import (N_BOOT, _finite, _nan_safe, bootstrap_interval, gaps, kendall,  # noqa: E402
                                     rank_agreement, within_bin_tau)

#: inherited losses of one supernet seed in both JSONs may differ by float noise at most
SAME_RUN_ATOL = 1e-9


def seed_columns(info: dict, metric: str) -> dict[str, dict[str, list]]:
    """variant -> {report key (one per supernet seed) -> its inherited column}."""
    out: dict[str, dict[str, list]] = {}
    for key, rep in info["reports"].items():
        out.setdefault(key.split("_seed")[0], {})[key] = metric_column(rep["per_arch"], "inherited", metric)
    return out


def merge_seeds(short: dict, long: dict) -> tuple[dict[str, dict[str, list]], dict[str, float]]:
    """Union of the supernet seeds of both JSONs; a seed in both must agree (SystemExit
    otherwise). Returns the columns and, per variant, the largest difference where both had it."""
    merged, checked = {}, {}
    for variant in dict.fromkeys([*short, *long]):
        cols = {**short.get(variant, {})}
        for key, col in long.get(variant, {}).items():
            if key in cols:
                d = max((abs(a - b) for a, b in zip(cols[key], col) if a is not None and b is not None),
                        default=0.0)
                if d > SAME_RUN_ATOL:
                    raise SystemExit(f"{key}: its inherited losses differ by {d:.3g} between the two JSONs; "
                                     "give checks of the same supernets")
                checked[variant] = max(checked.get(variant, 0.0), d)
            cols[key] = col
        merged[variant] = cols
    return merged, checked


def against_both(preds: list[list], short: list, long: list, size: list, seed: int = 0,
                 n_boot: int = N_BOOT) -> dict:
    """Kendall and within-bin tau of each prediction column against each reference, and the
    mean over columns of (long - short) with a paired bootstrap interval over archs."""
    keep = _finite(*preds, short, long, size)
    p = np.asarray([[c[k] for k in keep] for c in preds], dtype=float)
    s, lg, sz = (np.asarray([c[k] for k in keep], dtype=float) for c in (short, long, size))
    n = len(keep)

    def taus(i, ref):
        return [kendall(col[i], ref[i]) for col in p]

    def within(i, ref):
        return [within_bin_tau(col[i], ref[i], sz[i])[0] for col in p]

    def diff(i):
        return float(np.mean(taus(i, lg)) - np.mean(taus(i, s)))

    def within_diff(i):
        return float(np.mean(within(i, lg)) - np.mean(within(i, s)))

    full = np.arange(n)
    with warnings.catch_warnings():  # constant resamples: nan, left out of the interval
        warnings.simplefilter("ignore")
        return {"n": n, "columns": len(p),
                "kendall_short": taus(full, s), "kendall_long": taus(full, lg),
                "kendall_diff": diff(full), "kendall_diff_ci": bootstrap_interval(_nan_safe(diff), n, seed, n_boot),
                "within_bin_short": within(full, s), "within_bin_long": within(full, lg),
                "within_bin_pairs": within_bin_tau(s, s, sz)[1], "within_bin_diff": within_diff(full),
                "within_bin_diff_ci": bootstrap_interval(_nan_safe(within_diff), n, seed, n_boot)}


def compare_references(short_info: dict, long_info: dict, seed: int = 0, n_boot: int = N_BOOT) -> dict:
    """The comparison described in the module docstring, as one dict."""
    rows_s = next(iter(short_info["reports"].values()))["per_arch"]
    rows_l = next(iter(long_info["reports"].values()))["per_arch"]
    if [r["arch"] for r in rows_s] != [r["arch"] for r in rows_l]:
        raise SystemExit("the two checks picked other archs; give checks with the same space, data and arch seed")
    summary = next(iter(short_info["reports"].values()))["summary"]
    metric = "test_loss" if "test_loss" in summary else "valid_loss"
    short, long = metric_column(rows_s, "standalone", metric), metric_column(rows_l, "standalone", metric)
    size = [r["weight_mb"] for r in rows_s]
    cols, checked = merge_seeds(seed_columns(short_info, metric), seed_columns(long_info, metric))
    out = {"metric": metric, "n": len(rows_s),
           "references": {"long_vs_short": rank_agreement(long, short, size, seed, n_boot),
                          "long_minus_short": gaps(long, short),
                          "steps": [sorted({r["standalone"].get("steps") for r in rows if r.get("standalone")})
                                    for rows in (rows_s, rows_l)],
                          "ceiling": [next(iter(i["reports"].values()))["summary"][metric].get("reference_ceiling")
                                      for i in (short_info, long_info)]},
           "variants": {}, "proxies": {}}
    for variant, by_seed in cols.items():
        out["variants"][variant] = {"seeds": list(by_seed), "same_seed_max_difference": checked.get(variant),
                                    **against_both(list(by_seed.values()), short, long, size, seed, n_boot)}
    for name in PROXIES:  # bigger predicts better: its negative is a predicted loss
        out["proxies"][name] = against_both([[-r[name] for r in rows_s]], short, long, size, seed, n_boot)
    out["depths"] = depth_agreement([r["arch"] for r in rows_s], short, long, cols)
    return out


def depth_agreement(archs: list[dict], short: list, long: list, cols: dict[str, dict[str, list]]) -> dict:
    """Per layer stack: Kendall tau of its depth with each reference and each variant's
    inherited loss (> 0: deeper, higher loss), the variant's as a mean over its seeds."""
    out = {}
    for stack in [k for k, v in archs[0].items() if isinstance(v, list)]:
        depth = [len(a[stack]) for a in archs]
        if len(set(depth)) < 2:
            continue  # a fixed depth ranks nothing
        out[stack] = {"short": _tau(depth, short), "long": _tau(depth, long),
                      "inherited": {v: float(np.mean([_tau(depth, c) for c in by_seed.values()]))
                                    for v, by_seed in cols.items()}}
    return out


def _tau(x: list, y: list) -> float:
    keep = _finite(x, y)
    return kendall(np.asarray([x[k] for k in keep], dtype=float), np.asarray([y[k] for k in keep], dtype=float))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("short", type=Path, help="result JSON of the check with the shorter standalone reference")
    p.add_argument("long", type=Path, help="result JSON of the check with the longer standalone reference")
    p.add_argument("--out", required=True, help="JSON to write")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    args = p.parse_args(argv)
    infos = []
    for path in (args.short, args.long):
        try:
            infos.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"{path}: not a readable result JSON ({e}); give a benchmarks/fidelity.py --result")
        if not infos[-1].get("reports"):
            raise SystemExit(f"{path}: has no per-variant reports; give a benchmarks/fidelity.py --result")
    from git_version import code_version
    res = {"benchmark": "fidelity_references", "short": str(args.short), "long": str(args.long),
           "bootstrap_seed": args.seed, "code": code_version(), **compare_references(*infos, seed=args.seed)}
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    ref = res["references"]["long_vs_short"]
    print(f"long vs short reference: tau {ref['kendall_tau']:.3f} {ref['kendall_ci']} (n = {ref['n']})")
    for kind in ("variants", "proxies"):
        for name, c in res[kind].items():
            print(f"{name}: tau short {np.mean(c['kendall_short']):.3f} -> long {np.mean(c['kendall_long']):.3f}, "
                  f"diff {c['kendall_diff']:+.3f} {c['kendall_diff_ci']}; within-bin "
                  f"{np.mean(c['within_bin_short']):.3f} -> {np.mean(c['within_bin_long']):.3f}")
    for stack, d in res["depths"].items():
        inh = ", ".join(f"{v} {t:+.2f}" for v, t in d["inherited"].items())
        print(f"{stack} depth vs loss: short {d['short']:+.2f}, long {d['long']:+.2f}; inherited {inh}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
