"""Search quality on a trained supernet, through the CLI: hypervolume of the reported front,
scored on a held-out split, after 300 and 1,000 trials, per sampler setting and seed.

Each (setting, seed) runs ``cosearch search --run RUN ...`` in a subprocess on a fresh
``--out`` (objectives validation loss x latency x weight size on zcu102 decode, the latency
bound at the median latency of 2,000 random archs). A setting is ``sampler[:rR][:mM][:pN]``
(``nsga2:r5:m2:p24`` adds ``--repeats 5 --repeat-margin 2 --population 24``; ``default`` adds none of these flags: the
command as a user runs it, which repeats only where the validation split has the blocks). Then, for the first n trials of
each run (n = 300, 1,000), the front the search reports - its feasible trials not dominated
by their recorded values - is measured again on ``--heldout-split`` (``--heldout-batches``
batches: a larger, independent evaluation) and its hypervolume taken against the search's
own FIXED reference point (summary.json: ln(vocab), 1.1 x the largest arch's latency and
size), so every run and setting is scored alike. ``--goal A,B`` checks hv(A) >= mean +
2 std of hv(B) at every checkpoint, and gives mean(A) - mean(B) with a 95% Welch interval. The
results file is rewritten after each run; a rerun with the same ``--out`` and settings keeps
its finished runs (a cut GPU job resumes; delete the file to start again); a file of other settings
is refused, never overwritten. ``--parallel P`` runs P searches at once; after a failure no new one
starts. ``measurements`` counts quality measurements (repeats
included): the price of the noise-aware settings.

    python benchmarks/search_hv_real.py --run RUN --gpu --workers 6 --settings random,nsga2:r5:m2 \\
        --goal nsga2:r5:m2,random --heldout-split test --out benchmarks/results/search_hv_real_m30k.json
    python benchmarks/search_hv_real.py --run RUN --settings random,nsga2:r3 --trials 60 \\
        --checkpoints 30,60 --seeds 2 --max-batches 1 --heldout-batches 2 --out /tmp/hv.json   # CPU check
"""
from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from search_hv import difference_interval, goal, mean_std, parse_setting  # noqa: E402

from cosearch.search.front import pareto_mask, to_minimize  # noqa: E402
from cosearch.search.hypervolume import hypervolume  # noqa: E402


def latency_bound(run: str, hw: str) -> float:
    from cosearch.search.objectives import CostModel
    from cosearch.search.params import Design
    from cosearch.training.rundir import read_config, space_of
    space = space_of(read_config(run))
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(2000)]
    return float(np.median(CostModel(space, hw, "decode")([Design(a) for a in archs])["latency_ms"]))


def _previous(path: Path, same: dict, heldout: tuple[str, int]) -> dict | None:
    """The results file a cut run of the same settings left (None: none, damaged, or other settings)."""
    try:
        prev = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(prev, dict) or not isinstance(prev.get("runs"), list) or \
            any(prev.get(k) != v for k, v in same.items()):
        return None
    held = prev.get("heldout") or {}
    return prev if (held.get("split"), held.get("batches")) == heldout else None


def run_cli(a, setting: str, seed: int, bound: float, out: Path) -> dict:
    cmd = [sys.executable, "-m", "cosearch.cli", "search", "--run", a.run, "--hw", a.hw, "--objectives", a.objectives,
           "--latency-max", f"{bound:.6g}", "--trials", str(a.trials), "--seed", str(seed), "--workers", str(a.workers),
           "--max-batches", str(a.max_batches), "--out", str(out), "--no-progress"]
    if setting != "default":  # "default": the sampler and repeats a user gets without asking
        cfg = parse_setting(setting)
        cmd += ["--sampler", cfg["sampler"], "--repeats", str(cfg["repeats"]),
                "--repeat-margin", str(cfg["repeat_margin"])]
        if "population" in cfg:
            cmd += ["--population", str(cfg["population"])]
    if a.gpu:
        cmd.append("--gpu")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{setting} seed {seed}: the search ran past --timeout {a.timeout:g} s; rerun with the "
                         "same --out to resume (the finished runs are kept)") from None
    if p.returncode != 0:
        raise SystemExit(f"{setting} seed {seed}: exit {p.returncode}\n{p.stderr[-3000:]}")
    return {"wall_s": round(time.perf_counter() - t, 1), **json.loads((out / "summary.json").read_text())}


def reported_fronts(out: Path, objectives: list, directions: list, checkpoints: list) -> dict:
    """Checkpoint -> (archs of the reported front, their costs in objective order, measurements)."""
    import pandas as pd
    df = pd.read_csv(out / "trials.csv").sort_values("number").reset_index(drop=True)
    fronts = {}
    for c in checkpoints:
        if c > len(df):
            continue
        head = df.iloc[:c]
        ok = head[head["feasible"].astype(bool) & head["source"].isin(["measured"])]
        loss = to_minimize(ok[objectives].to_numpy(dtype=np.float64), directions)
        front = ok[pareto_mask(loss)] if len(ok) else ok
        n = head["loss_n"].fillna(1).sum() if "loss_n" in head else len(head)
        fronts[c] = (list(front["arch"]), front[objectives].to_numpy(dtype=np.float64), int(n))
    return fronts


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--settings", default="random,nsga2:r5:m2")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--checkpoints", default="300,1000")
    ap.add_argument("--objectives", default="quality,latency,size", help="the quality objective first")
    ap.add_argument("--hw", default="zcu102")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--max-batches", type=int, default=20, help="validation batches per measurement")
    ap.add_argument("--heldout-split", default="test", help="split of the held-out evaluation of the fronts")
    ap.add_argument("--heldout-batches", type=int, default=100, help="its batches (all the split has, at most)")
    ap.add_argument("--goal", help="A,B: hv(A) >= mean + 2 std of hv(B)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--parallel", type=int, default=1,
                    help="searches run at once (each its own CLI process and --workers); fronts are scored as they end")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.parallel < 1:
        ap.error(f"--parallel {a.parallel}: give 1 or more")
    from cosearch.search.objectives import parse_objectives
    from cosearch.search.quality import MeasureSettings, SupernetQuality
    from cosearch.space import Arch
    objs = parse_objectives(a.objectives)
    names, dirs = [o.name for o in objs], [o.direction for o in objs]
    checkpoints = [int(c) for c in a.checkpoints.split(",")]
    settings = a.settings.split(",")
    bound = latency_bound(a.run, a.hw)
    runs, reference, heldout_cache = [], None, {}
    same = {"run": str(Path(a.run).resolve()), "hw": a.hw, "objectives": a.objectives, "latency_max_ms": bound,
            "max_batches": a.max_batches, "trials": a.trials, "workers": a.workers}
    prev = _previous(Path(a.out), same, (a.heldout_split, a.heldout_batches))
    if prev is None and Path(a.out).exists():  # never overwrite other results
        raise SystemExit(f"--out {a.out} exists and is not a cut run of these settings (run, --hw, --objectives, "
                         "--max-batches, --trials, --workers, held-out split and batches); give another --out, or "
                         "delete it to start again")
    other = sorted({(r["setting"], r["seed"]) for r in (prev or {}).get("runs", [])
                    if r["setting"] not in settings or r["seed"] >= a.seeds})
    if other:
        raise SystemExit(f"--out {a.out} also holds runs this command would drop: "
                         f"{', '.join(f'{s} seed {n}' for s, n in other)}; add them to --settings / --seeds, or "
                         "give another --out")
    if prev is not None:  # a cut job restarted: keep its finished runs, run the rest
        runs = list(prev["runs"])
        reference = prev["reference"] if runs else None
        print(f"resuming {a.out}: {len(runs)} finished run(s) kept", flush=True)
    done = {(r["setting"], r["seed"]) for r in runs}
    held = SupernetQuality(a.run, MeasureSettings(split=a.heldout_split, max_batches=a.heldout_batches,
                                                  device="cuda" if a.gpu else "cpu"))
    t0 = time.perf_counter()

    def write(runs: list[dict]) -> dict:
        """The result of the runs so far, written after each one (a cut session keeps them)."""
        summary = {s: {str(c): {k: mean_std(v, 6)
                                for k in ("hv", "hv_recorded", "measurements")
                                for v in [[r[str(c)][k] for r in runs if r["setting"] == s and str(c) in r]] if v}
                       for c in checkpoints} for s in settings}
        # the goal check reads "hv_front": the held-out score here
        for s in summary.values():
            for c in s.values():
                c["hv_front"] = c.get("hv")
        result = {"benchmark": "search_hv_real", "run": str(Path(a.run).resolve()), "hw": a.hw,
                  "objectives": a.objectives, "latency_max_ms": bound, "reference": reference,
                  "max_batches": a.max_batches,
                  "heldout": {"split": a.heldout_split, "batches": a.heldout_batches, "archs": len(heldout_cache)},
                  "workers": a.workers, "parallel": a.parallel,
                  "device": "cuda" if a.gpu else "cpu", "trials": a.trials, "seeds": a.seeds,
                  "complete": len(runs) == a.seeds * len(settings),
                  "elapsed_s": round(time.perf_counter() - t0, 1), "summary": summary, "runs": runs,
                  "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"}
        if a.gpu:
            import torch
            result["gpu"] = torch.cuda.get_device_name(0)
        if a.goal and all(any(r["setting"] == s for r in runs) for s in a.goal.split(",")):
            better, base = a.goal.split(",")
            result["goal"] = {"rule": f"held-out hv({better}) >= mean + 2 std (sample std) of hv({base})",
                              "checkpoints": goal(summary, better, base),
                              "difference": difference_interval(runs, better, base, "hv", checkpoints)}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
        return result

    def score(setting: str, seed: int, summary: dict, out: Path) -> dict:
        nonlocal reference
        ref = summary["hypervolume_reference"]
        if reference is not None and ref != reference:
            raise SystemExit("the runs have different fixed reference points")
        reference = ref
        row = {"setting": setting, "seed": seed, "wall_s": summary["wall_s"], "timing": summary["timing"],
               "hv_recorded_final": summary.get("hypervolume")}
        for c, (archs, values, n) in reported_fronts(out, names, dirs, checkpoints).items():
            todo = [x for x in archs if x not in heldout_cache]
            if todo:
                got = held([Arch.from_json(x) for x in todo])["loss"]
                heldout_cache.update(zip(todo, map(float, got)))
            scored = values.copy()
            scored[:, 0] = [heldout_cache[x] for x in archs]  # the quality column, held out
            row[str(c)] = {"hv": round(hypervolume(to_minimize(scored, dirs), ref), 6),
                           "hv_recorded": round(hypervolume(to_minimize(values, dirs), ref), 6),
                           "front": len(archs), "measurements": n}
        return row

    result = write(runs) if runs else None  # no file until a run has finished
    # seeds outermost: a run cut short still has every setting on its first seeds
    todo = [(setting, seed) for seed in range(a.seeds) for setting in settings if (setting, seed) not in done]
    first_error = None
    with tempfile.TemporaryDirectory(prefix="cosearch-hv-") as tmp, \
            ThreadPoolExecutor(max_workers=a.parallel) as pool:
        def search(setting: str, seed: int) -> tuple[dict, Path]:
            out = Path(tmp) / f"{setting.replace(':', '_')}_{seed}"
            return run_cli(a, setting, seed, bound, out), out

        # at most --parallel searches in flight, the next one started only when one ends and
        # nothing has failed: after a failure no new search starts (those running finish and count)
        pending, running = list(todo), {}
        while pending or running:
            while pending and len(running) < a.parallel and first_error is None:
                job = pending.pop(0)
                running[pool.submit(search, *job)] = job
            if not running:
                break
            ended, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in sorted(ended, key=lambda f: todo.index(running[f])):  # scored here, one at a time
                setting, seed = running.pop(fut)
                try:
                    summary, out = fut.result()
                    row = score(setting, seed, summary, out)
                except (SystemExit, Exception) as e:  # noqa: BLE001 -- raised once the runs in flight end
                    first_error = first_error or e
                    continue
                runs.append(row)
                print(json.dumps(runs[-1]), flush=True)
                result = write(sorted(runs, key=lambda r: (r["seed"], settings.index(r["setting"]))))
    if first_error is not None:  # the finished runs are in --out: a rerun resumes after them
        raise first_error
    if result is not None:
        print(json.dumps({k: result[k] for k in ("summary", "goal") if k in result}, indent=2))


if __name__ == "__main__":
    main()
