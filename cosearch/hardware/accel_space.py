"""The accelerator as a search space of its own (co-design, as DNA and NAAS do).

The knobs are the PE array's rows and columns, the three buffer sizes, the dataflow, DRAM
bandwidth and clock; the budget is an ASIC area (mm^2) or the FPGA device's DSP, BRAM and
LUT counts. Choices come from the preset's ``codesign`` section, else from halving and
doubling the preset's own values.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arch_cost import resources
from .schema import DATAFLOWS, Hardware, load_hardware

KNOBS = ("rows", "cols", "weight_kb", "input_kb", "output_kb", "dataflow", "dram_gbps", "clock_mhz")


def _base_values(hw: Hardware) -> dict:
    m = hw.memory
    return {"rows": hw.array.rows, "cols": hw.array.cols, "weight_kb": m.weight_kb, "input_kb": m.input_kb,
            "output_kb": m.output_kb, "dataflow": hw.dataflow, "dram_gbps": m.dram_gbps,
            "clock_mhz": hw.clock_mhz}


def _around(v, kind=float) -> list:
    return sorted({kind(v / 2), kind(v), kind(v * 2)}) if kind is float else sorted({max(1, v // 2), v, v * 2})


@dataclass
class AcceleratorSpace:
    """Choices for each accelerator knob plus a budget; ``make`` builds a variant."""

    base: Hardware
    options: dict
    area_budget_mm2: float | None
    _made: dict = field(default_factory=dict, repr=False)

    def choices(self) -> dict[str, list]:
        """Knob -> list of choices (plain ints, floats and strings: ready for
        ``optuna.Trial.suggest_categorical``)."""
        return {k: list(v) for k, v in self.options.items()}

    def default(self) -> dict:
        """The preset's own values."""
        return _base_values(self.base)

    def make(self, params: dict) -> Hardware:
        """The accelerator with these knob values (cached: equal params, same object)."""
        key = tuple(sorted(params.items()))
        hw = self._made.get(key)
        if hw is None:
            hw = self.base.with_params(**params)
            if len(self._made) > 4096:
                self._made.clear()
            self._made[key] = hw
        return hw

    def suggest(self, trial, prefix: str = "hw.") -> Hardware:
        """Draw every knob from an Optuna trial and build the accelerator."""
        return self.make({k: trial.suggest_categorical(prefix + k, v) for k, v in self.options.items()})

    def sample(self, rng=None) -> dict:
        rng = np.random.default_rng(rng)
        return {k: v[int(rng.integers(len(v)))] for k, v in self.options.items()}

    def cardinality(self) -> int:
        return int(np.prod([len(v) for v in self.options.values()]))

    def feasible(self, hw: Hardware, features: int = 0) -> bool:
        """Within the area budget (ASIC) or the device's resources for PEs supporting the
        precision modes ``features`` (FPGA), the part's clock and the board's DRAM."""
        if hw.kind == "fpga":
            return resources(hw, features)[2]
        return (self.area_budget_mm2 is None or hw.area_mm2() <= self.area_budget_mm2) and hw.within_limits()


def accelerator_space(hw: Hardware | str) -> AcceleratorSpace:
    """The co-design space around a preset."""
    hw = load_hardware(hw)
    cd, base = hw.codesign, _base_values(hw)
    opts = {}
    for k in KNOBS:
        given = getattr(cd, k)
        if given is not None:
            opts[k] = list(given)
        elif k == "dataflow":
            opts[k] = list(DATAFLOWS)
        elif k in ("rows", "cols"):
            opts[k] = _around(base[k], int)
        else:
            opts[k] = _around(base[k])
    budget = cd.area_budget_mm2
    if hw.kind == "asic" and budget is None:
        budget = 1.5 * hw.area_mm2()
    return AcceleratorSpace(base=hw, options=opts, area_budget_mm2=budget if hw.kind == "asic" else None)
