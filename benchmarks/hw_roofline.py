"""The presets against their roofline, decode against weight bits, and the co-design's best
design per dataflow: the checks of issue 10 in one run.

    python benchmarks/hw_roofline.py [--space multi30k] [--out benchmarks/results/hw_roofline.json]

For the largest architecture of the space: latency over the roofline max(peak compute,
DRAM bytes / bandwidth) in prefill and decode (peak compute = MACs x cycles-per-MAC /
PEs), the W2A8 / W8A8 and W4A8 / W8A8 latency ratios, and, over every accelerator of the
preset's co-design space (``--codesign``), the fastest feasible decode design per dataflow.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cosearch.hardware import accelerator_space, cost, cost_batch, load_hardware  # noqa: E402
from cosearch.presets import list_presets  # noqa: E402
from cosearch.space import SearchSpace  # noqa: E402


def roofline(space, arch, hw, scenario) -> dict:
    r = cost(space, arch, hw, scenario)
    g = r.ops[r.ops.kind == "gemm"]
    peak = sum(m * hw.cycles_per_mac(w, a) for m, w, a in zip(g.macs, g.w_bits, g.a_bits)) \
        / (hw.array.rows * hw.array.cols)
    memory = r.dram_bytes / hw.derived.bytes_per_cycle
    return {"latency_ms": r.latency_ms, "cycles": r.cycles, "peak_compute_cycles": peak, "dram_cycles": memory,
            "over_roofline": r.cycles / max(peak, memory), "power_w": r.power_w, "energy_mj": r.energy_mj}


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
        row = {}
        for sc in ("prefill", "decode"):
            row[sc] = roofline(space, space.with_bits(big, weight_bits=8, act_bits=8), hw, sc)
            lat = {wb: cost(space, space.with_bits(big, weight_bits=wb, act_bits=8), hw, sc).latency_ms
                   for wb in (16, 8, 4, 2)}
            row[sc]["latency_ms_by_weight_bits_a8"] = lat
            row[sc]["w2a8_over_w8a8"] = lat[2] / lat[8]
            row[sc]["w4a8_over_w8a8"] = lat[4] / lat[8]
        if name in a.codesign:
            row["codesign_best_decode_per_dataflow"] = best_per_dataflow(
                space, space.with_bits(big, weight_bits=8, act_bits=8), name)
        results[name] = row
        print(name, json.dumps({sc: {k: round(v, 3) for k, v in row[sc].items() if isinstance(v, float)}
                                for sc in ("prefill", "decode")}))
        if "codesign_best_decode_per_dataflow" in row:
            print("  best decode per dataflow:", {df: round(v["latency_ms"], 3) for df, v in
                                                   row["codesign_best_decode_per_dataflow"].items()})
    path = Path(a.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"benchmark": "hw_roofline", "space": a.space, "arch": "largest",
                               "results": results}, indent=1) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
