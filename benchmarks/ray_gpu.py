"""Data-parallel supernet training through Ray Train on 1, 2, 4 and 8 GPUs (issue 27, item 3).

For each task (``--tasks``: ``lm`` on the ``--lm-space`` space, default ``code_lm`` where it
exists, else ``tiny_lm``; ``translation`` on ``multi30k``) and each worker count (default:
1, 2, 4, 8, as many as are visible): ``cosearch.training.ray_train.train_distributed`` with
NCCL, one process per GPU, ``--max-tokens`` / ``--lm-max-tokens`` target tokens per GPU and
step. Each run logs tokens/s of all workers every ``--log-every`` steps; the windows after
the first ``--skip-windows`` (start-up, warm-up) are the samples. Reported per run: the
median window, and against the 1-GPU run of the same task the speed-up (ratio of medians)
and efficiency (speed-up / N) with 95% bootstrap intervals (windows resampled within each
run), and every rank's weight digest (equal on all ranks).

One command measures a machine; results go to ``--out`` after every run, and re-running
the same command skips the runs already there (so a machine's set can be split over
commands that each fit a time limit: e.g. ``--workers 1 2`` then ``--workers 4 8``).
On one GPU it reports the 1-GPU baselines only. ``--concurrent-singles`` adds the control
(as many independent one-GPU trainings at once as the largest worker count, no Ray, no
DDP); ``--kill-resume`` kills a ``cosearch train --workers N`` run after its first
checkpoint and checks that the re-run resumes from it with equal digests.

Needs Ray Train (on the GPU machines: benchmarks/gpu_ray_wheels.sh). From the repo root:

    python3 benchmarks/ray_gpu.py --data DATA/multi30k --lm-data DATA/linux-c --out ray_gpu_h200x8.json
    python3 benchmarks/ray_gpu.py --device cpu --workers 1 2 --tasks lm --lm-space tiny_lm \\
        --lm-max-tokens 256 --steps 8 --log-every 2 --skip-windows 1 --out /tmp/r.json  # smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKER_COUNTS = (1, 2, 4, 8)
BOOTSTRAP_SAMPLES = 4000


@dataclass(frozen=True)
class Task:
    """One measured workload: a space, its task and data, the batch per worker."""

    task: str  # translation | lm
    space: str
    data: str | None
    max_tokens: int


# --------------------------------------------------------------------------- statistics
def median(xs) -> float:
    return float(np.median(xs)) if len(xs) else 0.0


def bootstrap_ratio(num: list, den: list, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> tuple:
    """95% percentile-bootstrap interval of median(num) / median(den), windows resampled
    with replacement within each run (scipy's ``bootstrap`` is not on the GPU machines)."""
    if len(num) < 2 or len(den) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    a = np.median(rng.choice(np.asarray(num, float), (samples, len(num))), axis=1)
    b = np.median(rng.choice(np.asarray(den, float), (samples, len(den))), axis=1)
    lo, hi = np.percentile(a / b, [2.5, 97.5])
    return (float(lo), float(hi))


def scaling(runs: dict, skip: int) -> dict:
    """Speed-up and efficiency of every run against the 1-worker run, with intervals."""
    base = runs.get("1", {}).get("window_tokens_per_s")
    out = {}
    for n, r in runs.items():
        if "window_tokens_per_s" not in r or not base or n == "1":
            continue
        w, b = r["window_tokens_per_s"][skip:], base[skip:]
        speedup, (lo, hi) = median(w) / median(b), bootstrap_ratio(w, b, seed=int(n))
        out[n] = {"speedup": speedup, "speedup_ci95": [lo, hi], "efficiency": speedup / int(n),
                  "efficiency_ci95": [lo / int(n), hi / int(n)], "windows": [len(w), len(b)]}
    return out


# --------------------------------------------------------------------------- runs
def run_scaling(args, t: Task, workers: int, run_dir: Path) -> dict:
    from cosearch.training.ray_train import train_distributed, worker_results
    from cosearch.training.rundir import read_metrics

    t0 = time.perf_counter()
    s = train_distributed(t.space, t.task, t.data, run_dir, workers=workers, gpu=args.device == "cuda",
                          steps=args.steps, progress=False, max_tokens=t.max_tokens, log_every=args.log_every,
                          ckpt_every=args.steps, bit_stages=None, n_random=args.n_random)
    wall = time.perf_counter() - t0
    windows = [r["tokens_per_s"] for r in read_metrics(run_dir)]
    digests = [r["state_digest"] for r in worker_results(run_dir)]
    return {"workers": workers, "steps": s.step, "wall_s": wall, "window_tokens_per_s": windows,
            "tokens_per_s": median(windows[args.skip_windows:]), "loss": s.losses,
            "rank_digests": digests, "digests_equal": len(set(digests)) == 1 and len(digests) == workers}


def train_command(args, t: Task, run_dir: Path, steps: int, ckpt_every: int, workers: int | None = None) -> list:
    """``cosearch train`` with this benchmark's settings (``--workers`` when given)."""
    return ([sys.executable, "-c", "import sys; from cosearch.cli import main; sys.exit(main())", "train",
             "--space", t.space, "--task", t.task, "--out", str(run_dir),
             "--steps", str(steps), "--max-tokens", str(t.max_tokens), "--log-every", str(args.log_every),
             "--ckpt-every", str(ckpt_every), "--bit-stages", "off", "--n-random", str(args.n_random),
             "--no-progress", "--json"]
            + (["--data", str(t.data)] if t.data else [])
            + (["--workers", str(workers)] if workers else []) + (["--gpu"] if args.device == "cuda" else []))


def child_env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
                **extra)


def concurrent_singles(args, t: Task, n: int, tmp: Path) -> dict:
    """The control for the scaling figure: ``n`` independent one-GPU trainings (no Ray, no
    DDP) at the same time, one per GPU. If their tokens/s add up to n x the 1-GPU run's,
    the host and the GPUs are not what costs the n-GPU run its efficiency."""
    procs = []
    # the i-th GPU this process sees (CUDA_VISIBLE_DEVICES=2,3 -> physical GPUs 2 and 3)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(str(i) for i in range(n))).split(",")
    if args.device == "cuda" and len(visible) < n:
        return {"processes": n, "errors": [f"{n} GPUs needed, CUDA_VISIBLE_DEVICES has {len(visible)}"]}
    logs = [tmp / f"single{i}.log" for i in range(n)]
    for i in range(n):
        extra = {"CUDA_VISIBLE_DEVICES": visible[i].strip()} if args.device == "cuda" else {}
        with open(logs[i], "w") as log:  # a file, not a pipe: a full pipe would stall the child
            procs.append(subprocess.Popen(train_command(args, t, tmp / f"single{i}", args.steps, args.steps),
                                          env=child_env(**extra), stdout=subprocess.DEVNULL, stderr=log))
    from cosearch.training.rundir import read_metrics
    each, errors = [], []
    for i, p in enumerate(procs):
        if p.wait() != 0:
            errors.append(f"process {i}: exit {p.returncode}: {logs[i].read_text()[-500:]}")
            continue
        windows = [r["tokens_per_s"] for r in read_metrics(tmp / f"single{i}")]
        each.append({"window_tokens_per_s": windows, "tokens_per_s": median(windows[args.skip_windows:])})
    total = sum(e["tokens_per_s"] for e in each) if not errors else 0.0
    return {"processes": n, "runs": each, "tokens_per_s_sum": total, "errors": errors}


def kill_and_resume(args, t: Task, workers: int, run_dir: Path) -> dict:
    """Kill a running ``cosearch train --workers N`` after its first checkpoint, run it again."""
    from cosearch.training.ray_train import worker_results

    steps, ckpt = args.steps, max(1, args.steps // 2)
    cmd = train_command(args, t, run_dir, steps, ckpt, workers=workers)
    env = child_env()
    first = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = run_dir / "checkpoints" / f"step_{ckpt:08d}.pt"
    t0 = time.perf_counter()
    while not target.is_file() and first.poll() is None and time.perf_counter() - t0 < args.kill_timeout_s:
        time.sleep(0.5)
    killed_running = first.poll() is None
    try:
        os.killpg(first.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    first.wait()
    time.sleep(3)  # let Ray's processes of the killed driver go
    second = subprocess.run(cmd, env=env, capture_output=True, text=True)
    res = {"killed_while_running": killed_running, "checkpoint_before_kill": target.is_file(),
           "rerun_exit": second.returncode}
    try:
        summary = json.loads(second.stdout[second.stdout.index("{"):])
        digests = [r["state_digest"] for r in worker_results(run_dir)]
        res.update(resumed_from=summary["start_step"], finished=summary["finished"], rank_digests=digests,
                   digests_equal=len(set(digests)) == 1 and len(digests) == workers,
                   ok=killed_running and summary["start_step"] == ckpt and summary["finished"] and len(set(digests)) == 1)
    except (ValueError, KeyError) as e:
        res.update(ok=False, error=f"{type(e).__name__}: {e}", stderr_tail=second.stderr[-3000:])
    return res


# --------------------------------------------------------------------------- the command
def default_lm_space() -> str:
    """``code_lm`` once the space exists, else ``tiny_lm``."""
    from cosearch.errors import UserError
    from cosearch.space import SearchSpace
    try:
        SearchSpace.load("code_lm")
        return "code_lm"
    except (UserError, FileNotFoundError, OSError):
        return "tiny_lm"


def tasks_of(args) -> list[Task]:
    out = []
    for name in args.tasks:
        if name == "translation":
            out.append(Task("translation", args.mt_space, str(args.data) if args.data else None, args.max_tokens))
        else:
            out.append(Task("lm", args.lm_space or default_lm_space(), str(args.lm_data) if args.lm_data else None,
                            args.lm_max_tokens))
    missing = [t.task for t in out if t.task == "translation" and not t.data]
    if missing:
        sys.exit("--tasks translation needs --data (the Multi30k folder)")
    return out


def machine() -> dict:
    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    try:
        import ray
        info["ray"] = ray.__version__
    except ImportError:
        pass
    from git_version import code_version
    return {**info, **code_version()}


def worker_counts(args) -> list[int]:
    if args.workers:
        return args.workers
    import torch
    visible = torch.cuda.device_count() if args.device == "cuda" else 1
    return [n for n in WORKER_COUNTS if n <= max(visible, 1)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="result JSON (re-running skips the runs it holds)")
    ap.add_argument("--tasks", nargs="+", default=["lm", "translation"], choices=["lm", "translation"])
    ap.add_argument("--data", type=Path, default=None, help="Multi30k folder (translation)")
    ap.add_argument("--mt-space", default="multi30k")
    ap.add_argument("--lm-space", default=None, help="default: code_lm where it exists, else tiny_lm")
    ap.add_argument("--lm-data", type=Path, default=None,
                    help="lm data (code_lm: the linux-c folder; default: the embedded corpus)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--workers", type=int, nargs="+", default=None,
                    help="worker counts (default: 1, 2, 4, 8 up to the GPUs visible)")
    ap.add_argument("--max-tokens", type=int, default=32768, help="translation: target tokens per worker and step")
    ap.add_argument("--lm-max-tokens", type=int, default=32768, help="lm: tokens per worker and step")
    # ~100 steps of warm-up before a fresh process is at speed (new kernel shapes per sampled
    # arch): the 60-step H100 runs were still rising in their last windows
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--skip-windows", type=int, default=10, help="log windows left out (start-up, warm-up)")
    ap.add_argument("--n-random", type=int, default=2)
    ap.add_argument("--path", default="reference", choices=["fused", "reference"],
                    help="weight path of the workers (reference: the default of training)")
    ap.add_argument("--compile-members", default="", choices=["", "fixed", "all"],
                    help="$COSEARCH_COMPILE_MEMBERS of the workers (default: eager)")
    ap.add_argument("--redo", action="store_true", help="measure again the runs --out already holds")
    ap.add_argument("--kill-resume", action="store_true", help="also kill a run after its first checkpoint and resume it")
    ap.add_argument("--kill-timeout-s", type=float, default=240)
    ap.add_argument("--concurrent-singles", action="store_true",
                    help="also run as many independent one-GPU trainings at once as the largest worker count "
                    "(no Ray, no DDP): the control that tells host/GPU contention from DDP's lockstep")
    args = ap.parse_args(argv)
    os.environ["COSEARCH_WEIGHT_PATH"] = args.path
    os.environ["COSEARCH_COMPILE_MEMBERS"] = args.compile_members
    counts, tasks = worker_counts(args), tasks_of(args)

    out = Path(args.out)
    res = json.loads(out.read_text()) if out.is_file() and not args.redo else {}
    res.update({"benchmark": "ray_gpu", "device": args.device, "path": args.path,
                "compile_members": args.compile_members, "steps": args.steps, "log_every": args.log_every,
                "skip_windows": args.skip_windows, "n_random": args.n_random, "machine": machine()})
    res.setdefault("tasks", {})
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out.write_text(json.dumps(res, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="cosearch_ray_gpu_") as tmp:
        for t in tasks:
            entry = res["tasks"].setdefault(t.task, {"space": t.space, "data": t.data,
                                                     "max_tokens_per_worker": t.max_tokens, "runs": {}})
            for n in counts:
                if str(n) in entry["runs"] and "error" not in entry["runs"][str(n)]:
                    print(f"{t.task} x{n}: in {out} already (--redo measures it again)", flush=True)
                    continue
                try:
                    entry["runs"][str(n)] = run_scaling(args, t, n, Path(tmp) / f"{t.task}_w{n}")
                except Exception as e:  # noqa: BLE001 - record it, go on with the other runs
                    entry["runs"][str(n)] = {"error": f"{type(e).__name__}: {e}"}
                entry["scaling"] = scaling(entry["runs"], args.skip_windows)
                save()
                brief = {k: v for k, v in entry["runs"][str(n)].items() if k not in ("rank_digests", "window_tokens_per_s")}
                print(json.dumps({t.task: {n: brief, "scaling": entry["scaling"].get(str(n))}}), flush=True)
        if args.concurrent_singles or args.kill_resume:
            import ray
            ray.shutdown()  # the control and the kill run without this driver's Ray
        for t in tasks:
            entry = res["tasks"][t.task]
            if args.concurrent_singles and max(counts) > 1:
                n = max(counts)
                c = concurrent_singles(args, t, n, Path(tmp) / f"{t.task}_singles")
                ddp = entry["runs"].get(str(n), {}).get("tokens_per_s")
                if ddp and c.get("tokens_per_s_sum"):
                    c["ddp_vs_singles"] = ddp / c["tokens_per_s_sum"]
                entry["concurrent_singles"] = c
                save()
                print(json.dumps({t.task: {"concurrent_singles": {k: v for k, v in c.items() if k != "runs"}}}))
            if args.kill_resume:
                entry["kill_resume"] = kill_and_resume(args, t, max(counts), Path(tmp) / f"{t.task}_killed")
                save()
                print(json.dumps({t.task: {"kill_resume": {k: v for k, v in entry["kill_resume"].items()
                                                           if k != "rank_digests"}}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
