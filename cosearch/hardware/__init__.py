"""Analytical accelerator cost engine: presets, workload graphs, per-operator and batch costs.

    hw = load_hardware("zcu102")
    rep = cost(space, arch, hw, scenario="decode")            # totals + rep.ops table
    out = cost_batch(space, archs, hw, scenario="decode")     # same numbers, vectorised
    hw_space = accelerator_space(hw); hw2 = hw.with_params(rows=64)

No torch here: the search calls this thousands of times per second on a CPU.
"""
from .cost import CostReport, cost
from .schema import Hardware, hardware_from_dict, load_hardware
from .workload import Scenario, build_graph

__all__ = ["CostReport", "Hardware", "Scenario", "build_graph", "cost", "hardware_from_dict",
           "load_hardware"]
