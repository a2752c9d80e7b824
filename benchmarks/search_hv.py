"""Search quality under measurement noise: hypervolume after 300 and 1,000 trials per sampler
setting, 3 seeds, on the synthetic landscape (the real supernets: ``search_hv_real.py``).

Quality is the synthetic loss (``SyntheticQuality``) plus measurement noise
(``NoisySynthetic``: measurement r of an arch adds sigma * z(arch, r), so a repeat on fresh
data is a fresh draw; r = 0 is the noise of the earlier ``--noise`` runs). Costs come from
the cost engine. Objectives loss, latency and weight size, all minimised, under a latency
bound (the median latency of random archs); each normalised by a fixed ideal/nadir taken
from 5,000 random archs plus the extremes, reference point (1, 1, 1): the hypervolume is a
fraction of the unit cube, comparable across settings and seeds.

Scores after the first n trials (n = 300, 1,000), each over seeds (mean, sample std, n):

* ``hv_front``: the front the search reports (its feasible trials not dominated by their
  recorded values: means where measured again), scored with the noise-free loss - the
  "large held-out evaluation" of what the search hands over. The headline score.
* ``hv_oracle``: every feasible trial scored noise-free (what it explored, if an oracle
  picked the front);
* ``hv_recorded``: the recorded (noisy) values, flattered by lucky draws;
* ``measurements``: quality measurements made (trials + repeats).

A setting is ``sampler[:rR][:mM]``: ``nsga2:r3`` measures front candidates 3 times in all
(``search(..., repeats=3)``), ``:m2`` a margin of 2 standard errors. ``--goal A,B`` checks
hv_front(A) >= mean + 2 std of hv_front(B) at every checkpoint.

    python benchmarks/search_hv.py --noise 0.4 --settings random,nsga2,nsga2:r3 --goal nsga2:r3,random \\
        --out benchmarks/results/search_hv_noise.json
"""
from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from optuna.trial import TrialState  # noqa: E402

from cosearch.search import search  # noqa: E402
from cosearch.search.front import pareto_mask  # noqa: E402
from cosearch.search.hypervolume import hypervolume  # noqa: E402
from cosearch.search.objectives import CostModel  # noqa: E402
from cosearch.search.params import Design, ParamSpace, trial_attrs, trial_params  # noqa: E402
from cosearch.search.quality import NoisySynthetic, SyntheticQuality  # noqa: E402
from cosearch.space import SearchSpace  # noqa: E402

CHECKPOINTS = (300, 1000)


def bounds(space: SearchSpace, hw: str, n: int = 5000):
    archs = [space.smallest(), space.largest()] + [space.sample(np.random.default_rng(i)) for i in range(n)]
    m = CostModel(space, hw, "decode")([Design(a) for a in archs])
    pts = np.column_stack([SyntheticQuality(space)(archs)["loss"], m["latency_ms"], m["size_mb"]])
    return pts.min(0), pts.max(0), float(np.median(m["latency_ms"][2:]))


def parse_setting(text: str) -> dict:
    """"nsga2:r3:m2:p24" -> {"sampler": "nsga2", "repeats": 3, "repeat_margin": 2.0, "population": 24}
    (``population`` only when given)."""
    parts = text.split(":")
    out = {"sampler": parts[0], "repeats": 1, "repeat_margin": 1.0}
    for p in parts[1:]:
        if p.startswith("r"):
            out["repeats"] = int(p[1:])
        elif p.startswith("m"):
            out["repeat_margin"] = float(p[1:])
        elif p.startswith("p"):
            out["population"] = int(p[1:])
        else:
            raise SystemExit(f"setting {text!r}: parts are rN (repeats), mX (margin) and pN (NSGA-II population)")
    return out


def scores(recorded: np.ndarray, true: np.ndarray, feasible: np.ndarray, n: int) -> dict:
    """The three hypervolumes of the first ``n`` trials (normalised, reference 1)."""
    ref = np.ones(recorded.shape[1])
    rec, tru, ok = recorded[:n][feasible[:n]], true[:n][feasible[:n]], feasible[:n]
    if not ok.any():
        return {"hv_front": 0.0, "hv_oracle": 0.0, "hv_recorded": 0.0, "front": 0}
    front = pareto_mask(rec)
    return {"hv_front": hypervolume(tru[front], ref), "hv_oracle": hypervolume(tru, ref),
            "hv_recorded": hypervolume(rec, ref), "front": int(front.sum())}


def one_run(space, hw, setting: str, seed, bound, ideal, nadir, trials, noise, population=50):
    cfg = parse_setting(setting)
    population = cfg.pop("population", population)
    t = time.perf_counter()
    quality = NoisySynthetic(space, noise) if noise > 0 else "synthetic"
    batch = population if cfg["sampler"] == "nsga2" else 50 if cfg["sampler"] != "evolution" else 100
    r = search(hw=hw, space=space, quality=quality, out=None, storage="memory", write=False, plots=False,
               progress=False, trials=trials, seed=seed, latency_max=bound, population=population, batch=batch,
               **cfg)
    secs = time.perf_counter() - t
    ts = sorted(r.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    recorded = (np.array([t.values for t in ts]) - ideal) / (nadir - ideal)
    feasible = np.array([all(v <= 0 for v in t.constraints.values()) for t in ts])
    ps = ParamSpace.build(space)
    archs = [ps.design(trial_params(t)).arch for t in ts]
    true = recorded.copy()
    base = quality.true_loss(archs) if noise > 0 else SyntheticQuality(space)(archs)["loss"]
    true[:, 0] = (base - ideal[0]) / (nadir[0] - ideal[0])
    n_meas = np.cumsum([(trial_attrs(t).get("metrics") or {}).get("loss_n") or 1 for t in ts])
    out = {"setting": setting, "seed": seed, "seconds": round(secs, 1), "trials": len(ts),
           "feasible_fraction": round(float(feasible.mean()), 3)}
    for c in CHECKPOINTS:
        if c <= len(ts):
            out[str(c)] = {k: (round(float(v), 5) if isinstance(v, float) else v)
                           for k, v in scores(recorded, true, feasible, c).items()}
            out[str(c)]["measurements"] = int(n_meas[c - 1])
    return out


def mean_std(values, digits: int = 5) -> dict:
    """Mean and sample standard deviation (ddof=1: over 3 seeds the population std is 18%
    smaller, which would lower the bar of ``goal``)."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(v.mean()), digits),
            "std": round(float(v.std(ddof=1)), digits) if len(v) > 1 else None, "n": len(v)}


def summarize(runs: list, settings: list) -> dict:
    summary = {}
    for s in settings:
        rs = [r for r in runs if r["setting"] == s]
        summary[s] = {c: {k: mean_std([r[c][k] for r in rs])
                          for k in ("hv_front", "hv_oracle", "hv_recorded", "measurements")}
                      for c in map(str, CHECKPOINTS) if all(c in r for r in rs)}
    return summary


def goal(summary: dict, better: str, base: str) -> dict:
    """hv_front(better) >= mean + 2 std (sample std) of hv_front(base), per checkpoint."""
    out = {}
    for c, v in summary[better].items():
        b = summary[base][c]["hv_front"]
        if b["std"] is None:  # one seed: no spread to check against
            out[c] = {"value": v["hv_front"]["mean"], "needed": None, "met": None}
            continue
        need = b["mean"] + 2 * b["std"]
        out[c] = {"value": v["hv_front"]["mean"], "needed": round(need, 5), "met": v["hv_front"]["mean"] >= need}
    return out


def difference_interval(runs: list, better: str, base: str, key: str = "hv_front",
                        checkpoints=CHECKPOINTS) -> dict:
    """Per checkpoint: mean hv(better) - mean hv(base) with its 95% Welch t interval (unequal
    variances; a percentile bootstrap covers only ~80% at 3 seeds and ~92% at 10). None under
    2 seeds per setting; the difference itself where neither setting varies."""
    from scipy.stats import ttest_ind
    out = {}
    for c in map(str, checkpoints):
        a = np.array([r[c][key] for r in runs if r["setting"] == better and c in r], dtype=np.float64)
        b = np.array([r[c][key] for r in runs if r["setting"] == base and c in r], dtype=np.float64)
        if len(a) < 2 or len(b) < 2:
            continue
        d = float(a.mean() - b.mean())
        if a.std() == 0 and b.std() == 0:
            lo = hi = d
        else:
            ci = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
            lo, hi = float(ci.low), float(ci.high)
        out[c] = {"difference": round(d, 5), "ci95": [round(lo, 5), round(hi, 5)], "method": "Welch t",
                  "n": [len(a), len(b)]}
    return out


def goal_record(summary: dict, spec: str, runs: list | None = None) -> dict:
    """The ``goal`` entry of a results file for ``--goal A,B`` (with ``runs``: the difference
    of the means with its 95% Welch interval too)."""
    better, base = spec.split(",")
    rec = {"rule": f"hv_front({better}) >= mean + 2 std (sample std) of hv_front({base})",
           "checkpoints": goal(summary, better, base)}
    if runs is not None:
        rec["difference"] = difference_interval(runs, better, base)
    return rec


def resummarize(path: Path, goal_spec: str | None) -> None:
    """Recompute ``summary`` (and ``goal``) from the file's ``runs``: no search runs again."""
    result = json.loads(path.read_text())
    settings = list(dict.fromkeys(r["setting"] for r in result["runs"]))
    result["summary"] = summarize(result["runs"], settings)
    result.pop("goal", None)
    if goal_spec:
        result["goal"] = goal_record(result["summary"], goal_spec, result["runs"])
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("summary", "goal") if k in result}, indent=2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="multi30k")
    ap.add_argument("--hw", default="zcu102")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--settings", default="random,nsga2,nsga2:r3")
    ap.add_argument("--noise", type=float, default=0.4, help="sigma of one measurement (loss units)")
    ap.add_argument("--population", type=int, default=50, help="NSGA-II population (and its batch)")
    ap.add_argument("--goal", help="A,B: check hv_front(A) >= mean + 2 std of hv_front(B)")
    ap.add_argument("--out")
    ap.add_argument("--resummarize", metavar="JSON",
                    help="recompute the summary (and --goal) of a results file from its stored runs, in place")
    a = ap.parse_args()
    if a.resummarize:
        return resummarize(Path(a.resummarize), a.goal)
    space = SearchSpace.load(a.space)
    ideal, nadir, bound = bounds(space, a.hw)
    settings = a.settings.split(",")
    runs = []
    for setting in settings:
        for seed in range(a.seeds):
            runs.append(one_run(space, a.hw, setting, seed, bound, ideal, nadir, a.trials, a.noise, a.population))
            print(json.dumps(runs[-1]), flush=True)
    summary = summarize(runs, settings)
    result = {"benchmark": "search_hv", "space": a.space, "hw": a.hw, "scenario": "decode",
              "noise_sigma": a.noise, "nsga2_population": a.population, "seeds": list(range(a.seeds)),
              "objectives": "quality (synthetic loss + noise), latency_ms, size_mb; normalised to [0,1] by fixed "
                            "ideal/nadir of 5,000 random archs; reference point (1, 1, 1)",
              "latency_max_ms": bound, "ideal": ideal.tolist(), "nadir": nadir.tolist(), "summary": summary,
              "runs": runs, "machine": f"{platform.machine()} {os.cpu_count()} cores, Python "
                                       f"{platform.python_version()}, BLAS threads 1"}
    if a.goal:
        result["goal"] = goal_record(summary, a.goal, runs)
    print(json.dumps({k: result[k] for k in ("summary", "goal") if k in result}, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
