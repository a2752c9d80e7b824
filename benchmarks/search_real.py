"""Co-search on a trained supernet: measured archs/s, and hypervolume per sampler.

With a trained run folder (multi30k on a GPU; a tiny run on CPU for a check):

1. throughput: archs/s measuring validation loss (``--max-batches`` batches), and archs/s
   measuring BLEU with batched greedy decoding on the first ``--bleu-sentences`` validation
   sentences, both with ``--workers`` processes (one supernet each) sharing the device;
2. search quality: for each seed and sampler (NSGA-II, TPE, random, HAT-style evolution) a
   search of ``--trials`` measured trials, objectives BLEU (translation; validation loss for
   a language model) x latency x weight size on zcu102 decode, latency bound at the median
   latency of 2,000 random archs; hypervolume after 100 / 300 / 1,000 trials against a FIXED
   reference point recorded in the JSON (BLEU 0, 1.1 x the largest arch's latency and size;
   loss: ln vocab), and the wall time per 1,000 trials.

All searches share one measurement cache (an arch measured for one sampler is not measured
again for another), so ``measured_new`` says how many archs each run really measured.
``--time-budget`` bounds the whole script: each run gets an equal share of what is left for
the samplers of its seed and stops proposing when that is spent (``stopped_early``), and
the JSON in ``--out`` is rewritten after every run, so partial results are kept. ``asked``
counts Optuna trials including proposals failed at once as duplicates of a known arch.

    python benchmarks/search_real.py /tmp/m30k_run --gpu --workers 4 --out benchmarks/results/search_real
    python benchmarks/search_real.py RUN --out /tmp/sr --trials 30 --checkpoints 10,30 --seeds 1  # CPU check
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

from cosearch.search import SearchConfig, search  # noqa: E402
from cosearch.search.front import to_minimize  # noqa: E402
from cosearch.search.hypervolume import hypervolume_history  # noqa: E402
from cosearch.search.objectives import CostModel  # noqa: E402
from cosearch.search.params import Design  # noqa: E402
from cosearch.search.quality import CachedQuality, MeasureSettings, SupernetSpec  # noqa: E402
from cosearch.search.workers import ProcessPool, SplitSource  # noqa: E402


def source(run: str, settings: MeasureSettings, workers: int):
    """(quality source, pool to close): in-process for one worker, else worker processes."""
    spec = SupernetSpec(run, settings)
    if workers == 1:
        return spec(), None
    pool = ProcessPool(spec, workers)
    return SplitSource(pool, spec.name), pool


def throughput(run: str, settings: MeasureSettings, workers: int, archs: list, deadline: float) -> dict:
    t = time.perf_counter()
    src, pool = source(run, settings, workers)
    load_s = time.perf_counter() - t
    try:
        src(archs[: max(1, workers)])  # warm-up: first kernels, allocator
        done, t = 0, time.perf_counter()
        chunk = max(1, workers) * 4
        while done < len(archs) and time.perf_counter() < deadline:
            src(archs[done: done + chunk])
            done += len(archs[done: done + chunk])
        secs = time.perf_counter() - t
    finally:
        if pool is not None:
            pool.close()
    return {"archs": done, "seconds": round(secs, 2), "archs_per_s": round(done / secs, 3) if secs else None,
            "load_s": round(load_s, 1), "workers": workers}


def hv_at(study, objectives_dirs, reference, checkpoints):
    ts = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    if not ts:
        return {}, 0
    loss = to_minimize(np.array([t.values for t in ts]), objectives_dirs)
    feas = np.array([all(v <= 0 for v in t.constraints.values()) for t in ts])
    at = [c for c in checkpoints if c <= len(ts)]
    hv = hypervolume_history(loss, feas, reference, at=at)
    return {str(c): round(float(h), 6) for c, h in zip(at, hv)}, len(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="trained run folder (cosearch train)")
    ap.add_argument("--out", required=True, help="folder for search_real.json")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--workers", type=int, default=1, help="measuring processes (one supernet each)")
    ap.add_argument("--hw", default="zcu102")
    ap.add_argument("--samplers", default="nsga2,evolution,random,tpe",
                    help="in this order within each seed (TPE last: its ask costs most)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds FIRST .. FIRST+SEEDS-1 (one seed per process: "
                    "run several processes and `merge` their JSONs)")
    ap.add_argument("--no-throughput", action="store_true", help="skip part 1 (archs/s)")
    ap.add_argument("--no-search", action="store_true", help="skip part 2 (hypervolume per sampler)")
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--checkpoints", default="100,300,1000")
    ap.add_argument("--max-batches", type=int, default=20, help="validation batches per loss measurement")
    ap.add_argument("--max-tokens", type=int, default=4096, help="tokens per validation batch")
    ap.add_argument("--bleu-sentences", type=int, default=500, help="sentences for the BLEU throughput")
    ap.add_argument("--search-bleu-sentences", type=int, default=200, help="sentences for BLEU inside searches")
    ap.add_argument("--throughput-archs", type=int, default=200, help="archs per throughput measurement")
    ap.add_argument("--throughput-seconds", type=float, default=40, help="at most this long per throughput")
    ap.add_argument("--time-budget", type=float, default=480, help="seconds for the whole script")
    a = ap.parse_args()
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_start = time.perf_counter()
    deadline = t_start + a.time_budget
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from cosearch.training.rundir import read_config, space_of
    cfg = read_config(a.run)
    space = space_of(cfg)
    translation = cfg.get("task") == "translation"
    objectives = "bleu,latency,size" if translation else "quality,latency,size"
    device = "cuda" if a.gpu else "cpu"
    checkpoints = [int(c) for c in a.checkpoints.split(",")]

    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(2000)]
    lat = CostModel(space, a.hw, "decode")([Design(x) for x in archs])["latency_ms"]
    bound = float(np.median(lat))

    result = {"benchmark": "search_real", "run": str(Path(a.run).resolve()), "space": space.name,
              "task": cfg.get("task"), "hw": a.hw, "scenario": "decode", "objectives": objectives,
              "latency_max_ms": bound, "device": device, "workers": a.workers, "trials": a.trials,
              "checkpoints": checkpoints, "time_budget_s": a.time_budget,
              "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
              "throughput": {}, "runs": [], "complete": False}
    if a.gpu:
        import torch
        result["gpu"] = torch.cuda.get_device_name(0)

    def save():
        result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        (out / "search_real.json").write_text(json.dumps(result, indent=2) + "\n")

    base = MeasureSettings(max_batches=a.max_batches, max_tokens=a.max_tokens, device=device)
    tp_archs = archs[: a.throughput_archs]
    tp_deadline = lambda: min(time.perf_counter() + a.throughput_seconds,  # noqa: E731
                              t_start + a.time_budget / 3)
    if a.no_throughput:
        result["throughput"] = {"skipped": True}
    else:
        measure_throughput(a, base, tp_archs, tp_deadline, translation, device, result, save)
    if not a.no_search:
        run_searches(a, ms_of(a, translation, device), objectives, bound, checkpoints, deadline, translation,
                     result, save)
    finish(result, a.samplers.split(","), checkpoints, save)


def ms_of(a, translation: bool, device: str) -> MeasureSettings:
    return MeasureSettings(max_batches=a.max_batches, max_tokens=a.max_tokens, bleu=translation,
                           bleu_sentences=a.search_bleu_sentences, device=device)


def measure_throughput(a, base, tp_archs, tp_deadline, translation, device, result, save):
    """1. archs/s measuring loss, then loss and BLEU (at most a third of the budget)."""
    result["throughput"]["loss"] = dict(throughput(a.run, base, a.workers, tp_archs, tp_deadline()),
                                        max_batches=a.max_batches, max_tokens=a.max_tokens)
    save()
    print("loss", result["throughput"]["loss"], flush=True)
    if translation:
        bl = MeasureSettings(max_batches=a.max_batches, max_tokens=a.max_tokens, bleu=True,
                             bleu_sentences=a.bleu_sentences, device=device)
        result["throughput"]["bleu"] = dict(throughput(a.run, bl, a.workers, tp_archs, tp_deadline()),
                                            sentences=a.bleu_sentences, decoding="greedy, batched, KV cache",
                                            note="loss and BLEU of each arch")
        save()
        print("bleu", result["throughput"]["bleu"], flush=True)


def run_searches(a, ms, objectives, bound, checkpoints, deadline, translation, result, save):
    """2. hypervolume per sampler and seed: one pool, one cache for all runs."""
    src, pool = source(a.run, ms, a.workers)
    cache = CachedQuality(src)
    result["search_bleu_sentences"] = a.search_bleu_sentences if translation else None
    try:
        samplers = a.samplers.split(",")
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            for i, sampler in enumerate(samplers):
                # an equal share of what is left to each remaining sampler of this seed, so
                # that a slow sampler cannot starve the others of the first seed
                left = (deadline - time.perf_counter()) / (len(samplers) - i)
                if left < 5:
                    result["runs"].append({"sampler": sampler, "seed": seed, "skipped": "time budget spent"})
                    continue
                before = cache.measured
                t = time.perf_counter()
                r = search(config=SearchConfig(
                    run_dir=a.run, hw=a.hw, quality=cache, objectives=objectives, latency_max=bound,
                    trials=a.trials, sampler=sampler, seed=seed, storage="memory", write=False, plots=False,
                    progress=False, population=50, batch=50 if sampler != "evolution" else 100,
                    time_limit_s=left))
                secs = time.perf_counter() - t
                dirs = [d.name.lower() for d in r.study.directions]
                hv, n = hv_at(r.study, dirs, r.hypervolume_reference, checkpoints)
                result["reference"] = r.hypervolume_reference
                result["reference_rule"] = "minimised: bleu negated, reference 0; loss ln(vocab); " \
                                           "latency and size 1.1 x the largest arch's"
                result["runs"].append({
                    "sampler": sampler, "seed": seed, "trials": n, "seconds": round(secs, 1),
                    "seconds_per_1000_trials": round(secs / n * 1000, 1) if n else None,
                    "measured_new": cache.measured - before, "feasible": r.feasible, "hv": hv,
                    "asked": len(r.study.trials), "time_limit_s": round(left, 1),
                    "hv_final": r.hypervolume, "stopped_early": n < a.trials})
                save()
                print(result["runs"][-1], flush=True)
    finally:
        if pool is not None:
            pool.close()


def finish(result: dict, samplers: list, checkpoints: list, save) -> None:
    """Mean and std of the hypervolume per sampler and checkpoint over the runs."""
    summary = {}
    for sampler in samplers:
        rs = [r for r in result["runs"] if r["sampler"] == sampler and "hv" in r]
        summary[sampler] = {str(c): {"mean": round(float(np.mean(v)), 6), "std": round(float(np.std(v)), 6),
                                     "runs": len(v)}
                            for c in checkpoints
                            for v in [[r["hv"][str(c)] for r in rs if str(c) in r["hv"]]] if v}
    result["summary"] = summary
    result["complete"] = bool(result["runs"]) and all("hv" in r and not r["stopped_early"] for r in result["runs"])
    save()
    print(json.dumps(summary, indent=2))


def merge(paths: list, out: str) -> dict:
    """One report from several processes' search_real.json (same run, bound and reference):
    the throughput of the one that measured it, every search run, the summary over all."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    searches = [p for p in parts if p["runs"]] or parts
    for key, among in (("run", parts), ("latency_max_ms", parts), ("objectives", parts), ("trials", searches),
                       ("checkpoints", searches)):
        if len({json.dumps(p.get(key)) for p in among}) > 1:
            raise SystemExit(f"merge: the inputs differ in {key!r}; merge only parts of one benchmark")
    result = dict(searches[0], runs=[r for p in parts for r in p["runs"]], parts=[str(p) for p in paths],
                  elapsed_s=max(p.get("elapsed_s", 0) for p in parts))
    result["throughput"] = next((p["throughput"] for p in parts if not p["throughput"].get("skipped")), {})
    refs = {json.dumps(p.get("reference")) for p in parts if p.get("reference") is not None}
    if len(refs) > 1:
        raise SystemExit("merge: the inputs have different hypervolume reference points")
    result["reference"] = json.loads(refs.pop()) if refs else None
    result["reference_rule"] = next((p["reference_rule"] for p in parts if "reference_rule" in p), None)
    samplers = list(dict.fromkeys(r["sampler"] for r in result["runs"]))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    def save():
        (out_dir / "search_real.json").write_text(json.dumps(result, indent=2) + "\n")
    finish(result, samplers, result["checkpoints"], save)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["merge"]:
        mp = argparse.ArgumentParser(prog="search_real.py merge", description=merge.__doc__.split("\n")[0])
        mp.add_argument("parts", nargs="+", help="search_real.json files")
        mp.add_argument("--out", required=True, help="folder for the merged search_real.json")
        ma = mp.parse_args(sys.argv[2:])
        merge(ma.parts, ma.out)
    else:
        main()
