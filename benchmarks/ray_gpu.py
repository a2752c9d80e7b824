"""Data-parallel supernet training through Ray Train on 1 and N GPUs (issue 12, item 4).

For each worker count: ``cosearch.training.ray_train.train_distributed`` on Multi30k (space
``multi30k``), ``--max-tokens`` target tokens per GPU and step, NCCL, one process per GPU.
Reports tokens/s of all workers (median over the log windows after the first
``--skip-windows``, which hold start-up and compilation), the scaling efficiency
(tokens/s with N GPUs / N / tokens/s with 1) and every rank's weight digest.
``--concurrent-singles`` then runs the control: as many independent one-GPU trainings at once
as the largest worker count (their summed tokens/s against the DDP run's separates host and
GPU contention from DDP's lockstep). ``--kill-resume`` then starts ``cosearch train --workers N`` as a separate process, kills
it (SIGKILL, whole process group) once its first checkpoint exists, re-runs the same
command and checks that it resumed from that checkpoint and ends with equal digests.

Needs Ray Train (on the GPU machines: benchmarks/gpu_ray_wheels.sh). From the repo root:

    python3 benchmarks/ray_gpu.py --data .cache_data/multi30k --workers 1 2 --kill-resume --out ray_gpu.json
    python3 benchmarks/ray_gpu.py --device cpu --data DIR --max-tokens 256 --steps 6 --space tiny ...  # smoke test
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def median(xs: list) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else 0.0


def run_scaling(args, workers: int, run_dir: Path) -> dict:
    from cosearch.training.ray_train import train_distributed, worker_results
    from cosearch.training.rundir import read_metrics

    t0 = time.perf_counter()
    s = train_distributed(args.space, "translation", args.data, run_dir, workers=workers, gpu=args.device == "cuda",
                          steps=args.steps, progress=False, max_tokens=args.max_tokens, log_every=args.log_every,
                          ckpt_every=args.steps, bit_stages=None, n_random=args.n_random)
    wall = time.perf_counter() - t0
    records = read_metrics(run_dir)
    window_tps = [r["tokens_per_s"] for r in records]
    digests = [r["state_digest"] for r in worker_results(run_dir)]
    return {"workers": workers, "steps": s.step, "wall_s": wall, "window_tokens_per_s": window_tps,
            "tokens_per_s": median(window_tps[args.skip_windows:]), "loss": s.losses,
            "rank_digests": digests, "digests_equal": len(set(digests)) == 1 and len(digests) == workers}


def train_command(args, run_dir: Path, steps: int, ckpt_every: int, workers: int | None = None) -> list:
    """``cosearch train`` with this benchmark's settings (``--workers`` when given)."""
    return ([sys.executable, "-c", "import sys; from cosearch.cli import main; sys.exit(main())", "train",
             "--space", args.space, "--task", "translation", "--data", str(args.data), "--out", str(run_dir),
             "--steps", str(steps), "--max-tokens", str(args.max_tokens), "--log-every", str(args.log_every),
             "--ckpt-every", str(ckpt_every), "--bit-stages", "off", "--n-random", str(args.n_random),
             "--no-progress", "--json"]
            + (["--workers", str(workers)] if workers else []) + (["--gpu"] if args.device == "cuda" else []))


def child_env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
                **extra)


def concurrent_singles(args, n: int, tmp: Path) -> dict:
    """The control for the scaling figure: ``n`` independent one-GPU trainings (no Ray, no
    DDP) at the same time, one per GPU. If their tokens/s add up to n x the 1-GPU run's,
    the host and the GPUs are not what costs the n-GPU run its efficiency; the lockstep of
    DDP (each step waits for the slower rank, then all-reduces) is."""
    procs = []
    # the i-th GPU this process sees (CUDA_VISIBLE_DEVICES=2,3 -> physical GPUs 2 and 3)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(str(i) for i in range(n))).split(",")
    if args.device == "cuda" and len(visible) < n:
        return {"processes": n, "errors": [f"{n} GPUs needed, CUDA_VISIBLE_DEVICES has {len(visible)}"]}
    logs = [tmp / f"single{i}.log" for i in range(n)]
    for i in range(n):
        extra = {"CUDA_VISIBLE_DEVICES": visible[i].strip()} if args.device == "cuda" else {}
        with open(logs[i], "w") as log:  # a file, not a pipe: a full pipe would stall the child
            procs.append(subprocess.Popen(train_command(args, tmp / f"single{i}", args.steps, args.steps),
                                          env=child_env(**extra), stdout=subprocess.DEVNULL, stderr=log))
    from cosearch.training.rundir import read_metrics
    each, errors = [], []
    for i, p in enumerate(procs):
        if p.wait() != 0:
            errors.append(f"process {i}: exit {p.returncode}: {logs[i].read_text()[-500:]}")
            continue
        try:
            windows = [r["tokens_per_s"] for r in read_metrics(tmp / f"single{i}")]
        except (OSError, ValueError, KeyError) as e:
            errors.append(f"process {i}: metrics: {type(e).__name__}: {e}")
            continue
        each.append({"window_tokens_per_s": windows, "tokens_per_s": median(windows[args.skip_windows:])})
    total = sum(e["tokens_per_s"] for e in each) if not errors else 0.0
    return {"processes": n, "runs": each, "tokens_per_s_sum": total, "errors": errors}


def kill_and_resume(args, workers: int, run_dir: Path) -> dict:
    """Kill a running ``cosearch train --workers N`` after its first checkpoint, run it again."""
    from cosearch.training.ray_train import worker_results

    steps, ckpt = args.steps, max(1, args.steps // 2)
    cmd = train_command(args, run_dir, steps, ckpt, workers=workers)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="result JSON")
    ap.add_argument("--data", required=True, type=Path, help="Multi30k folder")
    ap.add_argument("--space", default="multi30k")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--max-tokens", type=int, default=32768, help="target tokens per worker and step")
    # ~100 steps of warm-up before a fresh process is at speed (new kernel shapes per sampled
    # arch): the 60-step H100 runs were still rising in their last windows
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--skip-windows", type=int, default=10, help="log windows left out (start-up, warm-up)")
    ap.add_argument("--n-random", type=int, default=2)
    ap.add_argument("--path", default="reference", choices=["fused", "reference"],
                    help="weight path of the workers (reference: the default of training)")
    ap.add_argument("--kill-resume", action="store_true", help="also kill a run after its first checkpoint and resume it")
    ap.add_argument("--kill-timeout-s", type=float, default=240)
    ap.add_argument("--concurrent-singles", action="store_true",
                    help="also run as many independent one-GPU trainings at once as the largest worker count "
                    "(no Ray, no DDP): the control that tells host/GPU contention from DDP's lockstep")
    args = ap.parse_args(argv)
    os.environ["COSEARCH_WEIGHT_PATH"] = args.path
    import torch

    res = {"benchmark": "ray_gpu", "space": args.space, "device": args.device, "path": args.path,
           "max_tokens_per_worker": args.max_tokens, "steps": args.steps, "python": platform.python_version(),
           "torch": torch.__version__, "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
           "runs": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cosearch_ray_gpu_") as tmp:
        for n in args.workers:
            try:
                res["runs"][str(n)] = run_scaling(args, n, Path(tmp) / f"w{n}")
            except Exception as e:  # noqa: BLE001 - record it, go on with the other runs
                res["runs"][str(n)] = {"error": f"{type(e).__name__}: {e}"}
            one = res["runs"].get(str(args.workers[0]), {}).get("tokens_per_s")
            got = res["runs"][str(n)].get("tokens_per_s")
            if one and got:
                res["runs"][str(n)]["efficiency_vs_first"] = got / one / (n / args.workers[0])
            out.write_text(json.dumps(res, indent=2) + "\n")
            print(json.dumps({n: {k: v for k, v in res["runs"][str(n)].items() if k != "rank_digests"}}), flush=True)
        if args.concurrent_singles:
            import ray
            ray.shutdown()  # the control runs without Ray
            n = max(args.workers)
            c = concurrent_singles(args, n, Path(tmp))
            ddp = res["runs"].get(str(n), {}).get("tokens_per_s")
            if ddp and c.get("tokens_per_s_sum"):
                c["ddp_vs_singles"] = ddp / c["tokens_per_s_sum"]
            res["concurrent_singles"] = c
            out.write_text(json.dumps(res, indent=2) + "\n")
            print(json.dumps({"concurrent_singles": {k: v for k, v in c.items() if k != "runs"}}), flush=True)
        if args.kill_resume:
            import ray
            ray.shutdown()
            res["kill_resume"] = kill_and_resume(args, max(args.workers), Path(tmp) / "killed")
            out.write_text(json.dumps(res, indent=2) + "\n")
            print(json.dumps({"kill_resume": {k: v for k, v in res["kill_resume"].items() if k != "rank_digests"}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
