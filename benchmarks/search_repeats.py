"""How often a sampler repeats a known arch, and what it costs: one in-memory search with
synthetic quality on ``multi30k`` (zcu102 decode, latency bound 16.04 ms, batches of 50),
printing complete trials, Optuna trials asked (repeats are failed and replaced), replaced
repeats (``fallbacks``), seconds and hypervolume as one JSON line.

    python benchmarks/search_repeats.py tpe 300 0      # SAMPLER TRIALS SEED
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from cosearch.search import SearchConfig, search  # noqa: E402
from cosearch.search.params import trial_attrs  # noqa: E402
from cosearch.search.quality import SyntheticQuality  # noqa: E402
from cosearch.space import SearchSpace  # noqa: E402


def main(sampler: str, trials: int, seed: int) -> dict:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.load("multi30k")
    t = time.perf_counter()
    r = search(config=SearchConfig(
        space="multi30k", hw="zcu102", quality=SyntheticQuality(space), objectives="quality,latency,size",
        latency_max=16.04, trials=trials, sampler=sampler, seed=seed, storage="memory", write=False,
        plots=False, progress=False, population=50, batch=50))
    secs = time.perf_counter() - t
    ts = r.study.trials
    return {"sampler": sampler, "seed": seed, "complete": sum(1 for x in ts if x.state.name == "COMPLETE"),
            "asked": len(ts), "fallbacks": sum(1 for x in ts if trial_attrs(x).get("fallback")),
            "seconds": round(secs, 1), "hv": r.hypervolume}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
