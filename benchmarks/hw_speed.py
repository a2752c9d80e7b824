"""Speed of the cost engine: full-architecture evaluations per second on one CPU core.

    python benchmarks/hw_speed.py [--space multi30k] [--n 100000] [--out benchmarks/results/hw_speed.json]

Times ``cost_batch`` from ``Arch`` objects (what the search passes) and from pre-extracted
``Genes``, after one warm-up call that builds the layer tables, and the per-operator
``cost`` for comparison. Pinned to one core. Goal (issue 3): >= 100,000 evaluations/s.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cosearch.hardware import Genes, cost, cost_batch, load_hardware  # noqa: E402
from cosearch.space import SearchSpace  # noqa: E402


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "load_average_at_start": os.getloadavg()[0]}


def best_rate(fn, n, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="multi30k")
    p.add_argument("--hw", nargs="+", default=["zcu102", "tpu_like"])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--chunk", type=int, default=10_000, help="archs per cost_batch call")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/hw_speed.json")
    p.add_argument("--label", default="", help="machine label for the README row")
    a = p.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    space = SearchSpace.load(a.space)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(a.n)]
    chunks = [archs[i:i + a.chunk] for i in range(0, a.n, a.chunk)]
    results = []
    for name in a.hw:
        hw = load_hardware(name)
        for scenario in ("prefill", "decode"):
            t = time.perf_counter()
            cost_batch(space, chunks[0], hw, scenario)  # builds and caches the layer tables
            warmup = time.perf_counter() - t
            from_archs = best_rate(lambda: [cost_batch(space, c, hw, scenario) for c in chunks], a.n, a.repeats)
            genes = [Genes.from_archs(space, c) for c in chunks]
            from_genes = best_rate(lambda: [cost_batch(space, g, hw, scenario) for g in genes], a.n, a.repeats)
            k = 20
            per_op = best_rate(lambda: [cost(space, x, hw, scenario) for x in archs[:k]], k, 1)
            row = {"hw": name, "scenario": scenario, "evals_per_s_from_archs": round(from_archs),
                   "evals_per_s_from_genes": round(from_genes), "per_operator_evals_per_s": round(per_op, 1),
                   "table_build_s": round(warmup, 4), "goal_met": from_archs >= 100_000}
            results.append(row)
            print(json.dumps(row))
    out = {"benchmark": "hw_speed", "space": a.space, "n_archs": a.n, "chunk": a.chunk, "one_core": True,
           "label": a.label, "machine": machine(), "results": results}
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
