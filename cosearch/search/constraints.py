"""Constraints of a co-search and the up-front check that they can be met at all.

Constraint values follow Optuna: a trial is feasible when every value is <= 0. Names:
``latency`` (latency_ms - bound), ``area`` (area_mm2 - bound) and ``hw_feasible`` (0 when
the accelerator fits: FPGA resources, the preset's ASIC area budget; 1 otherwise).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class Bounds:
    latency_max: float | None = None  # ms
    area_max: float | None = None     # mm^2

    def __post_init__(self):
        for k in ("latency_max", "area_max"):
            v = getattr(self, k)
            if v is not None and not v > 0:
                raise UserError(f"--{k.replace('_', '-')} must be positive (got {v})")


def constraint_values(metrics: dict[str, np.ndarray], bounds: Bounds) -> dict[str, np.ndarray]:
    """Per design, each constraint's value (<= 0 means satisfied)."""
    out = {"hw_feasible": np.where(np.asarray(metrics["feasible"], dtype=bool), 0.0, 1.0)}
    if bounds.latency_max is not None:
        out["latency"] = np.asarray(metrics["latency_ms"], dtype=np.float64) - bounds.latency_max
    if bounds.area_max is not None:
        out["area"] = np.asarray(metrics["area_mm2"], dtype=np.float64) - bounds.area_max
    return out


@dataclass(frozen=True)
class Reachable:
    """The best values the check found (reported in search.json and the CLI)."""

    min_latency_ms: float
    min_area_mm2: float | None
    feasible_fraction: float
    samples: int


def _hw_grid(choices: dict[str, list], rng: np.random.Generator, limit: int) -> list[tuple]:
    """Accelerator knob settings to try: all of them when few, else a random subset."""
    if not choices:
        return [()]
    keys = sorted(choices)
    total = int(np.prod([len(choices[k]) for k in keys]))
    if total <= limit:
        return [tuple(zip(keys, vals)) for vals in itertools.product(*(choices[k] for k in keys))]
    return [tuple((k, choices[k][rng.integers(len(choices[k]))]) for k in keys) for _ in range(limit)]


def check_reachable(space, costs, bounds: Bounds, hw_choices: dict[str, list], objectives=(),
                    samples: int = 2000, seed: int = 0) -> Reachable:
    """Raise ``UserError`` when no design can meet the bounds, naming the best reachable value.

    Costs ``samples`` random archs plus the smallest and the largest (every accelerator
    variant too, or a random subset of them) through the batch cost path.
    """
    from .params import Design

    hw = costs.hw
    if (bounds.area_max is not None or "area" in objectives) and hw.kind != "asic":
        raise UserError(f"area applies to ASIC presets; {hw.name} is an FPGA (its resources are "
                        "checked as the hw_feasible constraint): drop --area-max / the area objective")
    rng = np.random.default_rng(seed)
    archs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(samples)]
    variants = _hw_grid(hw_choices, rng, 24)  # each variant builds its own cost tables
    min_lat, min_area, n_ok, n = np.inf, np.inf, 0, 0
    per_hw = max(64, samples // len(variants))
    for v in variants:
        sub = archs[:2] + [archs[2 + i] for i in rng.integers(samples, size=per_hw)] if len(variants) > 1 else archs
        m = costs([Design(a, v) for a in sub])
        fits = np.asarray(m["feasible"], dtype=bool)
        lat = np.asarray(m["latency_ms"])
        if fits.any():
            min_lat = min(min_lat, float(lat[fits].min()))
        if hw.kind == "asic":
            min_area = min(min_area, float(np.asarray(m["area_mm2"])[0]))
        ok = fits.copy()
        if bounds.latency_max is not None:
            ok &= lat <= bounds.latency_max
        if bounds.area_max is not None:
            ok &= np.asarray(m["area_mm2"]) <= bounds.area_max
        n_ok += int(ok.sum())
        n += len(sub)
    where = f"{hw.name}" + (" (any co-design variant tried)" if hw_choices else "")
    if not np.isfinite(min_lat):
        raise UserError(f"no design fits on {where}: every accelerator setting tried exceeds its "
                        "resources or area budget; use a larger device or other codesign choices")
    if bounds.latency_max is not None and min_lat > bounds.latency_max:
        raise UserError(f"--latency-max {bounds.latency_max:g} ms cannot be met on {where}: the fastest "
                        f"design found (of {n}, the smallest arch included) takes {min_lat:.4g} ms")
    if bounds.area_max is not None and min_area > bounds.area_max:
        raise UserError(f"--area-max {bounds.area_max:g} mm^2 cannot be met by {where}: the smallest "
                        f"accelerator tried is {min_area:.4g} mm^2")
    if n_ok == 0:
        raise UserError(f"no design found meets --latency-max and --area-max together on {where} "
                        f"(best latency {min_lat:.4g} ms, best area {min_area:.4g} mm^2); relax one")
    return Reachable(min_lat, min_area if np.isfinite(min_area) else None, n_ok / n, n)
