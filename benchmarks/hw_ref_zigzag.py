"""ZigZag worker for hw_validate.py: runs in its own virtual environment (not a project
dependency). Reads a JSON list of GEMMs with bit-widths, runs each through ZigZag on its
bundled ``tpu_like`` accelerator (32x32 weight-stationary) or, when a job carries
``accel`` (rows, cols, df, sram_bits, dram_bits), on that accelerator built from the same
template (array size, dataflow's spatial mapping, on-chip SRAM, DRAM port width), and
writes cycles, energy and times.

    /tmp/venv_zigzag/bin/python benchmarks/hw_ref_zigzag.py IN.json OUT.json
"""
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path


def custom_accelerator(root: str, a: dict, work: str) -> tuple[str, str]:
    """ZigZag accelerator and mapping YAMLs for an R x C array from the tpu_like template."""
    import yaml

    hw = yaml.safe_load(open(f"{root}/inputs/hardware/tpu_like.yaml"))
    hw["name"] = "cosearch_preset"
    hw["operational_array"]["sizes"] = [a["cols"], a["rows"]]
    hw["memories"]["sram_2MB"]["size"] = int(a["sram_bits"])
    for port in hw["memories"]["dram"]["ports"]:
        port["bandwidth_min"] = port["bandwidth_max"] = int(a["dram_bits"])
    # WS: weights stationary, the array spans K (rows) x N (cols); OS: outputs stationary, M x N
    rows_dim = "C" if a["df"] == "ws" else "B"
    mapping = [{"name": "default", "spatial_mapping": {"D1": [f"K, {a['cols']}"], "D2": [f"{rows_dim}, {a['rows']}"]},
                "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}]
    hw_path, map_path = os.path.join(work, "accel.yaml"), os.path.join(work, "mapping.yaml")
    with open(hw_path, "w") as f:
        yaml.safe_dump(hw, f, sort_keys=False)
    with open(map_path, "w") as f:
        yaml.safe_dump(mapping, f, sort_keys=False)
    return hw_path, map_path


def run_one(g: dict, dump: str) -> dict:
    import zigzag
    from zigzag.api import get_hardware_performance_zigzag

    root = os.path.dirname(zigzag.__file__)
    accel, mapping = f"{root}/inputs/hardware/tpu_like.yaml", f"{root}/inputs/mapping/tpu_like.yaml"
    if g.get("accel"):
        accel, mapping = custom_accelerator(root, g["accel"], dump)
    layer = {"id": 0, "name": g["name"], "operator_type": "Gemm", "equation": "O[b][k]+=I[b][c]*W[c][k]",
             "loop_dims": ["B", "C", "K"], "loop_sizes": [g["M"], g["K"], g["N"]],
             # partial sums at 16 bits: tpu_like's output register is 16 bits wide
             "operand_precision": {"I": g["ab"], "W": g["wb"], "O": 16, "O_final": g["ab"]},
             "operand_source": {"I": 0}}
    t = time.perf_counter()
    energy, latency, cmes = get_hardware_performance_zigzag(
        workload=[layer], accelerator=accel, mapping=mapping, opt="latency", dump_folder=dump,
        lpf_limit=g.get("lpf_limit", 4), loma_show_progress_bar=False)
    seconds = time.perf_counter() - t
    cme = cmes[0][0]
    return {**g, "cycles": float(latency), "energy_pj": float(energy), "ideal_cycles": float(cme.ideal_cycle),
            "onload_cycles": float(cme.data_onloading_cycle), "offload_cycles": float(cme.data_offloading_cycle),
            "mac_energy_pj": float(cme.mac_energy), "mem_energy_pj": float(cme.mem_energy), "seconds": seconds}


def main():
    logging.disable(logging.WARNING)
    gemms = json.loads(Path(sys.argv[1]).read_text())
    out = []
    with tempfile.TemporaryDirectory() as d:
        for g in gemms:
            out.append(run_one(g, d))
            print(json.dumps({k: out[-1][k] for k in ("name", "wb", "ab", "cycles", "energy_pj", "seconds")}),
                  flush=True)
    Path(sys.argv[2]).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
