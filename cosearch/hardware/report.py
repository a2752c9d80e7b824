"""Text tables of a cost report (the ``cosearch cost`` command prints these)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..inputs import read_json
from ..space import Arch, SearchSpace
from .arch_cost import CostReport

_COLUMNS = {"op": "operator", "M": "M", "K": "K", "N": "N", "count": "x", "w_bits": "w", "a_bits": "a",
            "cycles": "cycles", "bound": "bound", "pe_utilization": "util", "dram_kb": "DRAM KB",
            "energy_uj": "energy uJ"}


def load_arch(space: SearchSpace, what: str) -> Arch:
    """``largest``, ``smallest`` or a JSON file written by ``Arch.to_json()``, validated."""
    if what == "largest":
        return space.largest()
    if what == "smallest":
        return space.smallest()
    path = Path(what)
    try:  # a FIFO, not UTF-8, not JSON, nested too deep: one line each
        data = read_json(path, "architecture file")
    except UserError as e:
        raise UserError(f"{e} (--arch: largest, smallest or a JSON file from Arch.to_json())") from None
    try:
        arch = Arch.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: not an architecture as Arch.to_json() writes it "
                        f"({type(e).__name__}: {e})") from None
    return space.validate_arch(arch, source=str(path))


def ops_table(rep: CostReport) -> pd.DataFrame:
    """Per-operator rows with readable units."""
    df = rep.ops.copy()
    df["dram_kb"] = df["dram_bytes"] / 1024
    df["energy_uj"] = df["energy_fj"] * 1e-9
    for k in ("M", "K", "N", "count"):  # whole numbers; blank for element-wise operators
        df[k] = pd.array([None if pd.isna(v) else int(v) for v in df[k]], dtype="Int64")
    return df[list(_COLUMNS)].rename(columns=_COLUMNS)


def format_report(rep: CostReport) -> str:
    """The operator table followed by the totals."""
    t = rep.totals()
    sc = rep.scenario
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_columns", None):
        table = ops_table(rep).to_string(index=False, float_format=lambda x: f"{x:,.3g}")
    lines = [table, "",
             f"{rep.hw}, {sc.name}: seq_len {sc.seq_len}"
             + (f", {sc.decode_tokens} tokens decoded" if sc.name == "decode" else "") + f", batch {sc.batch}",
             f"  latency      {t['latency_ms']:.4f} ms ({t['cycles']:,.0f} cycles)",
             f"  energy       {t['energy_mj']:.4f} mJ",
             f"  weights      {t['size_bytes'] / 1e6:.3f} MB",
             f"  peak memory  {t['peak_memory_bytes'] / 1e6:.3f} MB",
             f"  power        {t['power_w']:.3f} W" + ("" if rep.feasible else "  (design infeasible)"),
             f"  DRAM traffic {t['dram_bytes'] / 1e6:.3f} MB, {t['macs'] / 1e9:.4f} GMAC"]
    if rep.area_mm2 is not None:
        lines.append(f"  area         {rep.area_mm2:.3f} mm^2" + ("" if rep.feasible else "  (over budget)"))
    if rep.fpga is not None:
        f = rep.fpga
        lines.append(f"  FPGA         DSP {f['dsp']}/{f['dsp_avail']}, BRAM36 {f['bram36']}/{f['bram36_avail']}, "
                     + (f"URAM {f['uram']}/{f['uram_avail']}, " if f["uram_avail"] else "")
                     + f"LUT {f['lut']:,}/{f['lut_avail']:,}: " + ("feasible" if f["feasible"] else "INFEASIBLE"))
    return "\n".join(lines)


def format_gemm(out: dict) -> str:
    """One GEMM's cost as aligned lines."""
    lines = [f"{out['hw']}: GEMM {out['M']}x{out['K']}x{out['N']} (MxKxN), W{out['w_bits']}A{out['a_bits']}, "
             f"{out['rows']}x{out['cols']} {out['dataflow'].upper()}",
             f"  compute cycles {out['compute_cycles']:,.0f} (SCALE-Sim count), array {out['array_cycles']:,.0f}, "
             f"DRAM {out['memory_cycles']:,.0f}: {out['bound']}-bound",
             f"  cycles         {out['cycles']:,.0f} ({out['latency_ms']:.6f} ms)",
             f"  energy         {out['energy_mj'] * 1e3:.4f} uJ, power {out['power_w']:.3f} W",
             f"  DRAM traffic   {out['dram_bytes']:,.0f} B, PE utilisation {out['pe_utilization']:.3f}"]
    if "area_mm2" in out:
        lines.append(f"  area           {out['area_mm2']:.3f} mm^2")
    if "fpga" in out:
        f = out["fpga"]
        lines.append(f"  FPGA           DSP {f['dsp']}/{f['dsp_avail']}, BRAM36 {f['bram36']}/{f['bram36_avail']}, "
                     + (f"URAM {f['uram']}/{f['uram_avail']}, " if f["uram_avail"] else "")
                     + f"LUT {f['lut']:,}/{f['lut_avail']:,}")
    lines.append("  feasible" if out["feasible"] else "  INFEASIBLE (resources, clock, DRAM interface or power)")
    return "\n".join(lines)
