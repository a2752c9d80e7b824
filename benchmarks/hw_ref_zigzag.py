"""ZigZag worker for hw_validate.py (runs where zigzag-dse is installed; not a project
dependency). Reads a JSON list of jobs, runs each through ZigZag, writes cycles, energy,
the chosen spatial mapping and times.

    python benchmarks/hw_ref_zigzag.py IN.json OUT.json

A job is one GEMM (``M``, ``K``, ``N``; ``G`` > 1: that many heads back to back, one
ZigZag layer ``O[g][b][k] += I[g][b][c] * W[g][c][k]``) at bits ``wb`` (weights) and
``ab`` (inputs, outputs) on ``accel``, a description ``hw_validate.zigzag_accel`` derives
from a cosearch preset:

* operational array ``sizes`` [cols, rows, packing dims...] with unit energy ``mac_pj``;
  D1 (columns) and D2 (rows) systolic; a packed DSP's or fusion unit's extra MACs are
  further, non-systolic dimensions (``pack``: [[layer dim, factor], ...]);
* per-PE registers for I, W and O (psum) at ``reg_pj`` per byte (ports as ZigZag's
  ``tpu_like`` accumulator: separate read/write ports towards the array and the buffer);
* three buffers W, I, O (``wbuf_bits``, ``ibuf_bits``, ``obuf_bits``) at ``e_w``,
  ``e_i``, ``e_o`` pJ per byte read or written, banked: W and O one bank per array
  column, I one per row, each port wide enough to feed its column or row every cycle (the
  engine's assumption: the on-chip feed keeps up);
* DRAM at ``e_dram`` pJ/B through one port of ``dram_bits`` bits per cycle (sustained);
  it holds W, and I / O when ``dram_ops`` says they overflow or run layer by layer.

``spatial`` lists the spatial mappings to try (those the preset's dataflow admits), each
with ``banks``: how each buffer is banked for it (one bank per column, per row, or one
for all: along the array axis its operand is shared over), the banks the mapping uses
sharing the buffer's capacity (``bank_used``). Each runs with ZigZag's
temporal mapping search (LOMA, ``lpf_limit``, latency-optimal), and the fastest (ties:
least energy) is reported, as the engine picks its mapping.
"""
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path


def _port(name, kind, bw, alloc):
    # bandwidth_min 8: ZigZag then counts accesses at byte granularity (energy = bytes x pJ/B)
    return {"name": name, "type": kind, "bandwidth_min": min(8, bw), "bandwidth_max": bw, "allocation": alloc}


def _memory(size_bits, pj_per_byte, bw, operands, served):
    """A memory level whose r_cost / w_cost are per access of ``bw`` bits."""
    if operands == ["O"] and not served:  # accumulator register: as tpu_like's rf_2B
        ports = [_port("r_port_1", "read", bw, ["O, tl"]), _port("r_port_2", "read", bw, ["O, th"]),
                 _port("w_port_1", "write", bw, ["O, fh"]), _port("w_port_2", "write", bw, ["O, fl"])]
    else:
        rd = [a for o in operands for a in ((f"{o}, tl", "O, th") if o == "O" else (f"{o}, tl",))]
        wr = [a for o in operands for a in ((f"{o}, fh", "O, fl") if o == "O" else (f"{o}, fh",))]
        ports = [_port("r_port_1", "read", bw, rd), _port("w_port_1", "write", bw, wr)]
    cost = float(pj_per_byte * bw / 8)
    return {"size": int(size_bits), "r_cost": cost, "w_cost": cost, "area": 0, "latency": 1,
            "operands": operands, "ports": ports, "served_dimensions": served}


def accelerator_yaml(a: dict, wb: int, ab: int, banks: dict, flat: bool = False, bank_used: dict | None = None) -> dict:
    sizes = a["sizes"]
    if flat:  # one output per PE over the whole array, inputs broadcast: no systolic axis
        sizes = [sizes[0] * sizes[1], 1] + sizes[2:]
    dims = [f"D{i + 1}" for i in range(len(sizes))]
    cols, rows = sizes[:2]
    packed = 1
    for s in sizes[2:]:
        packed *= s
    pb = a["psum_bits"]

    def buffer(op, size_bits, pj, bits, operand):
        # banked along the axis the operand travels: per column (serving the column's
        # rows), per row, or one bank for all; each port feeds its column / row every cycle;
        # the banks the mapping uses share the buffer's capacity
        n, served, width = {"col": (cols, ["D2"], rows), "row": (rows, ["D1"], cols),
                            "one": (1, ["D1", "D2"], max(rows, cols))}[banks[op]]
        n = (bank_used or {}).get(op, n)
        return _memory(max(8, size_bits // n), pj, width * packed * bits, [operand], served + dims[2:])

    mems = {
        "reg_W": _memory(2 * wb, a["reg_pj"], wb, ["I2"], []),
        "reg_I": _memory(2 * ab, a["reg_pj"], ab, ["I1"], []),
        "reg_O": _memory(pb, a["reg_pj"], pb, ["O"], []),
        "sram_W": buffer("W", a["wbuf_bits"], a["e_w"], wb, "I2"),
        "sram_I": buffer("I", a["ibuf_bits"], a["e_i"], ab, "I1"),
        "sram_O": buffer("O", a["obuf_bits"], a["e_o"], pb, "O"),
    }
    alloc = []
    for o in ["I2"] + a["dram_ops"]:
        alloc += [f"{o}, fh", f"{o}, tl"] + (["O, fl", "O, th"] if o == "O" else [])
    mems["dram"] = {"size": 10 ** 13, "r_cost": float(a["e_dram"] * a["dram_bits"] / 8),
                    "w_cost": float(a["e_dram"] * a["dram_bits"] / 8), "area": 0, "latency": 1,
                    "operands": ["I2"] + a["dram_ops"], "ports": [_port("rw_port_1", "read_write", a["dram_bits"], alloc)],
                    "served_dimensions": dims}
    return {"name": "cosearch_preset", "memories": mems,
            "operational_array": {"unit_energy": float(a["mac_pj"]), "unit_area": 1, "dimensions": dims,
                                  "sizes": sizes, "systolic_dimensions": [] if flat else ["D1", "D2"]}}


def run_one(g: dict, cand: dict, work: str) -> dict:
    import yaml
    from zigzag.api import get_hardware_performance_zigzag

    a, spatial = g["accel"], cand["spatial"]
    hw_path, map_path = os.path.join(work, "accel.yaml"), os.path.join(work, "mapping.yaml")
    with open(hw_path, "w") as f:
        yaml.safe_dump(accelerator_yaml(a, g["wb"], g["ab"], cand["banks"], cand.get("flat", False),
                                        cand.get("bank_used")), f, sort_keys=False)
    mapping = [{"name": "default", "spatial_mapping": spatial, "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}]
    with open(map_path, "w") as f:
        yaml.safe_dump(mapping, f, sort_keys=False)
    G = g.get("G", 1)
    dims, sizes, eq = ["B", "C", "K"], [g["M"], g["K"], g["N"]], "O[b][k]+=I[b][c]*W[c][k]"
    if G > 1:
        dims, sizes, eq = ["G"] + dims, [G] + sizes, "O[g][b][k]+=I[g][b][c]*W[g][c][k]"
    layer = {"id": 0, "name": g["name"], "operator_type": "Gemm", "equation": eq, "loop_dims": dims,
             "loop_sizes": sizes, "operand_source": {"I": 0},
             "operand_precision": {"I": g["ab"], "W": g["wb"], "O": a["psum_bits"], "O_final": g["ab"]}}
    t = time.perf_counter()
    energy, latency, cmes = get_hardware_performance_zigzag(
        workload=[layer], accelerator=hw_path, mapping=map_path, opt=g.get("opt", "EDP"), dump_folder=work,
        lpf_limit=g.get("lpf_limit", 6), loma_show_progress_bar=False)
    cme = cmes[0][1][0][0]
    return {"cycles": float(latency), "energy_pj": float(energy), "mac_energy_pj": float(cme.mac_energy),
            "ideal_temporal_cycles": float(cme.ideal_temporal_cycle), "stall_cycles": float(cme.stall_slack_comb),
            "onload_cycles": float(cme.data_onloading_cycle), "offload_cycles": float(cme.data_offloading_cycle),
            "drain_cycles": float(cme.systolic_drain_cycle), "temporal_mapping": str(cme.temporal_mapping),
            "seconds": time.perf_counter() - t}


def main():
    logging.disable(logging.WARNING)
    jobs = json.loads(Path(sys.argv[1]).read_text())
    out = []
    with tempfile.TemporaryDirectory() as d:
        for g in jobs:
            tries = []
            for cand in g["spatial"]:
                try:
                    tries.append({**cand, **run_one(g, cand, d)})
                except Exception as e:  # a mapping ZigZag cannot place: report, keep the others
                    tries.append({**cand, "error": f"{type(e).__name__}: {e}"})
            ok = [t for t in tries if "error" not in t]
            best = min(ok, key=lambda t: (t["cycles"], t["energy_pj"])) if ok else {}
            rec = {k: v for k, v in g.items() if k != "accel"}
            rec.update(best=best, tries=tries, seconds=sum(t.get("seconds", 0.0) for t in tries))
            out.append(rec)
            print(json.dumps({"name": g["name"], "cycles": best.get("cycles"), "energy_pj": best.get("energy_pj"),
                              "seconds": round(rec["seconds"], 2)}), flush=True)
    Path(sys.argv[2]).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
