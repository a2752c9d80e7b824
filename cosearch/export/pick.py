"""Choosing the trial to export from a search folder (``trials.csv`` + ``search.json``).

``--trial N`` takes trial N; ``--pick best-quality`` takes the feasible trial with the best
quality (highest BLEU when the search measured it, else lowest validation loss), among
those within ``--latency-max`` when given.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..search.front import QUALITY_SOURCES

TRIALS, SEARCH_CONFIG = "trials.csv", "search.json"
PICKS = ("best-quality",)
_NUMBER_COLUMNS = ("number", "trial")


@dataclass
class ChosenTrial:
    number: int
    arch: dict
    run: str | None
    hardware: str | None
    hardware_params: dict = field(default_factory=dict)
    scenario: str | None = None
    space: dict | None = None
    metrics: dict = field(default_factory=dict)


def _search_config(search: Path) -> dict:
    path = search / SEARCH_CONFIG
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); the search folder is damaged") from None
    return cfg if isinstance(cfg, dict) else {}


def _first(d: dict, *keys):
    for k in keys:
        if d.get(k) not in (None, ""):
            return d[k]
    return None


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and v != v:  # NaN: not measured
        return None
    return v


def pick_trial(search: str | Path, trial: int | None = None, pick: str | None = None,
               latency_max: float | None = None) -> ChosenTrial:
    """The trial of ``search`` to export (``UserError`` naming the file when impossible)."""
    import pandas as pd

    search = Path(search)
    path = search / TRIALS
    if not path.is_file():
        raise UserError(f"{search} is not a search folder (no {TRIALS}); pass the --out folder of "
                        "`cosearch search`, or a training run folder with --arch FILE.json")
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise UserError(f"{path}: cannot read ({str(e).splitlines()[0]})") from None
    num_col = next((c for c in _NUMBER_COLUMNS if c in df.columns), None)
    if num_col is None or "arch" not in df.columns:
        raise UserError(f"{path}: needs columns 'number' and 'arch'; it has {', '.join(df.columns)}")
    if (trial is None) == (pick is None):
        raise UserError("give exactly one of --trial N and --pick best-quality")
    if trial is not None:
        rows = df[df[num_col] == int(trial)]
        if rows.empty:
            raise UserError(f"{path} has no trial {trial}; trials are {df[num_col].min()}..{df[num_col].max()}")
        row = rows.iloc[0]
    else:
        row = _best_quality(df, path, pick, latency_max)
    try:
        arch = json.loads(row["arch"])
    except (TypeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: trial {row[num_col]} has no valid arch JSON ({e})") from None
    ctx = search_defaults(search)
    hw_params = {}
    if isinstance(row.get("hw_params"), str) and row["hw_params"].strip():
        try:
            hw_params = json.loads(row["hw_params"])
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: trial {row[num_col]} has bad hw_params JSON ({e})") from None
    metrics = {c: _plain(row[c]) for c in df.columns if c not in ("arch", "hw_params")}
    return ChosenTrial(number=int(row[num_col]), arch=arch, hardware_params=hw_params, metrics=metrics, **ctx)


def search_defaults(search: str | Path) -> dict:
    """What a search folder says about every trial: {run, hardware, scenario}."""
    search = Path(search)
    if not search.is_dir():
        raise UserError(f"{search} does not exist; pass a search or training run folder")
    cfg = _search_config(search)
    scenario = cfg.get("scenario")
    return {"run": _first(cfg, "run", "run_dir", "supernet"), "hardware": _first(cfg, "hardware", "hw"),
            "scenario": scenario.get("name") if isinstance(scenario, dict) else scenario,
            "space": cfg.get("space")}


def search_finetune_steps(search: str | Path) -> int:
    """The ``--finetune-steps`` of the search in ``search`` (0: its qualities are of inherited
    weights), as its search.json records it."""
    return int(_search_config(Path(search)).get("finetune_steps") or 0)


def _best_quality(df, path: Path, pick: str, latency_max: float | None):
    if pick not in PICKS:
        raise UserError(f"--pick {pick!r} is unknown; use one of {', '.join(PICKS)}")
    ok = df
    if "feasible" in ok.columns:
        ok = ok[ok["feasible"].astype(str).str.lower().isin(("true", "1", "1.0"))]
    if latency_max is not None:
        if "latency_ms" not in ok.columns:
            raise UserError(f"{path} has no latency_ms column; drop --latency-max")
        ok = ok[ok["latency_ms"] <= latency_max]
    if "source" in ok.columns:  # measured qualities (supernet or --synthetic-quality), not predicted ones
        ok = ok[ok["source"].astype(str).isin(QUALITY_SOURCES)]
    if "bleu" in ok.columns and ok["bleu"].notna().any():
        ok = ok[ok["bleu"].notna()].sort_values("bleu", ascending=False, kind="stable")
    elif "loss" in ok.columns and ok["loss"].notna().any():
        ok = ok[ok["loss"].notna()].sort_values("loss", kind="stable")
    else:
        ok = ok.iloc[0:0]
    if ok.empty:
        bound = f" within --latency-max {latency_max} ms" if latency_max is not None else ""
        raise UserError(f"{path}: no feasible trial with a measured quality{bound}; "
                        "relax the bound or pass --trial N")
    return ok.iloc[0]
