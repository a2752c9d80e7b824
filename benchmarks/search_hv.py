"""Search quality: hypervolume after 100, 300 and 1,000 trials for NSGA-II, random search and
the HAT-style evolutionary search.

Quality is the synthetic stand-in (``SyntheticQuality``: deterministic, bigger/wider and
higher bits are better), so every sampler sees the same fixed landscape; costs come from
the cost engine. Objectives quality (loss), latency and weight size, all minimised, under a
latency bound (the median latency of random archs). Each objective is normalised by a
fixed ideal/nadir taken from 5,000 random archs plus the extremes, so the hypervolume is a
fraction of the unit cube (higher is better) and comparable across samplers and seeds.

    python benchmarks/search_hv.py --out benchmarks/results/search_hv.json

``--noise SIGMA`` adds a fixed per-arch Gaussian N(0, SIGMA) to the synthetic loss (drawn from
the arch digest, so every sampler and seed sees the same noisy landscape), a stand-in for
BLEU measured on few sentences; the hypervolume is then of the noisy (measured) values, as
on a real supernet, and ``true_hv`` is the same trials' hypervolume with the noise-free loss.

    python benchmarks/search_hv.py --noise 0.4 --out benchmarks/results/search_hv_noisy.json
"""
from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from optuna.trial import TrialState  # noqa: E402

from cosearch.search import search  # noqa: E402
from cosearch.search.hypervolume import hypervolume_history  # noqa: E402
from cosearch.search.objectives import CostModel  # noqa: E402
from cosearch.search.params import Design, ParamSpace, arch_digest  # noqa: E402
from cosearch.search.quality import SyntheticQuality  # noqa: E402
from cosearch.space import SearchSpace  # noqa: E402

CHECKPOINTS = (100, 300, 1000)


def bounds(space: SearchSpace, hw: str, n: int = 5000):
    archs = [space.smallest(), space.largest()] + [space.sample(np.random.default_rng(i)) for i in range(n)]
    m = CostModel(space, hw, "decode")([Design(a) for a in archs])
    pts = np.column_stack([SyntheticQuality(space)(archs)["loss"], m["latency_ms"], m["size_mb"]])
    return pts.min(0), pts.max(0), float(np.median(m["latency_ms"][2:]))


class NoisySynthetic:
    """SyntheticQuality plus a fixed per-arch N(0, sigma) drawn from the arch digest."""

    name = "synthetic-noisy"
    synthetic = True

    def __init__(self, space: SearchSpace, sigma: float):
        self.base, self.sigma = SyntheticQuality(space), sigma

    def __call__(self, archs):
        z = [np.random.default_rng(int(hashlib.sha1(("n" + arch_digest(a)).encode()).hexdigest()[:12], 16))
             .standard_normal() for a in archs]
        return {"loss": self.base(archs)["loss"] + self.sigma * np.asarray(z)}


def one_run(space, hw, sampler, seed, bound, ideal, nadir, trials, noise=0.0, population=50):
    t = time.perf_counter()
    quality = NoisySynthetic(space, noise) if noise > 0 else "synthetic"
    batch = population if sampler == "nsga2" else 50 if sampler != "evolution" else 100
    r = search(hw=hw, space=space, quality=quality, out=None, storage="memory", write=False, plots=False,
               progress=False, trials=trials, sampler=sampler, seed=seed, latency_max=bound,
               population=population, batch=batch)
    secs = time.perf_counter() - t
    ts = sorted(r.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    vals = (np.array([t.values for t in ts]) - ideal) / (nadir - ideal)
    feas = np.array([all(v <= 0 for v in t.constraints.values()) for t in ts])
    at = [c for c in CHECKPOINTS if c <= len(ts)]
    hv = hypervolume_history(vals, feas, np.ones(3), at=at)
    out = {"sampler": sampler, "seed": seed, "seconds": round(secs, 1), "feasible_fraction": float(feas.mean()),
           "hv": {str(c): round(float(h), 5) for c, h in zip(at, hv)}}
    if noise > 0:  # the same trials scored with the noise-free loss
        ps = ParamSpace.build(space)
        true = quality.base([ps.design(t.params).arch for t in ts])["loss"]
        vals[:, 0] = (true - ideal[0]) / (nadir[0] - ideal[0])
        thv = hypervolume_history(vals, feas, np.ones(3), at=at)
        out["true_hv"] = {str(c): round(float(h), 5) for c, h in zip(at, thv)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="multi30k")
    ap.add_argument("--hw", default="zcu102")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--samplers", default="nsga2,random,evolution")
    ap.add_argument("--noise", type=float, default=0.0,
                    help="per-arch Gaussian noise (sigma, loss units) on the synthetic loss")
    ap.add_argument("--population", type=int, default=50, help="NSGA-II population (and its batch)")
    ap.add_argument("--out")
    a = ap.parse_args()
    space = SearchSpace.load(a.space)
    ideal, nadir, bound = bounds(space, a.hw)
    runs = []
    for sampler in a.samplers.split(","):
        for seed in range(a.seeds):
            runs.append(one_run(space, a.hw, sampler, seed, bound, ideal, nadir, a.trials, a.noise, a.population))
            print(runs[-1], flush=True)
    def mean_std(rs, key):  # per checkpoint, over seeds
        return {c: {"mean": round(float(np.mean([r[key][c] for r in rs])), 5),
                    "std": round(float(np.std([r[key][c] for r in rs])), 5)} for c in rs[0][key]}

    summary = {}
    for sampler in a.samplers.split(","):
        rs = [r for r in runs if r["sampler"] == sampler]
        summary[sampler] = mean_std(rs, "hv")
        if a.noise > 0:
            summary[sampler]["true_hv"] = mean_std(rs, "true_hv")
    result = {"benchmark": "search_hv", "space": a.space, "hw": a.hw, "scenario": "decode",
              "noise_sigma": a.noise, "nsga2_population": a.population,
              "objectives": "quality (synthetic loss), latency_ms, size_mb; normalised to [0,1] by fixed "
                            "ideal/nadir of 5,000 random archs",
              "latency_max_ms": bound, "ideal": ideal.tolist(), "nadir": nadir.tolist(), "summary": summary,
              "runs": runs, "machine": f"{platform.machine()} {os.cpu_count()} cores, Python "
                                       f"{platform.python_version()}, BLAS threads 1"}
    print(json.dumps(summary, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
