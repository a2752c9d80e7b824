"""Search throughput of the command users run: ``cosearch search ... --workers K`` for each K.

Each K runs the CLI in a subprocess on a fresh ``--out`` (the default SQLite study, NSGA-II,
quality = validation loss over ``--max-batches`` batches, zcu102 decode, a latency bound)
and reads back what the command itself logged in its ``summary.json`` (``timing``): the
start-up (imports, cost tables, the K workers loading the supernet) and the loop that
proposes, measures and records. archs/s = archs measured / loop seconds; the wall time of
the whole command is kept too. Every run must end with exactly ``--trials`` finished
trials and none RUNNING (checked in the study).

    # on a GPU machine, with a supernet trained by `cosearch train --gpu`:
    python benchmarks/search_throughput.py --run RUN --gpu --workers 1,2,6 \\
        --out benchmarks/results/search_throughput_h200.json
    # CPU check (a tiny run), and the driver alone (synthetic quality: proposing and recording):
    python benchmarks/search_throughput.py --run RUN --workers 1,2 --trials 60 --max-batches 2 --out /tmp/tp.json
    python benchmarks/search_throughput.py --space multi30k --workers 1 --trials 1000 --out /tmp/driver.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(a, workers: int, out: Path) -> dict:
    what = ["--run", a.run] if a.run else ["--space", a.space, "--synthetic-quality"]
    cmd = [sys.executable, "-m", "cosearch.cli", "search", *what, "--hw", a.hw, "--trials", str(a.trials),
           "--sampler", a.sampler, "--workers", str(workers), "--max-batches", str(a.max_batches),
           "--objectives", a.objectives, "--out", str(out), "--no-progress", "--seed", str(a.seed),
           "--repeats", str(a.repeats)]
    if a.latency_max:
        cmd += ["--latency-max", str(a.latency_max)]
    if a.gpu:
        cmd.append("--gpu")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"workers={workers}: exit {p.returncode}\n{p.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    tm = summary["timing"]
    books = check_books(out, a.trials)
    # how the command measured (TF32, batches merged per forward): recorded by the command itself
    record = json.loads((out / "search.json").read_text())
    how = {k: record.get(k) for k in ("quality_matmul", "quality_forward_tokens", "quality_forward_cost")}
    return {"workers": workers, "trials": summary["trials"], "measured": tm["measured"],
            "startup_s": tm["startup_s"], "workers_start_s": tm["workers_start_s"], "loop_s": tm["loop_s"],
            "archs_per_s": round(tm["measured"] / tm["loop_s"], 2) if tm["loop_s"] else None,
            "measurements_per_s": round((tm["measured"] + tm["measured_again"]) / tm["loop_s"], 2)
            if tm["loop_s"] else None,
            "wall_s": round(wall, 2), "archs_per_s_with_startup": round(tm["measured"] / wall, 2), **books, **how}


def check_books(out: Path, total: int) -> dict:
    import optuna
    from optuna.trial import TrialState
    st = optuna.load_study(study_name="cosearch", storage=f"sqlite:///{out / 'study.db'}")
    ts = st.get_trials(deepcopy=False)
    n = {s.name: sum(t.state == s for t in ts) for s in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL)}
    if n["COMPLETE"] != total or n["RUNNING"]:
        raise SystemExit(f"{out}: {n} - the books are wrong")
    return {"complete": n["COMPLETE"], "running_left": n["RUNNING"], "failed": n["FAIL"]}


def machine(gpu: bool) -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version()}
    try:
        import optuna
        info["optuna"] = optuna.__version__
    except ImportError:
        pass
    try:
        import torch
        info["torch"] = torch.__version__
        if gpu and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpus"] = torch.cuda.device_count()
    except ImportError:
        pass
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a supernet run folder (cosearch train)")
    src.add_argument("--space", help="no supernet: the synthetic quality on this space (the driver's own ceiling)")
    ap.add_argument("--workers", default="1,2,6", help="comma list of K")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--trials", type=int, default=600)
    ap.add_argument("--sampler", default="nsga2")
    ap.add_argument("--objectives", default="quality,latency,size")
    ap.add_argument("--hw", default="zcu102")
    ap.add_argument("--latency-max", type=float, default=30.0)
    ap.add_argument("--max-batches", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="--repeats of the search (1: each arch measured once)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per command")
    ap.add_argument("--out", help="JSON file for the results")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cosearch-tp-") as tmp:
        for k in [int(x) for x in a.workers.split(",")]:
            rows.append(run_once(a, k, Path(tmp) / f"k{k}"))
            print(json.dumps(rows[-1]), flush=True)
    base = next((r["archs_per_s"] for r in rows if r["workers"] == 1), None)
    for r in rows:
        r["speedup_vs_1"] = round(r["archs_per_s"] / base, 2) if base else None
    result = {"benchmark": "search_throughput", "command": "cosearch search {what} --hw {hw} --trials {trials} "
              "--sampler {sampler} --workers K --max-batches {mb} --latency-max {lat} --repeats {rep}{gpu} --out DIR".format(
                  what="--run RUN" if a.run else f"--space {a.space} --synthetic-quality",
                  hw=a.hw, trials=a.trials, sampler=a.sampler, mb=a.max_batches, lat=a.latency_max, rep=a.repeats,
                  gpu=" --gpu" if a.gpu else ""),
              "run": str(Path(a.run).resolve()) if a.run else None, "space": a.space,
              "objectives": a.objectives, "seed": a.seed,
              "archs_per_s": "archs measured / loop seconds, both from the command's summary.json timing",
              "machine": machine(a.gpu), "rows": rows}
    print(json.dumps(result, indent=2))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
