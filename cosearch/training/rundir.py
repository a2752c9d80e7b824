"""The run folder that ``cosearch train`` writes and ``cosearch eval`` reads.

Layout::

    RUN/config.json        space (as a dict), task, data path, seed, workers, hyper-parameters
    RUN/tokenizer.model    the tokenizer the model was trained with
    RUN/checkpoints/       step_XXXXXXXX.pt (atomic; the newest is resumed from)
    RUN/metrics.jsonl      one JSON line per log step
    RUN/summary.json       written when training finishes
    RUN/tokenizers/        tokenizer cache (keyed by the data's hash)

Everything needed to rebuild the model and its data is in ``config.json``, so a run is
evaluated from its folder alone. Re-running ``train`` on an existing folder resumes only
when every setting matches; otherwise a ``UserError`` names the first setting that differs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text, is_write_refusal, write_error_message
from ..errors import UserError
from ..inputs import read_json
from ..outdirs import MARKER
from ..space import SearchSpace

CONFIG = "config.json"
TOKENIZER = "tokenizer.model"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
FORMAT = 1


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "space":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def first_difference(saved: dict, given: dict, defaults: dict | None = None) -> tuple[str, Any, Any] | None:
    """(setting, saved value, given value) of the first setting that differs, else None.

    The space is compared as a whole (its YAML may have moved; its content may not).
    ``defaults`` stand in for settings ``saved`` lacks (it was written before they existed).
    """
    a, b = {**_flatten(defaults or {}), **_flatten(saved)}, _flatten(given)
    for k in list(b) + [k for k in a if k not in b]:
        if k == "space_source":
            continue
        if _canon(a.get(k)) != _canon(b.get(k)):
            return k, a.get(k), b.get(k)
    return None


def _canon(v):
    # JSON turns tuples into lists; compare what a round trip would give.
    return json.loads(json.dumps(v, sort_keys=True))


def read_config(run_dir: str | Path) -> dict:
    """The run's ``config.json``; a ``UserError`` when the folder is not a run."""
    path = Path(run_dir) / CONFIG
    if not os.path.lexists(path):
        raise UserError(f"{run_dir} is not a cosearch run (no {CONFIG}); pass the --out "
                        "folder of `cosearch train`")
    cfg = read_json(path, "run config")
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT or "space" not in cfg:
        raise UserError(f"{path}: not a cosearch run config (format {FORMAT}); pass the --out "
                        "folder of `cosearch train`")
    # whatever reads a run builds its model next: sizes no memory holds stop here, before
    # anything is allocated (8 bytes a parameter: the weights and a checkpoint's copy)
    space = SearchSpace.from_dict(cfg["space"], source=str(path))
    arch = run_arch(cfg)
    if arch is not None:
        space.validate_arch(arch, source=f"{path} (arch)")
    space.check_fits_memory(8, "loading", arch)
    return cfg


def check_config(run_dir: str | Path, config: dict, defaults: dict | None = None) -> bool:
    """True when ``run_dir`` already holds this run (resume), False when it is new or empty.

    Raises ``UserError`` when the folder holds a run with other settings (naming the first
    that differs), or files that are not a run. Writes nothing. ``defaults``: the values of
    settings added since an older run was written (so it still resumes).
    """
    run_dir = Path(run_dir)
    config = {"format": FORMAT, **config}
    if (run_dir / CONFIG).is_file():
        saved = read_config(run_dir)
        diff = first_difference(saved, config, defaults)
        if diff:
            k, old, new = diff
            k = k.removeprefix("train.")  # hyper-parameters are named like their flags
            hint = ""
            if k == "space":
                old = f"{saved['space'].get('name')!r} (from {saved.get('space_source')})"
                new = f"{config['space'].get('name')!r} (from {config.get('space_source')}, other content)"
                if saved["space"].get("name") == config["space"].get("name"):
                    # a preset edited since the run began (e.g. the presets dropped MoS): the run
                    # keeps its own copy of the space, which resumes it as a --space file
                    hint = (f" (the space changed since the run began: to resume, write the \"space\" entry "
                            f"of {run_dir / CONFIG} to a file and pass it as --space)")
            else:
                old, new = repr(old), repr(new)
            raise UserError(f"{run_dir} holds a run made with {k}={old}, but this command gives "
                            f"{k}={new}; rerun with the same settings to resume, or choose a new --out{hint}")
        return True
    if run_dir.exists() and (not run_dir.is_dir() or not is_unfinished_start(run_dir)):
        raise UserError(f"{run_dir} exists and is not a cosearch run; choose a new or empty --out")
    return False


def is_run_folder(folder: Path) -> bool:
    """A run folder, also one written before folders had markers (or a killed start)."""
    return (folder / CONFIG).is_file() or (folder.is_dir() and is_unfinished_start(folder))


#: What ``cosearch train`` writes into a new run folder before its config.json.
_BEFORE_CONFIG = {"tokenizers", TOKENIZER}


def is_unfinished_start(run_dir: Path) -> bool:
    """True for an empty folder, or one holding only what a new run writes before its
    config.json (a run killed while starting): starting it again is safe."""
    return all(p.name in _BEFORE_CONFIG or p.name == MARKER or (p.name.startswith(".") and p.name.endswith(".tmp"))
               for p in run_dir.iterdir())


def write_config(run_dir: str | Path, config: dict) -> None:
    atomic_write_text(Path(run_dir) / CONFIG,
                      json.dumps({"format": FORMAT, **config}, indent=2, sort_keys=True) + "\n")


def space_of(config: dict) -> SearchSpace:
    return SearchSpace.from_dict(config["space"], source=config.get("space_source", "<run>"))


def run_arch(config: dict):
    """The arch of a standalone run (``config["arch"]``), None for a supernet run."""
    from ..space import Arch
    d = config.get("arch")
    if d is None:
        return None
    try:
        return Arch.from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{CONFIG} of the run: 'arch' is not a valid arch ({type(e).__name__}: {e}); "
                        "the run folder is damaged") from None


def append_metrics(run_dir: str | Path, record: dict) -> None:
    path = Path(run_dir) / METRICS
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        if is_write_refusal(e):  # a cut last line is dropped on resume (truncate_metrics)
            raise UserError(write_error_message(path, e)) from None
        raise


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: str | Path, last_step: int) -> None:
    """Drop metric lines after ``last_step`` (steps a killed run did not checkpoint),
    so a resumed run's log has each step once."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                keep.append(line)
        except json.JSONDecodeError:
            break  # a line cut by a kill: everything after it is gone too
    atomic_write_text(path, "".join(x + "\n" for x in keep))
