"""Objectives of a co-search and the evaluation of a batch of designs.

Costs come from the cost engine's vectorised path (one ``cost_batch`` call per batch, one
per distinct accelerator when co-searching); quality from a (cached) quality source, and
only for designs that need it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import UserError
from ..space import SearchSpace
from .constraints import Bounds, constraint_values
from .params import Design


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "minimize" | "maximize"
    column: str     # the metric it reads (a trials.csv column)
    label: str      # axis label


OBJECTIVES = {
    "quality": Objective("quality", "minimize", "loss", "validation loss (inherited weights)"),
    "bleu": Objective("bleu", "maximize", "bleu", "BLEU (inherited weights)"),
    "latency": Objective("latency", "minimize", "latency_ms", "latency (ms)"),
    "energy": Objective("energy", "minimize", "energy_mj", "energy (mJ)"),
    "size": Objective("size", "minimize", "size_mb", "weight size (MB)"),
    "params": Objective("params", "minimize", "params_m", "parameters (millions)"),
    "area": Objective("area", "minimize", "area_mm2", "accelerator area (mm^2)"),
}
QUALITY_COLUMNS = ("loss", "bleu")
#: what a measurement may add to its quality: standard errors, and measurements averaged
QUALITY_EXTRAS = ("loss_se", "loss_n", "bleu_se", "bleu_n")


def parse_objectives(text: str | Sequence[str]) -> list[Objective]:
    """"quality,latency,size" -> Objectives; unknown or repeated names are a UserError."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise UserError(f"--objectives is empty; choose from {', '.join(OBJECTIVES)}")
    bad = [n for n in names if n not in OBJECTIVES]
    if bad:
        raise UserError(f"--objectives: unknown objective {bad[0]!r}; choose from {', '.join(OBJECTIVES)}")
    if len(set(names)) != len(names):
        raise UserError(f"--objectives: {names} names an objective twice")
    if "quality" in names and "bleu" in names:
        raise UserError("--objectives: give quality (validation loss) or bleu, not both")
    return [OBJECTIVES[n] for n in names]


@dataclass
class Outcome:
    """One evaluated design: objective values, constraints (<= 0 is feasible), metrics."""

    values: list[float]
    constraints: dict[str, float]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())


class CostModel:
    """Costs of designs on one accelerator preset (plus its co-design variants)."""

    def __init__(self, space: SearchSpace, hw, scenario):
        from ..hardware import load_hardware
        from ..hardware.batch import cost_batch
        self.space, self.hw, self.scenario = space, load_hardware(hw), scenario
        self._cost_batch = cost_batch
        self._variants: dict[tuple, object] = {(): self.hw}

    def hardware(self, hw_params: tuple):
        if hw_params not in self._variants:
            self._variants[hw_params] = self.hw.with_params(**dict(hw_params))
        return self._variants[hw_params]

    def __call__(self, designs: Sequence[Design]) -> dict[str, np.ndarray]:
        archs = [d.arch for d in designs]
        if all(not d.hw_params for d in designs):
            hws = self.hw
        else:
            hws = [self.hardware(d.hw_params) for d in designs]
        out = self._cost_batch(self.space, archs, hws, scenario=self.scenario)
        res = {k: np.asarray(v) for k, v in out.items()}
        res["size_mb"] = res["size_bytes"] / 1e6
        return res


class Evaluator:
    """Evaluates batches of designs: costs first (cheap), then quality where needed."""

    def __init__(self, space: SearchSpace, objectives: Sequence[Objective], costs: CostModel,
                 quality=None, bounds: Bounds = Bounds()):
        self.space, self.objectives, self.costs = space, list(objectives), costs
        self.quality, self.bounds = quality, bounds
        self.needs_quality = quality is not None and any(o.column in QUALITY_COLUMNS for o in self.objectives)

    def cost_metrics(self, designs: Sequence[Design]) -> dict[str, np.ndarray]:
        m = self.costs(designs)
        m["params_m"] = np.array([self.space.param_count(d.arch) for d in designs], dtype=np.float64) / 1e6 \
            if any(o.name == "params" for o in self.objectives) else np.full(len(designs), np.nan)
        return m

    def outcomes(self, designs: Sequence[Design], cost_metrics: dict[str, np.ndarray],
                 quality: dict[str, np.ndarray] | None) -> list[Outcome]:
        """Combine cost metrics and (measured or predicted) quality into outcomes."""
        metrics = dict(cost_metrics)
        if quality is not None:
            metrics.update(quality)
        cons = constraint_values(metrics, self.bounds)
        out = []
        for i in range(len(designs)):
            row = {k: _plain(v[i]) for k, v in metrics.items()}
            vals = []
            for o in self.objectives:
                v = row.get(o.column)
                if v is None or not np.isfinite(v):
                    raise UserError(f"objective {o.name}: metric {o.column} is not available here "
                                    f"(area needs an ASIC preset; bleu needs a translation run)")
                vals.append(float(v))
            out.append(Outcome(vals, {k: float(c[i]) for k, c in cons.items()}, row))
        return out

    def __call__(self, designs: Sequence[Design]) -> list[Outcome]:
        cm = self.cost_metrics(designs)
        q = self.quality([d.arch for d in designs]) if self.needs_quality else None
        return self.outcomes(designs, cm, q)


def _plain(x):
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    return float(x)


def finite_or_none(v):
    """A metric as JSON can hold it: NaN and infinities become None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
