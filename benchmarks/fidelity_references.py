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
* per variant and per proxy, ``beats_short``: its tau against the longer reference minus
  the shorter reference's own tau against it (mean over seeds, paired bootstrap interval):
  does one supernet rank the long runs better than training every arch for the short budget
  does (the obvious baseline a user has without a supernet)?
* each reference's noise ceiling as its check reported it;
* ``axes``: for each axis of the arch (a stack's depth, the mean of a per-layer field such
  as ``encoder.ffn_dim``, a top-level number such as ``decoder_embed_dim``), Kendall tau of
  the axis with each reference's loss and each variant's inherited loss (> 0: bigger, worse),
  the reference's shift long - short and each variant's tau minus the long reference's, both
  with paired bootstrap intervals: which axes the references, and the supernet, weigh
  differently.

Usage: ``python benchmarks/fidelity_references.py SHORT.json LONG.json --out OUT.json``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cosearch.fidelity.axes import axis_columns  # noqa: E402
from cosearch.fidelity.proxies import PROXIES  # noqa: E402
from cosearch.fidelity.report import bin_axis, metric_column  # noqa: E402
from cosearch.fidelity.stats import N_BOOT, gaps, paired_tau_difference, rank_agreement  # noqa: E402
from fidelity import variant_of  # noqa: E402  (benchmarks/fidelity.py names the reports)

#: inherited losses of one supernet seed in both JSONs may differ by float noise at most
SAME_RUN_ATOL = 1e-9


def seed_columns(info: dict, metric: str) -> dict[str, dict[str, list]]:
    """variant -> {report key (one per supernet seed) -> its inherited column}."""
    out: dict[str, dict[str, list]] = {}
    for key, rep in info["reports"].items():
        out.setdefault(variant_of(key), {})[key] = metric_column(rep["per_arch"], "inherited", metric)
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
    mean over columns of (long - short) with a paired bootstrap interval over archs;
    ``beats_short``: the columns' mean tau against the long reference minus the short
    reference's own, paired the same way."""
    d = paired_tau_difference([(p, long) for p in preds], [(p, short) for p in preds], size, seed, n_boot)
    rename = {"kendall_a": "kendall_long", "kendall_b": "kendall_short", "within_bin_a": "within_bin_long",
              "within_bin_b": "within_bin_short", "seeds_a": "columns"}
    out = {rename.get(k, k): v for k, v in d.items() if k not in ("seeds_b", "every_seed_of_a_above_b")}
    beats = paired_tau_difference([(p, long) for p in preds], [(short, long)], size, seed, n_boot)
    out["beats_short"] = {k: beats[k] for k in ("kendall_diff", "kendall_diff_ci", "within_bin_diff",
                                                 "within_bin_diff_ci") if k in beats}
    return out


def compare_references(short_info: dict, long_info: dict, seed: int = 0, n_boot: int = N_BOOT) -> dict:
    """The comparison described in the module docstring, as one dict."""
    rows_s = next(iter(short_info["reports"].values()))["per_arch"]
    rows_l = next(iter(long_info["reports"].values()))["per_arch"]
    if [r["arch"] for r in rows_s] != [r["arch"] for r in rows_l]:
        raise SystemExit("the two checks picked other archs; give checks with the same space, data and arch seed")
    summaries = [next(iter(i["reports"].values()))["summary"] for i in (short_info, long_info)]
    metric = "test_loss" if all("test_loss" in m for m in summaries) else "valid_loss"
    if not all(metric in m for m in summaries):
        raise SystemExit("the two checks share no metric (test_loss or valid_loss); give checks of one task")
    short, long = metric_column(rows_s, "standalone", metric), metric_column(rows_l, "standalone", metric)
    size = bin_axis(rows_s)
    cols, checked = merge_seeds(seed_columns(short_info, metric), seed_columns(long_info, metric))
    # archs with both references (a reference read while its parts are trained has gaps)
    out = {"metric": metric, "n": sum(a is not None and b is not None for a, b in zip(short, long)),
           "references": {"long_vs_short": rank_agreement(long, short, size, seed, n_boot),
                          "long_minus_short": gaps(long, short),
                          "steps": [sorted({r["standalone"]["steps"] for r in rows
                                            if (r.get("standalone") or {}).get("steps") is not None})
                                    for rows in (rows_s, rows_l)],
                          "ceiling": [next(iter(i["reports"].values()))["summary"][metric].get("reference_ceiling")
                                      for i in (short_info, long_info)]},
           "variants": {}, "proxies": {}}
    for variant, by_seed in cols.items():
        out["variants"][variant] = {"seeds": list(by_seed), "same_seed_max_difference": checked.get(variant),
                                    **against_both(list(by_seed.values()), short, long, size, seed, n_boot)}
    for name in PROXIES:  # bigger predicts better: its negative is a predicted loss
        out["proxies"][name] = against_both([[-r[name] for r in rows_s]], short, long, size, seed, n_boot)
    out["axes"] = axis_agreement([r["arch"] for r in rows_s], short, long, cols, seed, n_boot)
    return out


def axis_agreement(archs: list[dict], short: list, long: list, cols: dict[str, dict[str, list]], seed: int = 0,
                   n_boot: int = N_BOOT) -> dict:
    """Per arch axis: tau with each reference and with each variant's inherited loss (mean
    over its seeds); ``long_minus_short`` (how the reference moved) and, per variant,
    ``minus_long`` (the variant's tau minus the long reference's: where it still disagrees),
    each a paired bootstrap difference over archs. An axis with one value is left out."""
    out = {}
    for axis, x in axis_columns(archs).items():
        moved = paired_tau_difference([(x, long)], [(x, short)], None, seed, n_boot)
        inh = {}
        for variant, by_seed in cols.items():
            d = paired_tau_difference([(x, c) for c in by_seed.values()], [(x, long)], None, seed, n_boot)
            inh[variant] = {"tau": _mean(d.get("kendall_a")), "minus_long": d["kendall_diff"],
                            "minus_long_ci": d["kendall_diff_ci"]}
        out[axis] = {"short": _mean(moved.get("kendall_b")), "long": _mean(moved.get("kendall_a")),
                     "long_minus_short": moved["kendall_diff"], "long_minus_short_ci": moved["kendall_diff_ci"],
                     "inherited": inh}
    return out


def _mean(taus: list | None) -> float | None:
    vals = [t for t in (taus or []) if t is not None]
    return float(np.mean(vals)) if vals else None


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
    print(f"long vs short reference: tau {_f(ref['kendall_tau'])} {_fmt(ref['kendall_ci'])} (n = {ref['n']})")
    for kind in ("variants", "proxies"):
        for name, c in res[kind].items():
            print(f"{name}: tau short {_f(_mean(c.get('kendall_short')))} -> long {_f(_mean(c.get('kendall_long')))}, "
                  f"diff {_f(c['kendall_diff'])} {_fmt(c['kendall_diff_ci'])}; within-bin "
                  f"{_f(_mean(c.get('within_bin_short')))} -> {_f(_mean(c.get('within_bin_long')))}; "
                  f"minus the short reference against the long one {_f(c['beats_short'].get('kendall_diff'))} "
                  f"{_fmt(c['beats_short'].get('kendall_diff_ci', [None, None]))}")
    first = next(iter(res["variants"]), None)
    by_gap = sorted(res["axes"].items(), key=lambda kv: -abs(kv[1]["inherited"].get(first, {}).get("minus_long") or 0))
    for axis, d in by_gap:  # where the first variant disagrees most with the long reference first
        inh = "; ".join(f"{v} {_f(t['tau'])} ({_f(t['minus_long'])} {_fmt(t['minus_long_ci'])})"
                        for v, t in d["inherited"].items())
        print(f"{axis} vs loss: short {_f(d['short'])}, long {_f(d['long'])} "
              f"({_f(d['long_minus_short'])} {_fmt(d['long_minus_short_ci'])}); inherited {inh}")
    return 0


def _f(v: float | None) -> str:
    return "?" if v is None else f"{v:+.3f}"


def _fmt(ci: list) -> str:
    return "[" + ", ".join("?" if v is None else f"{v:+.2f}" for v in ci) + "]"


if __name__ == "__main__":
    sys.exit(main())
