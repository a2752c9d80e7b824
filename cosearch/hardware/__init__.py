"""Analytical accelerator cost engine: presets, workload graphs, per-operator and batch costs.

    hw = load_hardware("zcu102")                              # preset name or YAML path
    rep = cost(space, arch, hw, scenario="decode")            # totals + rep.ops (DataFrame)
    one = cost_gemm(1, 512, 2048, hw, wbits=4, abits=8)       # one GEMM: SCALE-Sim cycles, ...
    out = cost_batch(space, archs, hw, scenario="decode")     # same numbers, vectorised
    hw_space = accelerator_space(hw)                          # co-design knobs + budget
    hw2 = hw.with_params(rows=64, dataflow="os")              # an accelerator variant

No torch here: the search calls this thousands of times per second on a CPU.
"""
from .accel_space import AcceleratorSpace, accelerator_space
from .batch import Genes, cost_batch
from .arch_cost import CostReport, cost, cost_gemm
from .schema import Hardware, hardware_from_dict, load_hardware
from .workload import Scenario, build_graph

__all__ = ["AcceleratorSpace", "CostReport", "Genes", "Hardware", "Scenario", "accelerator_space",
           "build_graph", "cost", "cost_batch", "cost_gemm", "hardware_from_dict", "load_hardware"]
