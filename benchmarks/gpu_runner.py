"""Run a plan of GPU benchmarks as Ray tasks (``cosearch.jobs``), detached from the shell.

A device command lasts at most 10 minutes, but a machine stays warm (with /tmp) while calls
follow each other. So the runner starts the plan in its own process session and returns;
later calls wait on it and pack what has finished::

    python benchmarks/gpu_runner.py start PLAN --root /tmp/gpu [--set KEY=VALUE ...]
    python benchmarks/gpu_runner.py wait --root /tmp/gpu --for 540 --pack $OUT/results.tgz
    python benchmarks/gpu_runner.py run PLAN --root DIR ...      # in the foreground
    python benchmarks/gpu_runner.py show PLAN [--set ...]        # the jobs, without running

A plan is a function of ``benchmarks/gpu_plans.py`` that returns a list of
:class:`cosearch.jobs.Job` (each a benchmark script or ``cosearch`` command, with its share
of a GPU and the jobs it runs ``after``); each benchmark still runs alone as a script.
Rerunning ``start`` skips the jobs that are done (their ``done`` file exists).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

STATUS, LOGFILE, PID = "status.json", "runner.log", "runner.pid"
#: what `wait --pack` takes: results, logs and plots, never checkpoints or token caches
PACK_SUFFIXES = (".json", ".jsonl", ".txt", ".csv", ".png", ".md", ".log")
PACK_MAX_BYTES = 4_000_000


def _plan(name: str, settings: dict):
    import gpu_plans
    fn = getattr(gpu_plans, name, None)
    if fn is None or name.startswith("_"):
        plans = [n for n in dir(gpu_plans) if not n.startswith("_") and callable(getattr(gpu_plans, n))
                 and getattr(getattr(gpu_plans, n), "__module__", "") == "gpu_plans"]
        raise SystemExit(f"no plan {name!r} in benchmarks/gpu_plans.py; plans: {', '.join(plans)}")
    return fn(**settings)


def _settings(pairs) -> dict:
    out = {}
    for p in pairs or []:
        k, sep, v = p.partition("=")
        if not sep:
            raise SystemExit(f"--set {p!r}: use KEY=VALUE")
        out[k] = v
    return out


def cmd_run(args) -> int:
    from dataclasses import replace

    from cosearch.jobs import run_jobs
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    jobs = _plan(args.plan, _settings(args.set))
    if args.only:  # a few jobs now, one after another in this process (no Ray): e.g. the CPU-only
        # first jobs on a machine whose Ray wheels have not arrived yet; a later run skips them
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {j.name for j in jobs})
        if unknown:
            raise SystemExit(f"--only: no job {', '.join(unknown)} in plan {args.plan}")
        res = run_jobs([replace(j, after=()) for j in jobs if j.name in wanted], root, parallel=1, progress=False)
        return 0 if all(r.ok for r in res) else 1
    t0 = time.time()
    (root / "plan.json").write_text(json.dumps(
        {"plan": args.plan, "settings": _settings(args.set), "started": t0,
         "jobs": [{"name": j.name, "argv": list(j.argv), "gpu": j.gpu, "after": list(j.after), "done": j.done}
                  for j in jobs]}, indent=2))
    res = run_jobs(jobs, root, gpus=args.gpus, progress=True)
    status = {"finished": time.time(), "elapsed_s": time.time() - t0,
              "jobs": [{"name": r.name, "returncode": r.returncode, "seconds": round(r.seconds, 1),
                        "skipped": r.skipped, "tail": r.tail} for r in res]}
    (root / STATUS).write_text(json.dumps(status, indent=2))
    return 0 if all(r.ok for r in res) else 1


def cmd_start(args) -> int:
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    (root / STATUS).unlink(missing_ok=True)
    argv = [sys.executable, str(Path(__file__).resolve()), "run", args.plan, "--root", str(root)]
    for s in args.set or []:
        argv += ["--set", s]
    if args.gpus is not None:
        argv += ["--gpus", str(args.gpus)]
    with open(root / LOGFILE, "a") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    (root / PID).write_text(str(proc.pid))
    print(f"started plan {args.plan} (pid {proc.pid}); log {root / LOGFILE}")
    return 0


def _states(root: Path) -> list[tuple[str, str]]:
    plan = json.loads((root / "plan.json").read_text()) if (root / "plan.json").exists() else {"jobs": []}
    out = []
    for j in plan["jobs"]:
        done = Path(j["done"]) if Path(j["done"]).is_absolute() else root / j["name"] / j["done"]
        state = "done" if done.exists() else "running" if (root / j["name"] / "log.txt").exists() else "waiting"
        out.append((j["name"], state))
    return out


def pack(root: Path, dest: Path) -> None:
    tmp = dest.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix in PACK_SUFFIXES and p.stat().st_size <= PACK_MAX_BYTES:
                tar.add(p, arcname=str(p.relative_to(root.parent)))
    tmp.replace(dest)


def cmd_wait(args) -> int:
    root = Path(args.root)
    end = time.time() + args.for_s
    while time.time() < end and not (root / STATUS).exists():
        time.sleep(min(10.0, max(0.0, end - time.time())))
    for name, state in _states(root):
        print(f"{state:8s} {name}")
    if (root / STATUS).exists():
        st = json.loads((root / STATUS).read_text())
        bad = [j for j in st["jobs"] if j["returncode"] != 0]
        print(f"plan finished in {st['elapsed_s']:.0f} s; {len(bad)} failed")
        for j in bad:
            print(f"--- {j['name']} (rc {j['returncode']})\n{j['tail']}")
    else:
        print("plan still running")
    log = root / LOGFILE
    if log.exists():  # the runner's last lines: its progress bar and any error
        print("".join(log.read_text(errors="replace").splitlines(keepends=True)[-8:])[-2000:])
    if args.pack:
        pack(root, Path(args.pack))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "start", "show"):
        p = sub.add_parser(name)
        p.add_argument("plan")
        p.add_argument("--root", default="/tmp/gpu")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a setting the plan takes")
        p.add_argument("--gpus", type=int, default=None, help="GPUs Ray may use (default: all it sees)")
    sub.choices["run"].add_argument("--only", default=None, metavar="NAME[,NAME]",
                                    help="run just these jobs, in order, in this process (their 'after' ignored)")
    w = sub.add_parser("wait")
    w.add_argument("--root", default="/tmp/gpu")
    w.add_argument("--for", dest="for_s", type=float, default=540.0, help="seconds to wait at most")
    w.add_argument("--pack", default=None, help="a .tgz of the results so far (JSON, logs, plots)")
    args = ap.parse_args(argv)
    if args.cmd == "show":
        for j in _plan(args.plan, _settings(args.set)):
            after = f"  after {','.join(j.after)}" if j.after else ""
            print(f"{j.name}  gpu={j.gpu}{after}\n    {' '.join(j.argv)}")
        return 0
    return {"run": cmd_run, "start": cmd_start, "wait": cmd_wait}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
