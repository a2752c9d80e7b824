"""Independent jobs (command lines) spread over the GPUs or CPU cores with Ray tasks.

``cosearch fidelity`` and the GPU benchmarks run many independent trainings and
measurements; each is a :class:`Job`: a command line (usually a ``cosearch`` command, the
path users run) with its share of a GPU. :func:`run_jobs` runs one Ray task per job
(``num_gpus`` = its share, so Ray places it and sets ``CUDA_VISIBLE_DEVICES``; a share
below 1 packs several small jobs on one GPU), writes each job's output to
``ROOT/NAME/log.txt``, and skips a job whose ``done`` file exists: rerunning a killed batch
runs only what is left, and the commands themselves resume from their checkpoints. With
``parallel=1`` the jobs run one after another in this process, without Ray. A job may
name jobs it runs ``after``: Ray starts it once they have finished (their results are its
task's arguments), and it is not run when one of them failed.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import UserError

LOG = "log.txt"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Job:
    """One command line. ``done``: a path (relative to the job's folder, or absolute) that
    exists once the job has succeeded; ``gpu``: its share of one GPU (0: CPU only)."""

    name: str
    argv: tuple[str, ...]
    done: str
    gpu: float = 0.0
    cpus: float = 1.0
    env: tuple[tuple[str, str], ...] = ()
    after: tuple[str, ...] = ()

    def folder(self, root: Path) -> Path:
        return Path(root) / self.name

    def done_path(self, root: Path) -> Path:
        p = Path(self.done)
        return p if p.is_absolute() else self.folder(root) / p


@dataclass
class JobResult:
    name: str
    returncode: int          # 0 also for a skipped job
    seconds: float
    skipped: bool
    log: Path
    tail: str = field(default="", repr=False)  # the log's last lines when it failed

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def check_jobs(jobs: Sequence[Job]) -> None:
    """Names unique and usable as folder names, shares in range: before anything runs."""
    seen = set()
    for j in jobs:
        if not _NAME.match(j.name):
            raise UserError(f"job name {j.name!r}: use letters, digits, '.', '_' and '-' (at most 128)")
        if j.name in seen:
            raise UserError(f"job name {j.name!r} is used twice")
        if not j.argv:
            raise UserError(f"job {j.name}: empty command")
        if not (0.0 <= j.gpu <= 1.0):  # (NaN fails both comparisons)
            raise UserError(f"job {j.name}: gpu share {j.gpu} must be in [0, 1]")
        unknown = [a for a in j.after if a not in seen]
        if unknown:
            raise UserError(f"job {j.name} runs after {unknown[0]!r}, which is not an earlier job of the list")
        seen.add(j.name)


def _run_one(job: Job, root: str, *before: JobResult) -> JobResult:
    """Run ``job`` to its end (also inside a Ray task); its output goes to its log.
    ``before``: the results of the jobs it runs after; it is skipped if one failed."""
    failed = [b.name for b in before if not b.ok]
    if failed:
        return JobResult(job.name, -1, 0.0, False, job.folder(Path(root)) / LOG, f"not run: {failed[0]} failed")
    folder = job.folder(Path(root))
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / LOG
    env = dict(os.environ, **dict(job.env))
    env.setdefault("PYTHONUNBUFFERED", "1")
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(job.argv)}\n")
        fh.flush()
        proc = subprocess.Popen(list(job.argv), stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            rc = proc.wait()
        except BaseException:  # cancelled (Ctrl-C, Ray cancel): never leave the child running
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    tail = ""
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    elif not job.done_path(Path(root)).exists():
        rc, tail = 1, f"exited 0 but did not write {job.done_path(Path(root))}"
    return JobResult(job.name, rc, time.perf_counter() - t0, False, log, tail)


def run_jobs(jobs: Sequence[Job], root: str | Path, *, parallel: int | None = None, gpus: int | None = None,
             progress: bool = True, address: str | None = None) -> list[JobResult]:
    """Run every job not yet done; results in the order of ``jobs``.

    ``parallel``: at most this many jobs at once (default: Ray's own limits, CPUs and GPUs);
    1 runs them in this process without Ray. ``gpus``: GPUs Ray may use (default: those it
    detects). ``address``: an existing Ray cluster (``auto`` or ``HOST:PORT``).
    """
    check_jobs(jobs)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, JobResult] = {}
    todo = []
    for j in jobs:
        if j.done_path(root).exists():
            results[j.name] = JobResult(j.name, 0, 0.0, True, j.folder(root) / LOG)
        else:
            todo.append(j)
    bar = _bar(progress, len(jobs), len(results))
    try:
        if todo and (parallel == 1 or (parallel is None and len(todo) == 1 and todo[0].gpu == 0)):
            for j in todo:  # the list order runs every job after the ones it names
                results[j.name] = _run_one(j, str(root), *(results[a] for a in j.after))
                if bar is not None:
                    bar.update(1)
        elif todo:
            _run_on_ray(todo, root, parallel, gpus, address, results, bar)
    finally:
        if bar is not None:
            bar.close()
    return [results[j.name] for j in jobs]


def _run_on_ray(todo: list[Job], root: Path, parallel, gpus, address, results: dict, bar) -> None:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        raise UserError("running jobs in parallel needs Ray: pip install 'ray[train,tune]'") from None
    started = False
    if not ray.is_initialized():
        kw: dict = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kw["address"] = address
        else:
            kw["num_cpus"] = max(1, int(parallel or os.cpu_count() or 1))
            if gpus is not None:
                kw["num_gpus"] = gpus
        try:
            ray.init(**kw)
        except (ValueError, ConnectionError) as e:
            if not address:
                raise
            raise UserError(f"--address {address}: no Ray cluster to join there ({str(e).splitlines()[0]}); "
                            "give auto or HOST:PORT of a running Ray head, or leave it out") from None
        started = True
    try:
        remote = ray.remote(_run_one)
        pending, refs = {}, {}
        for j in todo:  # a finished prerequisite's result is passed as a plain value
            before = [refs.get(a, results.get(a)) for a in j.after]
            ref = remote.options(num_gpus=j.gpu, num_cpus=j.cpus, max_retries=0).remote(j, str(root), *before)
            pending[ref], refs[j.name] = j, ref
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                j = pending.pop(ref)
                results[j.name] = ray.get(ref)
                if bar is not None:
                    bar.update(1)
    finally:
        if started:
            ray.shutdown()


def _bar(progress: bool, total: int, initial: int):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, unit="job", desc="jobs", dynamic_ncols=True, file=sys.stderr)
