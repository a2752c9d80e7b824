"""Plans for ``gpu_runner.py``: functions returning the jobs of one GPU session.

Every job is a command line a user could run (a ``cosearch`` command or a benchmark
script) with its share of one GPU (Ray packs fractional shares onto a GPU) and the jobs it
runs after. Settings come as strings from ``--set KEY=VALUE``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from cosearch.jobs import Job

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _cosearch(*args: str) -> tuple[str, ...]:
    """``cosearch ARGS`` run through this interpreter (the GPU machine has no entry point)."""
    return (PY, "-m", "cosearch.cli", *args)


def _to_file(argv: tuple[str, ...], path: str) -> tuple[str, ...]:
    """``argv`` with its standard output saved to ``path`` only when it succeeds."""
    import shlex
    cmd = " ".join(shlex.quote(a) for a in argv)
    return ("sh", "-c", f"{cmd} > {shlex.quote(path)}.tmp && mv {shlex.quote(path)}.tmp {shlex.quote(path)}")


def smoke(out: str = "/tmp/gpu-smoke", steps: str = "3") -> list[Job]:
    """A CPU check of the runner: train the tiny LM for a few steps, then evaluate it."""
    run = f"{out}/run"
    return [
        Job("train_tiny", _cosearch("train", "--space", "tiny_lm", "--task", "lm", "--out", run,
                                    "--steps", steps, "--max-tokens", "256", "--no-progress"),
            done=f"{run}/summary.json"),
        Job("eval_tiny", _to_file(_cosearch("eval", "--run", run, "--arch", "smallest", "--json"),
                                  f"{out}/eval_smallest.json"),
            done=f"{out}/eval_smallest.json", after=("train_tiny",)),
    ]
