"""SCALE-Sim worker for hw_validate.py: runs in its own virtual environment (not a project
dependency). Reads a JSON list of GEMMs, writes their compute cycles and run times.

    /tmp/venv_scalesim/bin/python benchmarks/hw_ref_scalesim.py IN.json OUT.json
"""
import json
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """[general]
run_name = cosearch_validate

[architecture_presets]
ArrayHeight:    {rows}
ArrayWidth:     {cols}
IfmapSramSzkB:  {ibuf}
FilterSramSzkB: {wbuf}
OfmapSramSzkB:  {obuf}
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Dataflow:       {df}
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def run_one(g: dict, work: Path) -> dict:
    from scalesim.scale_sim import scalesim

    cfg = work / "scale.cfg"
    cfg.write_text(CONFIG.format(**g))
    topo = work / "topo.csv"
    topo.write_text(f"Layer, M, N, K,\n{g['name']}, {g['M']}, {g['N']}, {g['K']},\n")
    layout = work / "layout.csv"  # required even when no custom layout is used
    layout.write_text("Layer name," + ",".join(f"c{i}" for i in range(20)) + ",\n"
                      + g["name"] + ", 1,1,1,1,1,1, 0,1,2, 0,1,2, 0,1,2,3, 0,1,2,3,\n")
    t = time.perf_counter()
    s = scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topo), layout=str(layout),
                 input_type_gemm=True)
    s.run_scale(top_path=str(work))
    seconds = time.perf_counter() - t
    layer = s.runner.single_layer_sim_object_list[0]
    items = layer.get_compute_report_items()
    return {**g, "total_cycles": int(items[0]), "compute_cycles": int(items[1]), "seconds": seconds}


def main():
    gemms = json.loads(Path(sys.argv[1]).read_text())
    out = []
    with tempfile.TemporaryDirectory() as d:
        for g in gemms:
            out.append(run_one(g, Path(d)))
            print(json.dumps({k: out[-1][k] for k in ("name", "df", "rows", "compute_cycles", "seconds")}),
                  flush=True)
    Path(sys.argv[2]).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
