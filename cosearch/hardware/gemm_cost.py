"""Per-operator cost formulas: a GEMM on a systolic PE array, and element-wise vector work.

Written once with numpy ufuncs so the same code costs one operator (scalars, the
per-operator path) or a million (arrays, the vectorised path). Every result is rounded to
a whole number of cycles, bytes or femtojoules, so totals are sums of integers held exactly
in float64: any summation order gives the same bits, which is what lets the batch path
equal the per-operator path exactly.

The model (``hw_models/README.md``; validation in ``benchmarks/README.md``):

* precision: a PE packs ``pn`` MACs along N (a DSP48E2 multiplies one activation by
  several weights), ``pm`` along M (int4 packing multiplies two activations too) and
  ``pk`` along K (Bit Fusion fuses bricks), or takes ``passes`` cycles per MAC
  (bit-serial, 16-bit operands on 8-bit multipliers); the packed GEMM is
  ceil(M/pm) x ceil(K/pk) x ceil(N/pn);
* mapping: the dataflow fixes the streamed dimension (OS K, WS M, IS N); the spatial
  unrolling is chosen per GEMM by the cost itself among those the dataflow admits: its
  two dimensions either way round, and for OS the output features over both array axes
  (one output per PE when M is small); folds = ceil(Sr/R) * ceil(Sc/C);
* ``compute_cycles`` counts as SCALE-Sim v3 does for the dataflow's own mapping (exact on
  any R x C): OS folds * (T' + R + C - 2) - 1, WS/IS folds * (T' + 2R + C - 2) - 1, and a
  design without double buffering (``pipelined_folds: false``) takes that long;
* a double-buffered array (``d.pipelined``) takes the next tile while the current one
  computes: folds * T' per GEMM, plus one systolic drain (rows used - 1 + columns used
  - 1; none when inputs are broadcast) per run of back-to-back GEMMs (one operator, or the
  heads of an attention product);
* memory: the second operand (weights, or the KV cache) comes from DRAM ``w_loads`` of
  ``count`` times and from the on-chip weight buffer otherwise (resident weights);
  activations only when they overflow their buffers (or always, for layer-by-layer
  designs); an operand that does not fit its buffer is fetched again for each fold that
  re-reads it unless the loop order keeps the strip that fold uses (the cheaper order);
  partial sums stay on chip (WS/IS accumulate K folds in the output buffer, in chunks of
  M that fit); latency per run = max(array + first tile, DRAM bytes / sustained
  bandwidth) + drain + one write-back cycle (DRAM transfers double-buffered; the first
  tile is part of the streamed bytes, not counted twice);
* energy = MACs x pJ/MAC + register accesses (per MAC for moving operands, per load for
  the stationary one; partial sums read, written, passed on) + SRAM reads, fills (DRAM ->
  buffer writes) and partial-sum reads and writes of each buffer + DRAM bytes, each at
  its pJ/B: the events ZigZag counts for the same memory hierarchy.
"""
from __future__ import annotations

import numpy as np

ceil, where, maximum, minimum = np.ceil, np.where, np.maximum, np.minimum


def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def mappings(M, K, N, d, pn=1.0, pm=1.0, pk=1.0) -> list[dict]:
    """The spatial unrollings the dataflow ``d.dataflow`` admits for a packed GEMM, each
    as folds, streamed length ``T``, array rows and columns used, the operand elements
    held in the array at once (``w_tile``, ``x_tile``: what must arrive before the first
    MAC), how often each operand enters the array again (``rw``: W re-reads, ``rx``: X
    re-reads, ``kf``: K folds, i.e. partial-sum passes) and the extent of M, K, N one
    fold covers (``ext``). ``stat``: 0 OS, 1 WS, 2 IS (the operand that stays in the PEs)."""
    R, C = d.rows, d.cols
    Mp, Kp, Np = ceil(_f(M) / pm), ceil(_f(K) / pk), ceil(_f(N) / pn)
    size = {"M": Mp, "K": Kp, "N": Np}

    def plain(rows_dim, cols_dim, stream, stat):
        used = {rows_dim: minimum(size[rows_dim], R), cols_dim: minimum(size[cols_dim], C), stream: 1.0}
        folds = {rows_dim: ceil(size[rows_dim] / R), cols_dim: ceil(size[cols_dim] / C), stream: 1.0}
        # one fold covers its spatial extents and the whole streamed dimension
        ext = {**used, stream: size[stream]}
        return dict(folds=folds[rows_dim] * folds[cols_dim], T=size[stream], rows_used=used[rows_dim],
                    cols_used=used[cols_dim], drain=used[rows_dim] + used[cols_dim] - 2, skew=used[rows_dim] - 1,
                    stat=stat,
                    w_tile=used["K"] * used["N"], x_tile=used["M"] * used["K"],
                    rw=folds["M"], rx=folds["N"], kf=folds["K"], ext=ext)

    if d.dataflow == 0:  # OS: outputs stay, K streams
        out = [plain("M", "N", "K", 0), plain("N", "M", "K", 0)]
        # output features over the whole array, M in time, inputs broadcast to every PE (a
        # multicast path, as Eyeriss's NoC): one output per PE when M is small, no skew
        fn = ceil(Np / (R * C))
        rows_used, cols_used = minimum(ceil(Np / C), R), minimum(Np, C)
        out.append(dict(folds=fn * Mp, T=Kp, rows_used=rows_used, cols_used=cols_used, drain=0.0, skew=0.0, stat=0,
                        w_tile=minimum(Np, R * C), x_tile=1.0, rw=Mp, rx=fn, kf=1.0,
                        ext={"M": 1.0, "K": Kp, "N": minimum(Np, R * C)}))
        return out
    if d.dataflow == 1:  # WS: weights stay, M streams
        return [plain("K", "N", "M", 1), plain("N", "K", "M", 1)]
    return [plain("K", "M", "N", 2), plain("M", "K", "N", 2)]  # IS: inputs stay, N streams


def scalesim_cycles(M, K, N, d, pn=1.0, pm=1.0, pk=1.0, passes=1.0):
    """SCALE-Sim v3's compute cycles of one GEMM on the dataflow's own mapping (every
    fold pays its fill and drain): OS folds*(T + R + C - 2) - 1, WS/IS folds*(T + 2R + C - 2) - 1."""
    return _scalesim(mappings(M, K, N, d, pn, pm, pk)[0], d, passes)


def _scalesim(m, d, passes):
    """SCALE-Sim's count for mapping ``m`` (the dataflow's own: ``mappings(...)[0]``)."""
    return m["folds"] * (m["T"] * passes + _fill(d, m["stat"])) - 1


def _fill(d, stat):
    return d.rows + d.cols - 2 if stat == 0 else 2 * d.rows + d.cols - 2


def _one(m, M, K, N, per_run, passes, packs, w_bpe, x_bpe, y_bpe, e_mac, d) -> dict:
    """One GEMM under mapping ``m``, its second operand from DRAM (``*_off``, off chip) or
    from the weight buffer (``*_on``): cycles of a run of ``per_run`` GEMMs, pJ and DRAM
    bytes of one GEMM."""
    stat, pb = m["stat"], d.psum_bytes
    pn, pm, pk = packs
    pack = pn * pm * pk
    macs = M * K * N
    # a packed operation burns its energy whether or not every slot holds a MAC
    slots = ceil(M / pm) * pm * ceil(K / pk) * pk * ceil(N / pn) * pn
    xb, wb, yb = ceil(M * K * x_bpe), ceil(K * N * w_bpe), ceil(M * N * y_bpe)
    act_dram = np.asarray(d.act_dram, dtype=bool)
    # the output buffer accumulates at partial-sum precision: outputs stay on chip while
    # all of them fit there at psum_bits (they leave at their own bits)
    x_dram, y_dram = act_dram | (xb > d.ibuf), act_dram | (M * N * pb > d.obuf)
    act = where(x_dram, xb, 0.0) + where(y_dram, yb, 0.0)
    # Operands that do not fit their buffer come from DRAM again for each fold that re-reads
    # them, unless the loop order keeps the strip that fold uses: with N folds outermost the
    # W strip (the K x N a fold column uses) stays and X is re-read per N fold; with M folds
    # outermost the X strip (the M x K a fold row uses) stays and W is re-read per M fold.
    # Instead of re-reading, K can split into chunks that fit; the partial sums a split
    # leaves wait in the output buffer, or make a round trip to DRAM per chunk when they do
    # not fit (their outputs then live in DRAM anyway). WS/IS accumulate a fold column
    # (M x N-extent) over the K folds in the output buffer, in chunks of M that fit (W
    # re-read per chunk), or stream M in chunks whose inputs and partial sums fit (X once).
    # The cheapest order wins.
    e = m["ext"]
    fit_w, fit_x = wb <= d.wbuf, xb <= d.ibuf
    rw = m["rw"]
    if stat:
        rw = maximum(rw, where(m["kf"] > 1, ceil(M * e["N"] * pn * pb / d.obuf), 1.0))

    def park(chunks, outs):  # DRAM bytes of partial sums waiting between K chunks
        return where(outs * pb <= d.obuf, 0.0, 2 * M * N * pb * (chunks - 1))

    w_strip = ceil(e["K"] * pk * e["N"] * pn * w_bpe)
    x_strip = ceil(e["M"] * pm * e["K"] * pk * x_bpe)
    x_miss = x_dram & ~fit_x
    refetch_x = where(x_miss, (m["rx"] - 1) * xb, 0.0)
    refetch_w = where(fit_w, 0.0, (rw - 1) * wb)
    x_fix = where(x_miss, minimum(refetch_x, park(ceil(xb / d.ibuf), M * N)), 0.0)
    n_outer = x_fix + where(fit_w | (w_strip <= d.wbuf), 0.0,
                            minimum(refetch_w, park(ceil(w_strip / d.wbuf), M * e["N"] * pn)))
    m_outer = refetch_w + where(x_miss & (x_strip > d.ibuf),
                                minimum(refetch_x, park(ceil(x_strip / d.ibuf), e["M"] * pm * N)), 0.0)
    if stat:
        # the X strip stays while the N folds run inside the K folds: every partial sum waits
        m_outer = m_outer + where(m["kf"] > 1, park(m["kf"], e["M"] * pm * N), 0.0)
    if stat == 1:
        # WS: or M streams in chunks whose inputs and partial sums (all N) fit their
        # buffers: X once, W again per chunk (from DRAM when it does not fit)
        rows = minimum(where(x_dram, d.ibuf / (K * x_bpe), np.inf), d.obuf / (N * pb))
        chunks = ceil(M / maximum(np.floor(rows), 1.0))
        chunked = where(rows >= 1, where(fit_w, 0.0, (chunks - 1) * wb), np.inf)
        use_chunks = chunked < minimum(n_outer, m_outer)
        m_outer = minimum(m_outer, chunked)
        rw = where(use_chunks, maximum(rw, chunks), rw)
        x_fix = where(use_chunks | ~x_miss, 0.0, x_fix)
    extra = minimum(n_outer, m_outer)
    dram = {"on": act + x_fix, "off": act + wb + extra}

    # ---- time: a run overlaps its GEMMs' DRAM traffic; the array waits for the first tile
    # (less the systolic skew)
    steps = per_run * m["folds"] * m["T"] * passes
    x_first = where(x_dram, ceil(m["x_tile"] * pack * x_bpe), 0.0)
    first = {"on": x_first, "off": ceil(m["w_tile"] * pack * w_bpe) + x_first}
    if d.pipelined:
        tail = m["drain"] + 1  # systolic drain + write-back
    else:  # every fold fills and drains (SCALE-Sim)
        steps = steps + per_run * (m["folds"] * _fill(d, stat) - 1)
        tail = 0.0
    bpc = d.bytes_per_cycle
    out = {}
    for k in ("on", "off"):
        # row r of the array starts r cycles late (systolic skew): the first tile's rows may
        # arrive that much later
        t_first = ceil(minimum(first[k], dram[k]) / bpc)
        t_first = where(t_first > 0, maximum(t_first - m["skew"], 1.0), 0.0)
        out["cycles_" + k] = maximum(steps + t_first, ceil(per_run * dram[k] / bpc)) + tail
        out["dram_" + k] = dram[k]

    # ---- energy of one GEMM (pJ): the accesses ZigZag counts for this hierarchy
    x_reads, w_reads = M * K * x_bpe * m["rx"], K * N * w_bpe * rw
    in_place = macs * (2 * x_bpe + 2 * w_bpe + 2 * pb) + M * N * pb  # a partial sum held in its PE
    if stat == 0:  # OS: outputs accumulate in place, read out once
        base = _pj(slots * e_mac + in_place * d.e_reg, w_reads, x_reads, M * N * y_bpe, d)
    else:
        # partial sums pass on through the PEs, the stationary operand loads once ...
        moving, held = (2 * w_bpe, 2 * M * K * x_bpe) if stat == 2 else (2 * x_bpe, 2 * K * N * w_bpe)
        reg = macs * (moving + where(m["kf"] > 1, 4.0, 3.0) * pb) + held
        o_sram = where(m["kf"] > 1, 2 * M * N * pb * m["kf"], M * N * y_bpe)
        base = _pj(slots * e_mac + reg * d.e_reg, w_reads, x_reads, o_sram, d)
        # ... or the K folds run innermost: the partial sum stays in its PE and the
        # stationary operand is read again for every row of the streamed dimension (when
        # its strip stays on chip, so DRAM is the same): the cheaper of the two orders
        if stat == 1:
            inner = _pj(slots * e_mac + in_place * d.e_reg, K * N * w_bpe * ceil(M / pm), x_reads, M * N * y_bpe, d)
            base = where(fit_w | (w_strip <= d.wbuf), minimum(base, inner), base)
        else:
            inner = _pj(slots * e_mac + in_place * d.e_reg, w_reads, M * K * x_bpe * ceil(N / pn), M * N * y_bpe, d)
            base = where(fit_x | (x_strip <= d.ibuf), minimum(base, inner), base)
    base = base + where(x_dram, xb, 0.0) * d.e_ibuf + where(y_dram, yb, 0.0) * d.e_obuf
    fills = {k: (dram[k] - act) * d.e_wbuf for k in ("on", "off")}
    for k in ("on", "off"):
        out["fj_" + k] = np.rint((base + fills[k] + dram[k] * d.e_dram) * 1000.0)
    out["array_run"] = steps + (m["drain"] if d.pipelined else 0.0)
    return out


def _pj(core, w_reads, x_reads, o_sram, d):
    """MACs and registers (``core``) plus the buffers' reads and partial-sum traffic."""
    return core + w_reads * d.e_wbuf + x_reads * d.e_ibuf + o_sram * d.e_obuf


def gemm(M, K, N, count, pack, w_bpe, x_bpe, y_bpe, w_loads, e_mac, d, runs=None) -> dict:
    """Cost of ``count`` GEMMs (M x K) @ (K x N) on accelerator constants ``d``.

    ``pack``: (pn, pm, pk, passes) of the PE at these bits (``Hardware.pack``); ``*_bpe``:
    bytes per element of weights (the second operand), inputs, outputs; ``w_loads``: of
    the ``count`` GEMMs, how many read the second operand from DRAM (``count``: streamed
    every time, as the KV cache; 1: loaded once, then resident on chip; 0: on chip
    already, or an activation); ``e_mac``: pJ per MAC; ``runs``: into how many back-to-
    back runs the ``count`` GEMMs fall (heads of one attention product run back to back;
    default: every GEMM alone; runs read DRAM in the proportion w_loads / count). The
    spatial mapping is the fastest the dataflow admits (ties: less energy). Arguments
    broadcast.
    """
    return gemm_each(M, K, N, count, pack, w_bpe, x_bpe, y_bpe, (w_loads,), e_mac, d, runs)[0]


def gemm_each(M, K, N, count, pack, w_bpe, x_bpe, y_bpe, loads_each, e_mac, d, runs=None) -> list[dict]:
    """:func:`gemm` for each of several ``w_loads`` (weights streamed, weights on chip):
    the mappings are costed once for all of them."""
    pn, pm, pk, passes = (_f(p) for p in pack)
    M, K, N, count = _f(M), _f(K), _f(N), _f(count)
    runs = count if runs is None else _f(runs)
    per_run = count / maximum(runs, 1.0)
    maps = mappings(M, K, N, d, pn, pm, pk)
    ones = [_one(m, M, K, N, per_run, passes, (pn, pm, pk), w_bpe, x_bpe, y_bpe, e_mac, d) for m in maps]
    compute = count * _scalesim(maps[0], d, passes)
    keys = ("cycles", "fj", "dram", "array")
    out = []
    for w_loads in loads_each:
        loads = minimum(_f(w_loads), count)
        runs_off = np.rint(runs * loads / maximum(count, 1.0))
        best = None
        for r in ones:
            cand = (runs_off * r["cycles_off"] + (runs - runs_off) * r["cycles_on"],
                    loads * r["fj_off"] + (count - loads) * r["fj_on"],
                    loads * r["dram_off"] + (count - loads) * r["dram_on"], runs * r["array_run"])
            if best is None:
                best = dict(zip(keys, cand))
            else:
                better = (cand[0] < best["cycles"]) | ((cand[0] == best["cycles"]) & (cand[1] < best["fj"]))
                best = {k: where(better, new, best[k]) for k, new in zip(keys, cand)}
        out.append({
            "cycles": best["cycles"],
            "compute_cycles": compute,
            "array_cycles": best["array"],
            "memory_cycles": ceil(best["dram"] / d.bytes_per_cycle),
            "dram_bytes": best["dram"],
            "energy_fj": best["fj"],
            "macs": count * M * K * N,
            "act_bytes": ceil(M * K * x_bpe) + ceil(M * N * y_bpe),
        })
    return out


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
    pj = elems * passes * d.e_vec + 2 * nbytes * d.e_obuf + dram * d.e_dram
    zero = 0.0 * elems
    return {
        "cycles": count * maximum(compute, memory),
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
