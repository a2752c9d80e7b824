"""The presets against their roofline, decode against weight bits, and the co-design's best
design per dataflow.

    python benchmarks/hw_roofline.py [--space multi30k] [--out benchmarks/results/hw_roofline.json]

For the largest architecture of the space, in prefill and in decode at W8A8, W4A8 and
W2A8: latency over the roofline max(peak compute, DRAM bytes / sustained bandwidth), where
peak compute = MACs x cycles-per-MAC / PEs and the DRAM bytes are those the engine counts
(weights kept on chip across decode steps are read once, not every step). A systolic array
also needs rows + columns cycles to fill and drain before a result depends on the previous
one; ``over_pipeline_bound`` adds one such drain per run of dependent GEMMs to the
roofline, so that it shows what is left once the array's pipeline depth is counted. Over
every accelerator of the preset's co-design space (``--codesign``), the fastest feasible
decode design per dataflow.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cosearch.hardware import accelerator_space, cost, cost_batch, load_hardware  # noqa: E402
from cosearch.presets import list_presets  # noqa: E402
from cosearch.space import SearchSpace  # noqa: E402

BITS = (8, 4, 2)


def roofline(space, arch, hw, scenario) -> dict:
    r = cost(space, arch, hw, scenario)
    g = r.ops[r.ops.kind == "gemm"]
    peak = sum(m * hw.cycles_per_mac(w, a) for m, w, a in zip(g.macs, g.w_bits, g.a_bits)) \
        / (hw.array.rows * hw.array.cols)
    memory = r.dram_bytes / hw.derived.bytes_per_cycle
    # one systolic drain per run of dependent GEMMs (decode: every step runs each GEMM)
    runs = float(g["runs"].sum())
    drain = hw.array.rows + hw.array.cols - 2 if hw.array.pipelined_folds else 0
    bound = max(peak, memory)
    return {"latency_ms": r.latency_ms, "cycles": r.cycles, "peak_compute_cycles": peak, "dram_cycles": memory,
            "over_roofline": r.cycles / bound, "over_pipeline_bound": r.cycles / max(peak + runs * drain, memory),
            "weights_on_chip_ops": int((r.ops.weights == "on chip").sum()), "size_bytes": r.size_bytes,
            "power_w": r.power_w, "energy_mj": r.energy_mj}


def best_per_dataflow(space, arch, name, scenario="decode") -> dict:
    acc = accelerator_space(name)
    ch = acc.choices()
    combos = [dict(zip(ch, v)) for v in itertools.product(*ch.values())]
    out = cost_batch(space, [arch] * len(combos), [acc.make(c) for c in combos], scenario)
    best = {}
    for df in ch["dataflow"]:
        idx = [i for i, c in enumerate(combos) if c["dataflow"] == df and out["feasible"][i]]
        if idx:
            b = min(idx, key=lambda i: out["latency_ms"][i])
            best[df] = {"latency_ms": float(out["latency_ms"][b]), "power_w": float(out["power_w"][b]),
                        "design": combos[b], "feasible_designs": len(idx)}
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="multi30k")
    p.add_argument("--codesign", nargs="*", default=["zcu102", "bitfusion"],
                   help="presets whose whole co-design space is enumerated (decode, W8A8)")
    p.add_argument("--out", default="benchmarks/results/hw_roofline.json")
    a = p.parse_args(argv)
    space = SearchSpace.load(a.space)
    big = space.largest()
    results = {}
    for name in list_presets("hw_models"):
        hw = load_hardware(name)
        row = {"prefill": roofline(space, space.with_bits(big, weight_bits=8, act_bits=8), hw, "prefill")}
        for wb in BITS:
            row[f"decode_w{wb}a8"] = roofline(space, space.with_bits(big, weight_bits=wb, act_bits=8), hw, "decode")
        lat = {wb: row[f"decode_w{wb}a8"]["latency_ms"] for wb in BITS}
        row["decode_w2a8_over_w8a8"] = lat[2] / lat[8]
        row["decode_w4a8_over_w8a8"] = lat[4] / lat[8]
        row["decode_falls_with_weight_bits"] = bool(lat[8] > lat[4] > lat[2])
        if name in a.codesign:
            row["codesign_best_decode_per_dataflow"] = best_per_dataflow(
                space, space.with_bits(big, weight_bits=8, act_bits=8), name)
        results[name] = row
        print(name, json.dumps({k: round(v["over_roofline"], 2) for k, v in row.items() if isinstance(v, dict)
                                and "over_roofline" in v}),
              "decode ms", {wb: round(v, 3) for wb, v in lat.items()})
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"benchmark": "hw_roofline", "space": a.space, "arch": "largest",
                               "machine": {"python": platform.python_version(), "numpy": np.__version__},
                               "results": results}, indent=1) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
