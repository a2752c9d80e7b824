"""Results of a search in DIR: trials.csv, pareto.csv, summary.json (and the plots).

trials.csv has one row per finished trial: its number, whether it is feasible, where its
quality came from (``measured`` on the supernet, ``synthetic`` from --synthetic-quality,
``predicted`` by the screen, or ``cost-only`` when no quality objective is searched), the objective values, every metric
the cost engine reported, the constraint values, the per-layer bits, the arch as JSON and
the accelerator knobs. pareto.csv is the subset that is feasible, measured (or
synthetic) and not dominated. Infeasible trials never enter it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from ..errors import UserError
from ..space import Arch
from .front import FRONT_SOURCES, QUALITY_SOURCES, pareto_mask, to_minimize
from .hypervolume import front_hypervolume, hv_curve
from .objectives import Objective
from .params import trial_attrs

TRIALS_CSV, PARETO_CSV, SUMMARY = "trials.csv", "pareto.csv", "summary.json"


def _bits(arch: Arch, field: str) -> str:
    layers = list(arch.encoder) + list(arch.decoder)
    return " ".join(str(getattr(la, field)) for la in layers)


def summarize(study: optuna.Study, objectives: Sequence[Objective]) -> list[dict]:
    """One dict per finished trial (see the module doc), ``pareto`` marked."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        u = trial_attrs(t)
        cons = t.constraints or {}
        arch = Arch.from_json(u["arch"]) if "arch" in u else None
        row = {"number": t.number, "feasible": all(v <= 0 for v in cons.values()),
               "source": u.get("source", "")}
        for o, v in zip(objectives, t.values):
            row[o.name] = v
        row.update({k: (np.nan if v is None else v) for k, v in (u.get("metrics") or {}).items()
                    if k not in row})
        for k in ("predicted_loss", "predicted_bleu"):
            if k in u:
                row[k] = u[k]
        row.update({f"c_{k}": v for k, v in cons.items()})
        if arch is not None:
            row["layers"] = len(arch.encoder) + len(arch.decoder)
            row["weight_bits"] = _bits(arch, "weight_bits")
            row["act_bits"] = _bits(arch, "act_bits")
        row["hw_params"] = json.dumps(u.get("hw_params", {}), sort_keys=True)
        row["arch"] = u.get("arch", "")
        row["digest"] = u.get("digest", "")
        rows.append(row)
    rows.sort(key=lambda r: r["number"])
    mark_pareto(rows, objectives)
    return rows


def mark_pareto(rows: list[dict], objectives: Sequence[Objective]) -> None:
    """Set ``pareto`` on every row: feasible, measured (or cost-only) and non-dominated."""
    ok = [i for i, r in enumerate(rows) if r["feasible"] and r["source"] in FRONT_SOURCES]
    for r in rows:
        r["pareto"] = False
    if not ok:
        return
    loss = to_minimize(np.array([[rows[i][o.name] for o in objectives] for i in ok]),
                       [o.direction for o in objectives])
    for i, m in zip(ok, pareto_mask(loss)):
        rows[i]["pareto"] = bool(m)


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    from ..training.rundir import atomic_write_text
    atomic_write_text(path, df.to_csv(index=False))


def write_results(out: str | Path, rows: list[dict], objectives: Sequence[Objective], extra: dict | None = None,
                  plots: bool = True, reference: Sequence[float] | None = None,
                  latency_max: float | None = None) -> list[Path]:
    """Write trials.csv, pareto.csv, summary.json and the plots; returns the paths."""
    from ..training.rundir import atomic_write_text
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    front = df[df["pareto"]] if len(df) else df
    if len(front):
        front = front.sort_values(objectives[0].name)
    _atomic_csv(df, out / TRIALS_CSV)
    _atomic_csv(front, out / PARETO_CSV)
    files = [out / TRIALS_CSV, out / PARETO_CSV]
    summary = {"trials": int(len(df)), "feasible": int(df["feasible"].sum()) if len(df) else 0,
               "pareto": int(len(front)), "objectives": [o.name for o in objectives],
               "directions": [o.direction for o in objectives]}
    if len(df):
        summary["measured"] = int(df["source"].isin(QUALITY_SOURCES).sum())
        if reference is not None:
            # fixed by the space and the accelerator (not by this run's points): runs compare
            summary["hypervolume"] = front_hypervolume(rows, objectives, reference)
            summary["hypervolume_reference"] = [float(x) for x in reference]
            summary["hypervolume_reference_rule"] = ("minimised objectives; loss: ln(vocab), bleu: 0 (negated), "
                                                     "costs: 1.1 x the largest arch's on the preset")
        else:
            at, hv, ref = hv_curve(df, objectives)
            if ref is not None:
                summary["hypervolume"] = float(hv[-1])
                summary["hypervolume_reference"] = [float(x) for x in ref]
    summary.update(extra or {})
    atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    files.append(out / SUMMARY)
    if plots and len(df):
        from .plots import draw
        files += draw(out, df, objectives, latency_max=latency_max)
    return files


def load_results(out: str | Path) -> tuple[pd.DataFrame, list[Objective]]:
    """trials.csv and the objectives of a search folder (for ``cosearch pareto``)."""
    from .objectives import OBJECTIVES
    out = Path(out)
    path, cfg = out / TRIALS_CSV, out / "search.json"
    if not path.is_file() or not cfg.is_file():
        raise UserError(f"{out} is not a search folder (no {TRIALS_CSV} / search.json); pass the --out "
                        "of `cosearch search`")
    try:
        df = pd.read_csv(path)
        objs = [OBJECTIVES[n] for n in json.loads(cfg.read_text())["objectives"]]
    except (ValueError, KeyError, OSError) as e:
        raise UserError(f"{out}: cannot read the search results ({e}); rerun `cosearch search`") from None
    return df, objs
