"""Training checkpoints: atomic writes, safe loads, finding the one to resume from.

A checkpoint is a plain dict of tensors, numbers and strings saved with ``torch.save``
to a temporary file and moved into place with ``os.replace``, so a killed run never
leaves a half-written file. Loading uses ``torch.load(weights_only=True)``: a checkpoint
from somewhere else cannot run code.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import UserError
from ..inputs import regular_file

CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"step_{step:08d}.pt"


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, then rename).

    When the write fails (disk full, read-only, file-size limit) nothing of it is left
    and the ``UserError`` says whether the run's previous checkpoint still loads.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except UserError as e:
        raise UserError(f"{e}; {_previous_checkpoint_note(path)}") from None
    except (OSError, RuntimeError) as e:
        # torch's writer reports a failed write as RuntimeError ("file write failed",
        # "unexpected pos ..."): the disk, not the data, is the problem.
        raise UserError(f"cannot write checkpoint {path} ({_first_line(e)}): {_why_write_failed(path)} "
                        f"{_previous_checkpoint_note(path)}; free space and rerun the same command to resume") from None
    return path


def _why_write_failed(path: Path) -> str:
    """The likely reason, measured: a disk with less room than a checkpoint takes, or a
    file-size limit below it; else the question."""
    import resource
    import shutil
    others = [p for _, p in list_checkpoints(path.parent.parent) if p != path]
    need = max([p.stat().st_size for p in others[-1:]] + [2 ** 20])
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < need:
        return f"No space left on device ({free / 2 ** 20:.1f} MiB free, a checkpoint takes {need / 2 ** 20:.1f} MiB);"
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and limit < need:
        return f"past the file-size limit (ulimit -f: {limit / 2 ** 20:.1f} MiB);"
    return "is the disk full, read-only or past a file-size limit?"


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _previous_checkpoint_note(path: Path) -> str:
    """Whether the newest other checkpoint of the run loads (checked, not assumed)."""
    others = [p for _, p in list_checkpoints(path.parent.parent) if p != path]
    if not others:
        return "no earlier checkpoint exists, so a rerun starts from step 0"
    prev = others[-1]
    try:
        step = int(load_checkpoint(prev)["step"])
    except UserError:
        return f"the previous checkpoint {prev} does not load either"
    return f"the previous checkpoint {prev} (step {step}) is intact and loads"


def _loads_on_cpu(path: Path) -> bool:
    """Whether the file itself is readable (a device error is then the device's, not the file's)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 -- any failure here means the file is at fault
        return False
    return True


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain data only)."""
    path = regular_file(path, "checkpoint")  # a FIFO would block torch.load for ever
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except torch.cuda.OutOfMemoryError as e:
        # the file is not at fault: telling the user to delete it would lose a good checkpoint
        raise UserError(f"not enough free GPU memory to load {path} ({_first_line(e)}); other processes "
                        "hold the GPU: wait for them, or run without --gpu") from None
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError,
            IndexError) as e:  # (a damaged pickle inside the zip raises the last three)
        first = _first_line(e)
        if str(map_location) != "cpu" and _loads_on_cpu(path):
            raise UserError(f"{path} is intact but does not load onto {map_location} ({first}); "
                            "check the device, or run without --gpu") from None
        raise UserError(f"{path} is not a readable cosearch checkpoint ({first}); "
                        "delete it to fall back to the previous one") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise UserError(f"{path} is not a cosearch training checkpoint (no model/step); "
                        "pass the run folder that `cosearch train` wrote")
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UserError(f"{path} is damaged (its step is {step!r}, not a whole number >= 0); "
                        "delete it to fall back to the previous checkpoint")
    if not isinstance(state["model"], dict):
        raise UserError(f"{path} is damaged (its model is not a dict of tensors); "
                        "delete it to fall back to the previous checkpoint")
    return state


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint of a run, oldest first."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run, or None when it has none."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep >= 1)."""
    for _, p in list_checkpoints(run_dir)[: -max(1, keep)]:
        p.unlink(missing_ok=True)
