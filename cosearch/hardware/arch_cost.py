"""The per-operator path: cost one sub-network operator by operator (or one GEMM), with a
table of rows."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import UserError
from ..space import FLOAT_BITS, STORAGE_BITS, Arch, SearchSpace
from .gemm_cost import FIELDS, gemm, vector
from .residency import reserve_bytes, resident_units
from .schema import Hardware, load_hardware
from .workload import Scenario, build_graph

#: Sizes are summed in tenths of a bit so that ternary (1.6 storage bits) stays an integer.
DECI = 10
#: Totals are sums of whole numbers in float64: exact below 2^53.
EXACT = float(1 << 53)
#: One GEMM's sizes: femtojoules of 2^40 MACs stay below 2^53.
MAX_GEMM_DIM = 1 << 31
MAX_GEMM_MACS = 1 << 40


def check_exact(what: str, *values) -> None:
    """A total past 2^53 is no longer an exact count: say so (one line) instead of
    reporting rounded numbers."""
    for v in values:
        v = np.asarray(v, dtype=np.float64)
        if v.size and not (np.isfinite(v).all() and np.abs(v).max() < EXACT):
            raise UserError(f"{what}: the counts (cycles, femtojoules, bytes) pass 2^53 and would no longer be "
                            "exact; give smaller sizes (sequence, batch, GEMM) or a smaller model")


def _deci(bits: float) -> int:
    return int(round(bits * DECI))


def size_decibits(space: SearchSpace, arch: Arch) -> int:
    """Exported weight size in tenths of a bit, by the rules of ``space.size`` (exact)."""
    emb = space.spec.quantization.embedding_bits
    total = 0
    for _, r, c in space.embedding_shapes(arch):
        total += r * c * _deci(STORAGE_BITS[emb]) + (r * FLOAT_BITS * DECI if emb < 16 else 0)
    for lin in space.linears(arch):
        total += lin.in_features * lin.out_features * _deci(STORAGE_BITS[lin.weight_bits])
        total += (lin.out_features if lin.bias else 0) * FLOAT_BITS * DECI
        if lin.weight_bits < 16:
            total += lin.out_features * FLOAT_BITS * DECI
    return total + space.norm_params(arch) * FLOAT_BITS * DECI


def op_cost(op: dict, hw: Hardware, resident: bool = False) -> dict:
    """One operator's totals (decode steps summed; activation bytes: the largest step);
    ``resident``: its weights stay on chip across decode steps."""
    d = hw.derived
    if op["kind"] == "gemm":
        loads = op["loads_resident"] if resident else op["w_loads"]
        r = gemm(op["M"], op["K"], op["N"], op["count"], hw.pack(op["wbits"], op["ab"]),
                 op["w_bpe"], op["ab"] / 8, op["ab"] / 8, loads,
                 hw.mac_energy_pj(op["wbits"], op["ab"]), d, op.get("runs"))
    else:
        r = vector(op["elems"], op["passes"], op["count"], op["bpe"], op["dram_in"], d)
    out = {k: float(np.sum(r[k])) for k in FIELDS if k != "act_bytes"}
    out["act_bytes"] = float(np.max(r["act_bytes"]))
    return out


def pe_utilization(hw: Hardware, macs: float, array_cycles: float, wbits: float, ab: int) -> float:
    """Useful MACs over the MACs the array could do in those cycles at these bits (<= 1)."""
    capacity = array_cycles * hw.array.rows * hw.array.cols / hw.cycles_per_mac(wbits, ab)
    return min(1.0, macs / capacity) if capacity > 0 else float("nan")


@dataclass
class CostReport:
    """Totals and per-operator rows of one sub-network on one accelerator."""

    hw: str
    scenario: Scenario
    latency_ms: float
    energy_mj: float
    size_bytes: float
    peak_memory_bytes: float
    power_w: float
    cycles: float
    dram_bytes: float
    macs: float
    area_mm2: float | None
    fpga: dict | None
    feasible: bool
    ops: pd.DataFrame = field(repr=False)

    def totals(self) -> dict:
        """JSON-ready totals (no per-operator rows)."""
        out = {"hw": self.hw, "scenario": self.scenario.name, "seq_len": self.scenario.seq_len,
               "decode_tokens": self.scenario.decode_tokens, "batch": self.scenario.batch,
               "latency_ms": self.latency_ms, "energy_mj": self.energy_mj, "size_bytes": self.size_bytes,
               "peak_memory_bytes": self.peak_memory_bytes, "power_w": self.power_w, "cycles": self.cycles,
               "dram_bytes": self.dram_bytes, "macs": self.macs, "feasible": self.feasible}
        if self.area_mm2 is not None:
            out["area_mm2"] = self.area_mm2
        if self.fpga is not None:
            out["fpga"] = self.fpga
        return out


def resources(hw: Hardware, features: int = 0) -> tuple[float | None, dict | None, bool]:
    """(area mm^2 or None, FPGA resources or None, feasible) of an accelerator whose PEs
    support the precision modes in ``features`` (``Hardware.pe_features``)."""
    if hw.kind == "fpga":
        f = hw.fpga_resources(features)
        return None, f, f["feasible"]
    area = hw.area_mm2()
    budget = hw.codesign.area_budget_mm2
    return area, None, (budget is None or area <= budget) and hw.within_limits()


def totals_from_sums(hw: Hardware, cycles, energy_fj, size_deci, kv_bytes, act_bytes):
    """The unit conversions both paths share (same operations, same rounding). ``cycles``
    are the operators' sums; the first DRAM request's latency is paid once (later ones are
    issued ahead). Static power (leakage, DRAM interface) costs energy for as long as the
    model runs. Returns (cycles, latency_ms, energy_mj, size_bytes, peak, power_w)."""
    cycles = cycles + float(hw.memory.dram_latency_cycles)
    latency_ms = cycles / (hw.clock_mhz * 1e3)
    energy_mj = energy_fj * 1e-12 + hw.static_w * latency_ms
    size_bytes = size_deci / (8 * DECI)
    peak = size_bytes + kv_bytes + act_bytes
    power_w = energy_mj / latency_ms
    return cycles, latency_ms, energy_mj, size_bytes, peak, power_w


def within_power(hw: Hardware, power_w):
    """The design's power within ``codesign.power_max_w`` (when set)."""
    cap = hw.codesign.power_max_w
    return power_w <= cap if cap is not None else np.ones_like(power_w, dtype=bool)


def cost(space: SearchSpace, arch: Arch, hw: Hardware | str, scenario: str | Scenario = "prefill",
         seq_len: int = 30, decode_tokens: int = 30, batch: int = 1) -> CostReport:
    """Cost one sub-network operator by operator on one accelerator.

    ``scenario``: ``prefill`` (whole sequence) or ``decode`` (``decode_tokens`` generated
    with a KV cache); ``seq_len`` source/prompt tokens; ``batch`` sequences at once.
    """
    hw = load_hardware(hw)
    sc = scenario if isinstance(scenario, Scenario) else Scenario(scenario, seq_len, decode_tokens, batch)
    g = build_graph(space, arch, sc)
    resident = resident_ops(g, hw)
    rows = []
    for name, op in g.nodes(data=True):
        c = op_cost(op, hw, name in resident)
        util = pe_utilization(hw, c["macs"], c["array_cycles"], op["wbits"], op["ab"]) \
            if op["kind"] == "gemm" else np.nan
        rows.append({"op": name, "role": op["role"], "kind": op["kind"],
                     "M": op.get("M"), "K": op.get("K"), "N": op.get("N"), "count": op["count"],
                     "runs": op.get("runs", op["count"]),
                     "w_bits": op.get("wbits"), "a_bits": op["ab"], **c,
                     "kv_bytes": float(op.get("kv_bytes", 0.0)), "pe_utilization": util,
                     "bound": "memory" if c["memory_cycles"] > c["array_cycles"] else "compute",
                     "weights": "on chip" if name in resident else ("DRAM" if op.get("w_dram") else "")})
    ops = pd.DataFrame(rows)
    for k in ("M", "K", "N"):  # decode attention sizes vary by step: show the last one
        ops[k] = [v[-1] if isinstance(v, np.ndarray) else v for v in ops[k]]
    sums = {k: sum(r[k] for r in rows) for k in ("cycles", "energy_fj", "dram_bytes", "macs", "kv_bytes")}
    act = max(r["act_bytes"] for r in rows)
    features = 0
    for r in rows:
        if r["role"] in _LINEAR_ROLES:
            features |= hw.pe_features(r["w_bits"], r["a_bits"])
    area, fpga, feasible = resources(hw, features)
    cycles, latency_ms, energy_mj, size_bytes, peak, power_w = totals_from_sums(
        hw, sums["cycles"], sums["energy_fj"], float(size_decibits(space, arch)), sums["kv_bytes"], act)
    check_exact(f"{space.name} on {hw.name}", cycles, sums["energy_fj"], sums["dram_bytes"], sums["macs"])
    feasible = bool(feasible and within_power(hw, power_w))
    return CostReport(hw=hw.name, scenario=sc, latency_ms=latency_ms, energy_mj=energy_mj,
                      size_bytes=size_bytes, peak_memory_bytes=peak, power_w=power_w, cycles=cycles,
                      dram_bytes=sums["dram_bytes"], macs=sums["macs"], area_mm2=area, fpga=fpga,
                      feasible=feasible, ops=ops)


_LINEAR_ROLES = {"q", "k", "v", "out", "cross_q", "cross_k", "cross_v", "cross_out", "fc1", "fc2"}


def unit_of(op: dict):
    """The residency unit of a GEMM that can keep its weights on chip: its decoder layer,
    or the output projection (after every layer)."""
    return ("output_proj",) if op["role"] == "output_proj" else (op["name"].split(".")[0], op["layer"])


def resident_ops(g, hw: Hardware) -> set:
    """Names of the GEMMs whose weights stay on chip (``residency.resident_units`` over the
    graph's units, in execution order)."""
    names: dict = {}  # unit -> its GEMMs
    nbytes: dict = {}  # unit -> their weight bytes
    for name, op in g.nodes(data=True):
        if op.get("resident_ok"):
            u = unit_of(op)
            names.setdefault(u, []).append(name)
            nbytes[u] = nbytes.get(u, 0.0) + float(np.ceil(op["K"] * op["N"] * op["w_bpe"]))
    keys = sorted(names, key=lambda u: (u[0] == "output_proj", u[1:]))
    if not keys:
        return set()
    mask = resident_units(np.array([[nbytes[u] for u in keys]]), hw.derived.wbuf,
                          reserve_bytes(hw.array.rows, hw.array.cols))[0]
    return {name for u, keep in zip(keys, mask) if keep for name in names[u]}


def cost_gemm(M: int, K: int, N: int, hw: Hardware | str, wbits: float = 8, abits: int = 8,
              weights_in_dram: bool = True) -> dict:
    """Cost one GEMM Y[M,N] = X[M,K] W[K,N] (weights at ``wbits``, activations and outputs
    at ``abits``) on one accelerator: ``compute_cycles`` as SCALE-Sim v3 counts them (no
    DRAM, no stalls, every fold pays fill and drain), ``array_cycles`` with the array's own
    fold overlap, ``cycles`` with DRAM (roofline + prologue), latency, energy, power, DRAM
    bytes, PE utilisation and the accelerator's resources at these bits."""
    from .workload import storage_bpe
    hw = load_hardware(hw)
    for name, v in (("M", M), ("K", K), ("N", N)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= MAX_GEMM_DIM:
            raise UserError(f"GEMM size {name} = {v!r}: give whole numbers from 1 to {MAX_GEMM_DIM} (MxKxN)")
    if int(M) * int(K) * int(N) > MAX_GEMM_MACS:
        raise UserError(f"GEMM {M}x{K}x{N}: {int(M) * int(K) * int(N):,} MACs is past the {MAX_GEMM_MACS:,} (2^40) "
                        "the engine counts exactly; split it into smaller GEMMs")
    op = dict(kind="gemm", M=M, K=K, N=N, count=1, wbits=wbits, ab=abits, w_bpe=storage_bpe(wbits),
              w_dram=weights_in_dram, w_loads=1 if weights_in_dram else 0)
    c = op_cost(op, hw)
    check_exact(f"GEMM {M}x{K}x{N} on {hw.name}", c["cycles"], c["energy_fj"], c["macs"])
    area, fpga, feasible = resources(hw, hw.pe_features(wbits, abits))
    cycles, latency_ms, energy_mj, _, _, power_w = totals_from_sums(hw, c["cycles"], c["energy_fj"], 0, 0, 0)
    out = {"hw": hw.name, "M": M, "K": K, "N": N, "w_bits": wbits, "a_bits": abits, "dataflow": hw.dataflow,
           "rows": hw.array.rows, "cols": hw.array.cols,
           **{k: c[k] for k in ("compute_cycles", "array_cycles", "memory_cycles")}, "cycles": cycles,
           "latency_ms": latency_ms, "energy_mj": energy_mj, "power_w": power_w,
           "dram_bytes": c["dram_bytes"], "macs": c["macs"],
           "pe_utilization": pe_utilization(hw, c["macs"], c["array_cycles"], wbits, abits),
           "bound": "memory" if c["memory_cycles"] > c["array_cycles"] else "compute"}
    if area is not None:
        out["area_mm2"] = area
    if fpga is not None:
        out["fpga"] = fpga
    out["feasible"] = bool(feasible and within_power(hw, out["power_w"]))
    return out
