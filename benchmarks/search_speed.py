"""Speed of the co-search loop itself: trials per second with the cost engine and a predictor.

Goal (issue 5): 10,000 trials with the cost engine and a quality predictor in under 60 s on
one core. Quality comes from a predictor (ensemble MLP) fitted on 300 archs scored by the
synthetic quality, so no supernet is measured: what is timed is proposing, costing
(``cost_batch``), predicting and recording trials in an Optuna study.

Paths timed:
* ``evolution``: HAT-style evolution, batches of 100, trials recorded with one
  ``study.add_trials`` per batch, in-memory storage (the 10,000-trial run);
* ``nsga2`` / ``random``: Optuna's samplers through ``study.ask``/``tell``, in-memory,
  fewer trials (each live trial costs milliseconds of Optuna bookkeeping per parameter);
* ``sqlite``: evolution and NSGA-II on the default SQLite file (WAL), 200 trials: Optuna's
  RDB storage writes every parameter of every trial in its own statements (58 parameters
  here), which costs ~0.1-0.3 s per trial, whatever the sampler. For big fast searches use
  ``--storage memory`` (nothing kept) or ``journal:PATH``; with a supernet (~1 s per
  measured arch) the SQLite overhead does not matter.

    python benchmarks/search_speed.py --out benchmarks/results/search_speed.json
"""
from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")  # one core, as the goal says

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cosearch.search import search  # noqa: E402
from cosearch.search.predictor import QualityPredictor, cross_validate  # noqa: E402
from cosearch.search.quality import PredictedQuality, SyntheticQuality  # noqa: E402
from cosearch.space import SearchSpace  # noqa: E402


def fitted_predictor(space: SearchSpace, n: int = 300, seed: int = 0):
    archs = [space.sample(np.random.default_rng(seed + i)) for i in range(n)]
    X, y = space.encode_many(archs), SyntheticQuality(space)(archs)["loss"]
    t = time.perf_counter()
    p = QualityPredictor(seed=seed).fit(X, y)
    fit_s = time.perf_counter() - t
    return p, fit_s, cross_validate(X, y, folds=5, seed=seed)


def timed(space, quality, sampler, trials, storage, out, hw, latency_max):
    t = time.perf_counter()
    r = search(hw=hw, space=space, quality=quality, out=out, trials=trials, sampler=sampler, storage=storage,
               latency_max=latency_max, progress=False, plots=False, write=storage != "memory", seed=0,
               batch=100)
    s = time.perf_counter() - t
    return {"sampler": sampler, "storage": "sqlite" if storage is None else storage, "trials": r.trials,
            "seconds": round(s, 2), "trials_per_s": round(r.trials / s, 1), "feasible": r.feasible}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="multi30k")
    ap.add_argument("--hw", default="zcu102")
    ap.add_argument("--trials", type=int, default=10000)
    ap.add_argument("--optuna-trials", type=int, default=1000)
    ap.add_argument("--sqlite-trials", type=int, default=200)
    ap.add_argument("--out")
    a = ap.parse_args()
    space = SearchSpace.load(a.space)
    pred, fit_s, cv = fitted_predictor(space)
    quality = PredictedQuality(space, pred)
    from cosearch.search.objectives import CostModel
    from cosearch.search.params import Design
    lat = CostModel(space, a.hw, "decode")([Design(space.sample(i)) for i in range(500)])["latency_ms"]
    bound = float(np.median(lat))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(timed(space, quality, "evolution", a.trials, "memory", None, a.hw, bound))
        print(rows[-1], flush=True)
        for s in ("nsga2", "random"):
            rows.append(timed(space, quality, s, a.optuna_trials, "memory", None, a.hw, bound))
            print(rows[-1], flush=True)
        for s in ("evolution", "nsga2"):
            rows.append(timed(space, quality, s, a.sqlite_trials, None, Path(tmp) / s, a.hw, bound))
            print(rows[-1], flush=True)
    result = {"benchmark": "search_speed", "space": a.space, "hw": a.hw, "scenario": "decode",
              "latency_max_ms": bound, "objectives": "quality,latency,size",
              "predictor": {"fit_s_300": round(fit_s, 3), "cv": cv}, "runs": rows,
              "goal": "10,000 trials < 60 s on one core",
              "met": rows[0]["trials"] >= 10000 and rows[0]["seconds"] < 60,
              "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
                         f"BLAS threads 1, load average {os.getloadavg()[0]:.1f} at the end"}
    print(json.dumps(result, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
