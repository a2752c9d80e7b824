"""Per-operator cost formulas: a GEMM on a systolic PE array, and element-wise vector work.

Written once with numpy ufuncs so the same code costs one operator (scalars, the
per-operator path) or a million (arrays, the vectorised path). Every result is rounded to
a whole number of cycles, bytes or femtojoules, so totals are sums of integers held exactly
in float64: any summation order gives the same bits, which is what lets the batch path
equal the per-operator path exactly.

The model (``hw_models/README.md``; validation in ``benchmarks/README.md``):

* precision: a PE either packs ``pack`` narrow MACs per cycle along the dimension the
  hardware fuses (Bit Fusion fuses bricks along K; a packed DSP48E2 multiplies one
  activation by several weights, i.e. along N) or takes ``passes`` cycles per MAC
  (bit-serial / narrow bit-parallel multipliers): cycles-per-MAC ``cpm`` = passes / pack;
* mapping (array rows, array cols, streamed) = OS (M, N, K), WS (K, N, M), IS (K, M, N)
  with the fused dimension divided by ``pack``; folds = ceil(Sr/R) * ceil(Sc/C);
* ``compute_cycles`` counts as SCALE-Sim v3 does (exact on any R x C):
  OS folds * (T' + R + C - 2) - 1, WS/IS folds * (T' + 2R + C - 2) - 1, T' = T * passes;
* the array itself double-buffers when ``d.pipelined``: the next tile loads while the
  current one computes, so fill and drain are paid once per run of back-to-back GEMMs
  (one operator, or all heads of an attention product): folds * T' per GEMM + fill - 1
  per run (else the SCALE-Sim count);
* DRAM traffic: static weights (and the KV cache) are read once; activations only when
  they overflow their buffer (or always, for layer-by-layer designs); when neither operand
  fits, the cheaper one is re-streamed once per chunk of the other; WS/IS spill partial
  sums when a K x C weight block overflows the weight buffer; outputs are written back
  when they overflow;
* latency = max(array cycles, DRAM bytes / bandwidth) (DRAM transfers are double-buffered
  on every design) + a prologue (DRAM latency + the first weight tile) once per run of
  back-to-back GEMMs, on every design (``pipelined`` is about the array's folds only);
* energy = MACs x energy per MAC at those bits + SRAM bytes x pJ/B of each buffer (reads
  per dataflow) + DRAM bytes x pJ/B.
"""
from __future__ import annotations

import numpy as np

ceil, where, maximum, minimum = np.ceil, np.where, np.maximum, np.minimum


def gemm(M, K, N, count, cpm, w_bpe, x_bpe, y_bpe, w_dram, e_mac, d, runs=None) -> dict:
    """Cost of ``count`` GEMMs (M x K) @ (K x N) on accelerator constants ``d``.

    ``cpm``: PE cycles per MAC at these bits; ``*_bpe``: bytes per element of weights (the
    second operand), inputs, outputs; ``w_dram``: the second operand lives in DRAM (static
    weights, KV cache) rather than on chip; ``e_mac``: pJ per MAC; ``runs``: into how many
    back-to-back runs the ``count`` GEMMs fall (attention heads run back to back, so a
    double-buffered array fills and drains once per run; default: every GEMM alone).
    Arguments broadcast.
    """
    runs = count if runs is None else runs
    R, C, df = d.rows, d.cols, np.asarray(d.dataflow)
    os_, ws_ = df == 0, df == 1
    cpm = np.asarray(cpm, dtype=np.float64)
    pack = where(cpm < 1, np.rint(1.0 / cpm), 1.0)
    passes = maximum(cpm, 1.0)
    fuse_k = np.asarray(d.fuse_k, dtype=bool)
    Kf = where(fuse_k, ceil(K / pack), K)
    Nf = where(fuse_k, N, ceil(N / pack))
    Sr = where(os_, M, Kf)
    Sc = where(os_ | ws_, Nf, M)
    T = where(os_, Kf, where(ws_, M, Nf))
    folds = ceil(Sr / R) * ceil(Sc / C)
    fill = where(os_, R + C - 2, 2 * R + C - 2)
    steps = T * passes
    scalesim = folds * (steps + fill) - 1
    compute = where(d.pipelined, count * folds * steps + runs * maximum(fill - 1, 0), count * scalesim)

    xb, wb, yb = ceil(M * K * x_bpe), ceil(K * N * w_bpe), ceil(M * N * y_bpe)
    fit_w, fit_x = wb <= d.wbuf, xb <= d.ibuf
    w_dram = np.asarray(w_dram, dtype=bool)
    refetch = where(fit_w | fit_x, 0.0,
                    minimum((ceil(wb / d.wbuf) - 1) * xb, (ceil(xb / d.ibuf) - 1) * wb))
    k_split = where(os_, 1.0, ceil(K * C * w_bpe / d.wbuf))
    act_dram = np.asarray(d.act_dram, dtype=bool)
    dram = (where(w_dram | ~fit_w, wb, 0.0) + where(fit_x & ~act_dram, 0.0, xb) + refetch
            + (k_split - 1) * 2 * M * N * d.psum_bytes + where((yb > d.obuf) | act_dram, yb, 0.0))
    memory = ceil(dram / d.bytes_per_cycle)
    prologue = where(dram > 0, d.dram_latency + ceil(minimum(dram, R * C * pack * w_bpe) / d.bytes_per_cycle), 0.0)

    is_ = ~(os_ | ws_)
    x_reads = M * K * where(is_, 1.0, ceil(Nf / C)) * x_bpe
    w_reads = K * N * where(os_, ceil(M / R), where(ws_, 1.0, ceil(M / C))) * w_bpe
    y_writes = M * N * where(os_, y_bpe, ceil(Kf / R) * d.psum_bytes)
    macs = M * K * N
    pj = macs * e_mac + x_reads * d.e_ibuf + w_reads * d.e_wbuf + y_writes * d.e_obuf + dram * d.e_dram
    return {
        "cycles": maximum(compute, count * memory) + runs * prologue,
        "compute_cycles": count * scalesim,
        "array_cycles": compute,
        "memory_cycles": count * memory,
        "dram_bytes": count * dram,
        "energy_fj": count * np.rint(pj * 1000.0),
        "macs": count * macs,
        "act_bytes": xb + yb + where(w_dram, 0.0, wb),
    }


def vector(elems, passes, count, bpe, dram_in, d) -> dict:
    """Cost of ``count`` element-wise operators over ``elems`` values, ``passes`` operations
    each, on a vector unit of ``d.lanes``; ``dram_in``: the input comes from DRAM (an
    embedding gather); otherwise DRAM is touched only when the tensor overflows the
    output buffer (read and write back)."""
    nbytes = ceil(elems * bpe)
    dram_in = np.asarray(dram_in, dtype=bool)
    compute = ceil(elems * passes / d.lanes)
    dram = where(dram_in, nbytes, where((nbytes > d.obuf) | np.asarray(d.act_dram, dtype=bool), 2 * nbytes, 0.0))
    memory = ceil(dram / d.bytes_per_cycle)
    latency = where(dram > 0, d.dram_latency, 0.0)
    pj = elems * passes * d.e_vec + 2 * nbytes * d.e_obuf + dram * d.e_dram
    zero = 0.0 * elems
    return {
        "cycles": count * (maximum(compute, memory) + latency),
        "compute_cycles": count * compute,
        "array_cycles": count * compute,
        "memory_cycles": count * memory,
        "dram_bytes": count * dram,
        "energy_fj": count * np.rint(pj * 1000.0),
        "macs": count * zero,
        "act_bytes": 2 * nbytes,
    }


#: Quantities every operator reports, in this order.
FIELDS = ("cycles", "compute_cycles", "array_cycles", "memory_cycles", "dram_bytes", "energy_fj", "macs", "act_bytes")
