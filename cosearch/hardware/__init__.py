"""Analytical accelerator cost engine: presets, workload graphs, per-operator and batch costs.

    hw = load_hardware("zcu102")
    rep = cost(space, arch, hw, scenario="decode")            # totals + rep.ops table
    out = cost_batch(space, archs, hw, scenario="decode")     # same numbers, vectorised
    hw_space = accelerator_space(hw); hw2 = hw.with_params(rows=64)

No torch here: the search calls this thousands of times per second on a CPU.
"""
from .batch import Genes, cost_batch
from .cost import CostReport, cost
from .schema import Hardware, hardware_from_dict, load_hardware
from .workload import Scenario, build_graph

__all__ = ["CostReport", "Genes", "Hardware", "Scenario", "build_graph", "cost", "cost_batch",
           "hardware_from_dict", "load_hardware"]
