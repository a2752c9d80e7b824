"""Accelerator presets: the YAML schema, validation and precision rules.

A preset (``hw_models/NAME.yaml``) describes one accelerator: a PE array with a dataflow,
three on-chip buffers, DRAM bandwidth, a vector unit for element-wise work, energy per
operation and per byte, and either ASIC area figures or an FPGA device with its DSP, BRAM
and LUT budget. ``Hardware`` is frozen; ``with_params`` makes a validated variant (the
co-design search changes PE rows/cols, buffers, dataflow, bandwidth and clock).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ..errors import UserError
from ..presets import load_preset_yaml
from ..space import _format_validation_error

#: Dataflow names and the integer codes the vectorised kernel uses.
DATAFLOWS = ("os", "ws", "is")
#: Bit Fusion fuses 2-bit bricks into these operand widths.
BRICK_WIDTHS = (2, 4, 8, 16)
#: Horowitz (ISSCC 2014), 45 nm: SRAM read energy per 64-bit access is ~10 pJ at 8 KB and
#: grows about with the square root of the capacity (32 KB ~20 pJ, 1 MB ~100 pJ).
SRAM_PJ_PER_BYTE_8KB_45NM = 10.0 / 8
#: Bits of one BRAM18 (half a BRAM36) and one UltraRAM block (URAM288).
BRAM18_BITS = 18432
URAM288_BITS = 294912
#: Data bytes of one FPGA block-RAM access (a 72-bit BRAM36/URAM288 port: 64 data + 8 parity bits).
FPGA_RAM_ACCESS_BYTES = 8
#: Bounds that keep every count an exact integer in float64 (2^53) for any workload the
#: engine accepts: array edges, buffer sizes, vector lanes.
MAX_ARRAY_EDGE = 1 << 16
MAX_BUFFER_KB = float(1 << 32)
MAX_LANES = 1 << 20


class _Strict(BaseModel):
    # NaN and infinities are rejected on every float field (a NaN latency would be "feasible")
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _within(v, lo, hi, what=""):
    if not lo <= v <= hi:
        raise ValueError(f"must be between {lo:g} and {hi:g}{what} (got {v:g})")
    return v


class ArraySpec(_Strict):
    rows: int
    cols: int
    #: the array double-buffers (the next weight tile loads while the current one computes,
    #: as in TPU-style WS arrays and as ZigZag assumes): consecutive folds, and the heads of
    #: an attention product, overlap their fill and drain; False pays fill + drain per fold,
    #: as SCALE-Sim counts.
    pipelined_folds: bool = False

    @field_validator("rows", "cols")
    @classmethod
    def _positive(cls, v):
        return _within(v, 1, MAX_ARRAY_EDGE)


class DspPacking(_Strict):
    """FPGA: MACs one DSP does per cycle when both operands have at most ``max_bits``:
    ``macs / along_m`` weights against each of ``along_m`` activations (int8: 2 weights x
    1 activation, WP486; int4: 2 weights x 2 activations, WP521), so ``along_m`` > 1
    pays only when the GEMM has that many rows (M >= along_m)."""

    max_bits: int
    macs: float
    along_m: int = 1
    #: LUTs this mode adds per PE (operand packing muxes; the float logic of an fp16 MAC
    #: around the DSP) and per array column: packed products accumulate down a column's
    #: DSP cascade, so their sign-extension and carry correction sits once at its end (WP486).
    lut_per_pe: int = 0
    lut_per_column: int = 0


class PESpec(_Strict):
    #: bit_parallel: P-bit multipliers, wider operands take ceil(w/P)*ceil(a/P) passes;
    #: bit_fusion: 16 two-bit bricks per PE fused per operand width (Bit Fusion, ISCA 2018);
    #: bit_serial: one activation bit per cycle over ``bits``-wide weights (Stripes);
    #: dsp: FPGA DSP48-based PE with operand packing (``dsp_packing``).
    style: Literal["bit_parallel", "bit_fusion", "bit_serial", "dsp"]
    bits: int = 8
    dsp_packing: list[DspPacking] = []
    #: FPGA: weights of at most this many bits (binary/ternary) multiply on LUTs instead.
    lut_weight_bits: float | None = None
    lut_macs_per_pe: int = 0
    #: partial sums spilled to the output buffer between K folds.
    psum_bits: int = 32
    #: 16-bit operands are floats (fp16 MACs, ``energy.mac_fp16_pj``); default: 16-bit
    #: fixed point on the integer datapath (passes / the DSP's 27x18 multiplier).
    float16: bool = False

    @model_validator(mode="after")
    def _check(self):
        if self.bits not in (1, 2, 4, 8, 16):
            raise ValueError(f"bits {self.bits} must be one of 1, 2, 4, 8, 16")
        if self.style == "dsp":
            if not self.dsp_packing:
                raise ValueError("style dsp needs dsp_packing (e.g. [{max_bits: 8, macs: 2}, {max_bits: 16, macs: 1}])")
            if max(p.max_bits for p in self.dsp_packing) < 16:
                raise ValueError("dsp_packing must cover 16-bit operands (a rule with max_bits: 16)")
            for p in self.dsp_packing:
                if p.along_m < 1 or p.macs < p.along_m or p.macs % p.along_m:
                    raise ValueError(f"dsp_packing macs {p.macs:g} must be a positive multiple of along_m {p.along_m}")
        if self.lut_weight_bits is not None and self.lut_macs_per_pe < 1:
            raise ValueError("lut_weight_bits needs lut_macs_per_pe >= 1")
        return self


class MemorySpec(_Strict):
    #: the weight buffer: tiles of streamed weights, and whole layers kept on chip across
    #: decode steps while they fit (FPGA: URAM where the part has it, else BRAM).
    weight_kb: float
    input_kb: float
    output_kb: float
    #: the memory interface's nominal peak (bus width x transfer rate).
    dram_gbps: float
    #: sustained over nominal bandwidth (controller efficiency: refresh, row switches,
    #: read/write turnarounds); the engine streams at dram_gbps x dram_efficiency.
    dram_efficiency: float = 1.0
    #: the board's memory interface: a design asking for more bandwidth is infeasible.
    dram_gbps_max: float | None = None
    #: DRAM request latency in cycles, paid once per inference (later requests are issued
    #: ahead: weights and activations have addresses known in advance).
    dram_latency_cycles: int = 100
    #: layer-by-layer execution: every operator reads its inputs from DRAM and writes its
    #: outputs back (ZigZag's default); False keeps activations on chip while they fit.
    activations_in_dram: bool = False

    @model_validator(mode="after")
    def _positive(self):
        for k in ("weight_kb", "input_kb", "output_kb"):
            if not 0 < getattr(self, k) <= MAX_BUFFER_KB:
                raise ValueError(f"{k} must be positive and at most {MAX_BUFFER_KB:g} KB (got {getattr(self, k):g})")
        for k in ("dram_gbps", "dram_gbps_max"):
            v = getattr(self, k)
            if v is not None and not 0 < v <= 1e6:
                raise ValueError(f"{k} must be positive and at most 1e6 GB/s (got {v:g})")
        if not 0 < self.dram_efficiency <= 1:
            raise ValueError(f"dram_efficiency must be in (0, 1] (got {self.dram_efficiency:g})")
        if not 0 <= self.dram_latency_cycles <= 1e9:
            raise ValueError("dram_latency_cycles must be between 0 and 1e9")
        return self


class VectorSpec(_Strict):
    #: element-wise operations per cycle (softmax, layer norm, residual adds).
    lanes: int

    @field_validator("lanes")
    @classmethod
    def _positive(cls, v):
        return _within(v, 1, MAX_LANES)


class EnergySpec(_Strict):
    #: one 8x8-bit integer multiply-accumulate at this node; narrower MACs scale with w*a/64.
    mac_int8_pj: float
    #: one fp16 multiply-accumulate (``pe.float16`` presets only: 16-bit is fixed point otherwise).
    mac_fp16_pj: float | None = None
    #: one element-wise vector operation (16-bit float).
    vector_op_pj: float
    #: DRAM access per byte.
    dram_pj_per_byte: float
    #: ASIC on-chip SRAM per byte at 8 KB; larger buffers cost sqrt(kb/8) times more.
    #: Default: Horowitz 45 nm (1.25 pJ/B) times ``sram_scale``.
    sram_pj_per_byte_8kb: float | None = None
    sram_scale: float = 1.0
    #: FPGA: one 72-bit access of a BRAM36 / URAM288 (8 data bytes). A banked buffer's
    #: access touches one block whatever the buffer's size (cascades enable one block).
    bram_access_pj: float | None = None
    uram_access_pj: float | None = None
    #: a PE register (operand, partial sum) per byte accessed; 0 where the MAC energy
    #: already holds them (a DSP48E2's A/B/P registers and its cascade).
    reg_pj_per_byte: float = 0.0
    #: FPGA: one DSP48E2 operation, whatever it packs (a packed MAC costs dsp_op_pj / macs);
    #: default 2 x mac_int8_pj (two int8 MACs per DSP, WP486).
    dsp_op_pj: float | None = None
    #: FPGA: one binary/ternary MAC on LUTs at 8-bit activations (add/sub into an adder tree).
    lut_mac_pj: float | None = None
    #: power drawn whatever the work (leakage, clock tree, board), in W: costs energy x time.
    static_w: float = 0.0
    #: DRAM interface (PHY, I/O, DRAM background) per GB/s of provisioned bandwidth, in W.
    dram_interface_w_per_gbps: float = 0.0

    @model_validator(mode="after")
    def _positive(self):
        for k, v in self.model_dump().items():
            if k in ("static_w", "dram_interface_w_per_gbps", "reg_pj_per_byte"):
                if not 0 <= v <= 1e6:
                    raise ValueError(f"{k} must be between 0 and 1e6 (got {v:g})")
            elif v is not None and not 0 < v <= 1e6:
                raise ValueError(f"{k} must be positive and at most 1e6 (got {v:g})")
        return self


class AreaSpec(_Strict):
    """ASIC area at the preset's node."""

    #: one PE (multiplier, accumulator, registers) in um^2.
    pe_um2: float
    #: SRAM per KB in mm^2.
    sram_mm2_per_kb: float
    vector_lane_um2: float = 0.0
    #: control, DRAM interface, NoC: a fixed overhead.
    other_mm2: float = 0.0


class FpgaDevice(_Strict):
    part: str
    dsp: int
    bram36: int
    lut: int
    #: UltraRAM blocks (URAM288: 288 Kb, 4K x 72); the weight buffer lives there when > 0.
    uram: int = 0
    #: fraction of each resource a design may use before routing fails.
    max_utilization: float = 0.9
    #: LUTs per PE (operand muxes, accumulator control) and fixed (DMA, control).
    lut_per_pe: int = 60
    lut_base: int = 30000
    #: LUTs of one LUT-based binary/ternary MAC at 8-bit activations (add/sub, adder-tree
    #: share); the adder grows with the activation width (x2 at 16 bits).
    lut_per_lut_mac: int = 12
    #: the fastest clock a systolic DSP array closes timing at on this part (speed grade).
    clock_max_mhz: float | None = None
    #: DSPs and LUTs per vector lane.
    dsp_per_vector_lane: int = 1
    lut_per_vector_lane: int = 200

    @model_validator(mode="after")
    def _check(self):
        if min(self.dsp, self.bram36, self.lut) < 1 or self.uram < 0:
            raise ValueError("dsp, bram36 and lut must be >= 1, uram >= 0")
        if max(self.dsp, self.bram36, self.lut, self.uram) > 1 << 31:
            raise ValueError("dsp, bram36, uram and lut must be at most 2^31")
        if not 0 < self.max_utilization <= 1:
            raise ValueError("max_utilization must be in (0, 1]")
        return self


class CodesignSpec(_Strict):
    """Choices the co-design search may make, and the budget that bounds them."""

    rows: list[int] | None = None
    cols: list[int] | None = None
    weight_kb: list[float] | None = None
    input_kb: list[float] | None = None
    output_kb: list[float] | None = None
    dataflow: list[Literal["os", "ws", "is"]] | None = None
    dram_gbps: list[float] | None = None
    clock_mhz: list[float] | None = None
    #: ASIC: designs above this area are infeasible (FPGA: the device's resources decide).
    area_budget_mm2: float | None = None
    #: designs (network + accelerator) drawing more power (energy / latency) are infeasible.
    power_max_w: float | None = None

    @model_validator(mode="after")
    def _lists(self):
        for k, v in self.model_dump().items():
            if isinstance(v, list):
                if not v:
                    raise ValueError(f"{k} must be a non-empty list")
                if k != "dataflow" and any(x <= 0 for x in v):
                    raise ValueError(f"{k} choices must be positive")
            elif v is not None and v <= 0:
                raise ValueError(f"{k} must be positive")
        for k in ("rows", "cols"):
            if any(x > MAX_ARRAY_EDGE for x in getattr(self, k) or []):
                raise ValueError(f"{k} choices must be at most {MAX_ARRAY_EDGE}")
        for k in ("weight_kb", "input_kb", "output_kb"):
            if any(x > MAX_BUFFER_KB for x in getattr(self, k) or []):
                raise ValueError(f"{k} choices must be at most {MAX_BUFFER_KB:g} KB")
        return self


class Hardware(_Strict):
    """One accelerator. Load with :func:`load_hardware`; vary with :meth:`with_params`."""

    name: str
    kind: Literal["asic", "fpga"]
    description: str = ""
    node_nm: int
    clock_mhz: float
    dataflow: Literal["os", "ws", "is"]
    array: ArraySpec
    pe: PESpec
    memory: MemorySpec
    vector: VectorSpec
    energy: EnergySpec
    area: AreaSpec | None = None
    fpga: FpgaDevice | None = None
    codesign: CodesignSpec = CodesignSpec()

    @model_validator(mode="after")
    def _kind(self):
        if not 0 < self.clock_mhz <= 1e6:
            raise ValueError(f"clock_mhz must be positive and at most 1e6 (got {self.clock_mhz:g})")
        if self.pe.float16 and self.energy.mac_fp16_pj is None:
            raise ValueError("pe.float16 needs energy.mac_fp16_pj (one fp16 MAC)")
        if self.kind == "fpga" and self.energy.bram_access_pj is None and self.energy.sram_pj_per_byte_8kb is None:
            raise ValueError("kind fpga needs energy.bram_access_pj (one 72-bit BRAM36 access)")
        if self.kind == "fpga" and self.fpga is not None and self.fpga.uram and self.energy.uram_access_pj is None:
            raise ValueError("fpga.uram > 0 needs energy.uram_access_pj (one 72-bit URAM288 access)")
        if self.kind == "asic":
            if self.area is None:
                raise ValueError("kind asic needs an 'area' section (pe_um2, sram_mm2_per_kb)")
            if self.fpga is not None:
                raise ValueError("kind asic takes no 'fpga' section")
            if self.pe.style == "dsp":
                raise ValueError("pe.style dsp is for kind fpga")
        else:
            if self.fpga is None:
                raise ValueError("kind fpga needs an 'fpga' section (part, dsp, bram36, lut)")
            if self.pe.style != "dsp":
                raise ValueError("kind fpga needs pe.style dsp")
        return self

    # ---- precision: how (weight bits, activation bits) map onto one PE
    def pack(self, wb: float, ab: int) -> tuple[float, float, float, float]:
        """How one PE spends a cycle at these bits: (pn, pm, pk, passes): MACs packed along
        N (weights sharing an activation), along M (activations sharing a weight), along K
        (Bit Fusion's fused bricks), or ``passes`` cycles per MAC (wide operands on narrow
        multipliers, bit-serial)."""
        pe = self.pe
        w, a = compute_bits(wb), compute_bits(ab)
        if pe.style == "bit_parallel":
            return 1.0, 1.0, 1.0, float(math.ceil(w / pe.bits) * math.ceil(a / pe.bits))
        if pe.style == "bit_fusion":
            c = (_brick(w) / 2) * (_brick(a) / 2) / 16
            return (1.0, 1.0, float(round(1 / c)), 1.0) if c < 1 else (1.0, 1.0, 1.0, c)
        if pe.style == "bit_serial":
            return 1.0, 1.0, 1.0, float(a) * math.ceil(w / pe.bits)
        if self.uses_lut(wb):
            return float(pe.lut_macs_per_pe), 1.0, 1.0, 1.0
        rule = self.dsp_rule(w, a)
        return float(rule.macs / rule.along_m), float(rule.along_m), 1.0, 1.0

    def cycles_per_mac(self, wb: float, ab: int) -> float:
        """PE cycles one MAC takes when every packed slot is used (fractions: a PE does
        several narrow MACs per cycle)."""
        pn, pm, pk, passes = self.pack(wb, ab)
        return passes / (pn * pm * pk)

    def dsp_rule(self, w: int, a: int) -> DspPacking:
        """FPGA: the packing mode a DSP uses for these operand widths (the narrowest fit)."""
        return min((p for p in self.pe.dsp_packing if p.max_bits >= max(w, a)), key=lambda p: p.max_bits)

    def pe_features(self, wb: float, ab: int) -> int:
        """FPGA: the PE logic a layer at these bits needs, as a bit mask (one bit per DSP
        packing mode, then LUT MACs at <= 8-bit and at 16-bit activations); ASIC: 0. A
        design's LUTs depend on the union of the modes its layers use."""
        if self.kind != "fpga":
            return 0
        n = len(self.pe.dsp_packing)
        if self.uses_lut(wb):
            return 1 << (n + (1 if ab > 8 else 0))
        rule = self.dsp_rule(compute_bits(wb), compute_bits(ab))
        return 1 << self.pe.dsp_packing.index(rule)

    def uses_lut(self, wb: float) -> bool:
        """FPGA: binary/ternary weights multiply on LUTs (XNOR/popcount, add/sub)."""
        return self.pe.lut_weight_bits is not None and wb <= self.pe.lut_weight_bits

    def mac_energy_pj(self, wb: float, ab: int) -> float:
        """Energy of one MAC with every packed slot used (an idle slot of a packed operation
        costs its share too: the kernel charges the slots). 16-bit operands are fixed point
        (the integer datapath's passes, the DSP's 27x18 multiplier) unless ``pe.float16``.
        FPGA: the DSP operation divided by the MACs it packs (W2A8 and W8A8 are the same
        packed operation), or a LUT MAC (its adder grows with the activation width);
        ASIC: the int8 MAC scaled by the multiplier area the bits occupy."""
        e = self.energy
        if self.pe.float16 and (wb >= 16 or ab >= 16):
            return e.mac_fp16_pj
        w, a = compute_bits(wb), compute_bits(ab)
        if self.pe.style == "dsp":
            if self.uses_lut(wb):
                lut = e.lut_mac_pj if e.lut_mac_pj is not None else e.mac_int8_pj / 4
                return lut * max(a, 8) / 8
            op = e.dsp_op_pj if e.dsp_op_pj is not None else 2 * e.mac_int8_pj
            return op / self.dsp_rule(w, a).macs
        if self.pe.style == "bit_fusion":
            w, a = _brick(w), _brick(a)
        elif self.pe.style == "bit_parallel":  # a P-bit multiplier burns P x P per pass
            w, a = math.ceil(w / self.pe.bits) * self.pe.bits, math.ceil(a / self.pe.bits) * self.pe.bits
        return e.mac_int8_pj * (w * a) / 64

    # ---- derived constants (computed once; the kernels read these)
    @cached_property
    def key(self) -> str:
        """A stable identity for caches (two equal presets share it)."""
        return self.model_dump_json()

    @cached_property
    def derived(self) -> "Derived":
        m, e = self.memory, self.energy
        base = e.sram_pj_per_byte_8kb or SRAM_PJ_PER_BYTE_8KB_45NM * e.sram_scale

        def sram(kb):
            return base * math.sqrt(max(kb, 8.0) / 8.0)

        if self.kind == "fpga" and e.bram_access_pj is not None:
            # banked block RAM: one access touches one block, whatever the buffer's size
            bram = e.bram_access_pj / FPGA_RAM_ACCESS_BYTES
            e_w = e.uram_access_pj / FPGA_RAM_ACCESS_BYTES if self.fpga.uram else bram
            e_i = e_o = bram
        else:
            e_w, e_i, e_o = sram(m.weight_kb), sram(m.input_kb), sram(m.output_kb)
        return Derived(
            rows=self.array.rows, cols=self.array.cols, dataflow=DATAFLOWS.index(self.dataflow),
            wbuf=m.weight_kb * 1024, ibuf=m.input_kb * 1024, obuf=m.output_kb * 1024,
            bytes_per_cycle=m.dram_gbps * m.dram_efficiency * 1e9 / (self.clock_mhz * 1e6),
            lanes=float(self.vector.lanes),
            e_wbuf=e_w, e_ibuf=e_i, e_obuf=e_o, e_reg=e.reg_pj_per_byte,
            e_dram=e.dram_pj_per_byte, e_vec=e.vector_op_pj, pipelined=self.array.pipelined_folds,
            act_dram=m.activations_in_dram, psum_bytes=self.pe.psum_bits / 8)

    @property
    def static_w(self) -> float:
        """Power drawn whatever the work: static plus the DRAM interface at its bandwidth."""
        e = self.energy
        return e.static_w + e.dram_interface_w_per_gbps * self.memory.dram_gbps

    def within_limits(self) -> bool:
        """Clock within the part's, DRAM bandwidth within the board's interface."""
        f, m = self.fpga, self.memory
        clock_ok = f is None or f.clock_max_mhz is None or self.clock_mhz <= f.clock_max_mhz
        return clock_ok and (m.dram_gbps_max is None or m.dram_gbps <= m.dram_gbps_max)

    def with_params(self, **params) -> "Hardware":
        """A validated variant: rows, cols, weight_kb, input_kb, output_kb, dataflow,
        dram_gbps, clock_mhz (the co-design knobs), or power_max_w (a bound)."""
        d = self.model_dump()
        where = {"rows": ("array",), "cols": ("array",), "weight_kb": ("memory",),
                 "input_kb": ("memory",), "output_kb": ("memory",), "dram_gbps": ("memory",),
                 "dataflow": (), "clock_mhz": (), "power_max_w": ("codesign",)}
        for k, v in params.items():
            if k not in where:
                raise UserError(f"unknown accelerator parameter {k!r}; choose from {', '.join(where)}")
            node = d
            for part in where[k]:
                node = node[part]
            node[k] = v
        return hardware_from_dict(d, source=f"{self.name} with {params}")

    # ---- resources
    def area_mm2(self) -> float:
        """ASIC area: PEs + SRAM + vector lanes + fixed overhead."""
        a, m = self.area, self.memory
        pes = self.array.rows * self.array.cols
        return (pes * a.pe_um2 + self.vector.lanes * a.vector_lane_um2) / 1e6 \
            + (m.weight_kb + m.input_kb + m.output_kb) * a.sram_mm2_per_kb + a.other_mm2

    def lut_per_pe(self, features: int) -> float:
        """FPGA: LUTs per PE supporting the modes in ``features`` (see pe_features), the
        per-column correction logic shared out over the column's PEs."""
        f, pe = self.fpga, self.pe
        n = len(pe.dsp_packing)
        modes = [p for i, p in enumerate(pe.dsp_packing) if features >> i & 1]
        lut = f.lut_per_pe + sum(p.lut_per_pe + p.lut_per_column / self.array.rows for p in modes)
        if features >> n & 3:  # LUT MACs: the adder grows with the activation width
            lut += pe.lut_macs_per_pe * f.lut_per_lut_mac * (2 if features >> (n + 1) & 1 else 1)
        return lut

    def fpga_resources(self, features: int = 0) -> dict:
        """FPGA use: one DSP per PE, block RAM per bank (one bank per array edge port:
        weights per column, inputs per row, outputs per column; a bank takes whole blocks),
        the weight buffer in UltraRAM where the part has it, LUTs per PE by the precision
        modes the design needs; feasible within the device, the part's clock and the
        board's DRAM interface."""
        f, m, R, C = self.fpga, self.memory, self.array.rows, self.array.cols
        dsp = R * C + self.vector.lanes * f.dsp_per_vector_lane

        def blocks(kb, banks, block_bits):
            return banks * math.ceil(kb * 8192 / banks / block_bits)

        uram = blocks(m.weight_kb, C, URAM288_BITS) if f.uram else 0
        in_bram = ((m.input_kb, R), (m.output_kb, C)) + (() if f.uram else ((m.weight_kb, C),))
        bram18 = sum(blocks(kb, banks, BRAM18_BITS) for kb, banks in in_bram)
        bram36 = math.ceil(bram18 / 2)
        lut = int(round(f.lut_base + R * C * self.lut_per_pe(int(features)) + self.vector.lanes * f.lut_per_vector_lane))
        u = f.max_utilization
        feasible = (dsp <= u * f.dsp and bram36 <= u * f.bram36 and uram <= u * f.uram and lut <= u * f.lut
                    and self.within_limits())
        return {"dsp": dsp, "bram36": bram36, "uram": uram, "lut": lut, "dsp_avail": f.dsp,
                "bram36_avail": f.bram36, "uram_avail": f.uram, "lut_avail": f.lut, "feasible": bool(feasible)}


@dataclass(frozen=True)
class Derived:
    """Per-accelerator constants in the units the kernels use (bytes, cycles, pJ/byte)."""

    rows: int
    cols: int
    dataflow: int
    wbuf: float
    ibuf: float
    obuf: float
    bytes_per_cycle: float
    lanes: float
    e_wbuf: float
    e_ibuf: float
    e_obuf: float
    e_dram: float
    e_vec: float
    pipelined: bool = False
    act_dram: bool = False
    psum_bytes: float = 4.0
    #: PE registers per byte accessed.
    e_reg: float = 0.0


def compute_bits(b: float) -> int:
    """Bits a multiplier sees: ternary (1.58) takes a 2-bit operand."""
    return 2 if abs(b - 1.58) < 1e-6 else int(b)


def _brick(b: int) -> int:
    return next(w for w in BRICK_WIDTHS if w >= b)


def hardware_from_dict(data, source: str = "<memory>") -> Hardware:
    """Validate a preset mapping; a mistake is a one-line UserError naming the field."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: a hardware preset must be a YAML mapping with keys "
                        "name, kind, node_nm, clock_mhz, dataflow, array, pe, memory, ...")
    try:
        return Hardware(**data)
    except ValidationError as e:
        raise UserError(_format_validation_error(source, e)) from None


def load_hardware(name_or_path: str | Path | Hardware) -> Hardware:
    """A preset name (``hw_models/NAME.yaml``) or a YAML path -> a validated ``Hardware``."""
    if isinstance(name_or_path, Hardware):
        return name_or_path
    data, path = load_preset_yaml(name_or_path, "hw_models")
    return hardware_from_dict(data, source=str(path))
