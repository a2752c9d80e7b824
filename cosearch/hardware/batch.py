"""The vectorised path: cost many sub-networks (on one or many accelerators) in numpy.

A layer's cost depends only on its genes (embedding width, the encoder width its cross-
attention reads, FFN width, heads, bits, cross span), so each distinct layer configuration
is costed once (all its operators at once, by the same rules and formulas as the per-
operator path) into a table; an architecture's totals are then a gather and a sum over its
layers. Tables are cached per (space, accelerator, scenario). All per-operator quantities
are whole numbers, so the sums equal the per-operator path's bit for bit.

In decode a layer's row holds its cost twice, weights streamed and weights on chip, and
its weight bytes; which layers stay on chip is decided per architecture
(``residency.resident_units``, the rule the per-operator path applies).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import Sequence

import numpy as np

from ..errors import UserError
from ..space import FLOAT_BITS, STORAGE_BITS, Arch, LayerArch, SearchSpace
from .arch_cost import DECI, _deci, check_exact, resources, totals_from_sums, within_power
from .gemm_cost import gemm_each, vector
from .residency import reserve_bytes, resident_units
from .schema import Hardware, load_hardware
from .workload import Scenario, layer_ops, side_ops

#: Columns of a layer table: totals with weights streamed, what keeping the layer's
#: weights on chip changes in the first three (``gain_``, <= 0), and the bytes it takes.
COLS = ("cycles", "energy_fj", "dram_bytes", "macs", "kv_bytes", "act_bytes", "size_deci", "features",
        "gain_cycles", "gain_energy_fj", "gain_dram_bytes", "unit_bytes")
_C = {k: i for i, k in enumerate(COLS)}
_GAIN = slice(_C["gain_cycles"], _C["gain_dram_bytes"] + 1)
#: Columns _ops_rows fills.
_OPS_COLS = ("cycles", "energy_fj", "dram_bytes", "macs", "kv_bytes", "act_bytes", "gain_cycles", "gain_energy_fj",
             "gain_dram_bytes", "unit_bytes")
_TABLES: OrderedDict = OrderedDict()
_MAX_TABLES = 128
#: Build the whole table of a side when a batch has at least this many archs on one accelerator.
_FULL_TABLE_MIN_BATCH = 64
_GET = attrgetter("ffn_dim", "heads", "weight_bits", "act_bits", "cross_layers")


@dataclass
class _Radix:
    """Gene options of one side's layers and the mixed-radix layer code."""

    names: tuple
    options: list  # list of np.ndarray, one per gene
    _luts: dict = field(default_factory=dict)

    @property
    def sizes(self) -> list[int]:
        return [len(o) for o in self.options]

    @property
    def n_codes(self) -> int:
        return int(np.prod(self.sizes))

    def decode(self, codes: np.ndarray) -> dict:
        out, rest = {}, codes.copy()
        for name, opts in zip(reversed(self.names), reversed(self.options)):
            out[name] = opts[rest % len(opts)]
            rest //= len(opts)
        return out

    def index(self, **values) -> np.ndarray:
        """The part of the layer code the given genes contribute (a dense lookup per gene:
        values are small numbers; bits are looked up at 1/100 resolution for 1.58)."""
        code = 0
        stride = np.cumprod([1] + self.sizes[::-1])[::-1][1:]
        for name, opts, st in zip(self.names, self.options, stride):
            if name in values:
                lut = self._luts.get(name)
                if lut is None:
                    lut = np.full(int(round(opts.max() * 100)) + 1, -1, dtype=np.int64)
                    lut[np.round(opts * 100).astype(np.int64)] = np.arange(len(opts)) * st
                    self._luts[name] = lut
                key = np.round(np.asarray(values[name]) * 100).astype(np.int64)
                if key.size and (key.max() >= len(lut) or key.min() < 0 or lut[key].min() < 0):
                    raise UserError(f"an architecture has a {name} value outside the space's choices "
                                    f"{opts.tolist()}; check it with space.validate_arch")
                code = code + lut[key]
        return code


_RADIX: dict = {}


def _radix(space: SearchSpace, side: str) -> _Radix:
    hit = _RADIX.get((id(space), side))
    if hit is not None and hit[0] is space:
        return hit[1]
    rad = _new_radix(space, side)
    if len(_RADIX) > 256:
        _RADIX.clear()
    _RADIX[(id(space), side)] = (space, rad)
    return rad


def _new_radix(space: SearchSpace, side: str) -> _Radix:
    s, q = space.side(side), space.spec.quantization
    enc = space.side("encoder").embed_dim if space.is_encdec else [0]
    cross = s.cross_layers if (side == "decoder" and space.is_encdec) else [0]
    opts = [s.embed_dim, enc, s.ffn_dim, s.heads, q.weight_bits, q.act_bits, cross]
    return _Radix(("e", "e_enc", "ffn", "heads", "wb", "ab", "cross"),
                  [np.asarray(o, dtype=np.float64) for o in opts])


def _lookup(fn, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """fn(a_i, b_i) for arrays with few distinct values (bit-widths)."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    table = np.array([[fn(float(x) if x != int(x) else int(x), int(y)) for y in ub] for x in ua])
    return table[ia.reshape(a.shape), ib.reshape(b.shape)]


def _storage_deci(w: np.ndarray) -> np.ndarray:
    return _lookup(lambda x, _: _deci(STORAGE_BITS[x]), w, 0 * w)


def _ops_rows(ops: list[dict], hw: Hardware, m: int) -> np.ndarray:
    """(m, len(_OPS_COLS)) totals of a list of operators whose fields are (m, 1) or
    (m, steps) arrays; the same formulas as the per-operator path."""
    d = hw.derived
    out = np.zeros((m, len(_OPS_COLS)))
    col = {k: i for i, k in enumerate(_OPS_COLS)}
    shape = (m, 1)

    def total(x):
        return np.broadcast_to(x, np.broadcast_shapes(np.shape(x), shape)).sum(axis=-1)

    precision = {}  # (wbits, ab) -> pack, e_mac: a layer's operators share their bit arrays

    def pack_and_energy(w, a):
        key = (np.shape(w), np.asarray(w).tobytes(), np.shape(a), np.asarray(a).tobytes())
        if key not in precision:
            t = _lookup(lambda x, y: (*hw.pack(x, y), hw.mac_energy_pj(x, y)), w, a)
            precision[key] = (tuple(t[..., i] for i in range(4)), t[..., 4])
        return precision[key]

    for op in ops:
        if op["kind"] == "gemm":
            pack, e_mac = pack_and_energy(op["wbits"], op["ab"])
            args = (op["M"], op["K"], op["N"], op["count"], pack, op["w_bpe"], op["ab"] / 8, op["ab"] / 8)
            loads = (op["w_loads"], op["loads_resident"]) if op["resident_ok"] else (op["w_loads"],)
            res = gemm_each(*args, loads, e_mac, d, op["runs"])
            r, rr = res[0], res[-1]
            kv = op["kv_bytes"]
            if op["resident_ok"]:
                out[:, col["unit_bytes"]] += total(np.ceil(op["K"] * op["N"] * op["w_bpe"]))
        else:
            r = rr = vector(op["elems"], op["passes"], op["count"], op["bpe"], op["dram_in"], d)
            kv = 0.0
        for k in ("cycles", "energy_fj", "dram_bytes", "macs"):
            out[:, col[k]] += total(r[k])
        if rr is not r:
            for k in ("cycles", "energy_fj", "dram_bytes"):
                out[:, col["gain_" + k]] += total(rr[k]) - total(r[k])
        out[:, col["kv_bytes"]] += np.broadcast_to(np.ceil(kv), shape)[:, 0]
        act = np.broadcast_to(r["act_bytes"], np.broadcast_shapes(np.shape(r["act_bytes"]), shape)).max(axis=-1)
        out[:, col["act_bytes"]] = np.maximum(out[:, col["act_bytes"]], act)
    return out


def _layer_rows(space: SearchSpace, side: str, sc: Scenario, hw: Hardware, codes: np.ndarray) -> np.ndarray:
    """Table rows (len(codes), COLS) for layer configurations given by their codes."""
    rad = _radix(space, side)
    absent = codes >= rad.n_codes
    g = {k: v[:, None] for k, v in rad.decode(np.where(absent, 0, codes)).items()}
    attn = {h: space.attn_dim(side, int(h)) for h in space.side(side).heads}
    a = _lookup(lambda h, _: attn[h], g["heads"], 0 * g["heads"])
    e, wb, ab = g["e"], g["wb"], g["ab"]
    dims = {"q": (e, a), "k": (e, a), "v": (e, a), "out": (a, e), "fc1": (e, g["ffn"]), "fc2": (g["ffn"], e)}
    if side == "decoder" and space.is_encdec:
        dims.update(cross_q=(e, a), cross_k=(g["e_enc"], a), cross_v=(g["e_enc"], a), cross_out=(a, e))
    lin = {r: (i, o, r, wb, ab) for r, (i, o) in dims.items()}
    ops = layer_ops(space, side, sc, lin, e, g["heads"], g["ffn"], ab, g["cross"], side)
    rows = np.zeros((len(codes), len(COLS)))
    rows[:, [_C[k] for k in _OPS_COLS]] = _ops_rows(ops, hw, len(codes))
    scale = np.where(wb < 16, FLOAT_BITS * DECI, 0)  # per-channel scales of quantized weights
    size = sum(i * o * _storage_deci(wb) + o * FLOAT_BITS * DECI + o * scale for i, o in dims.values())
    rows[:, _C["size_deci"]] = size[:, 0]
    rows[:, _C["features"]] = _lookup(hw.pe_features, wb, ab)[:, 0]
    rows[absent] = 0.0
    return rows


def _side_rows(space: SearchSpace, side: str, sc: Scenario, hw: Hardware) -> np.ndarray:
    """Embedding gather, final norm and logits, one row (COLS) per embedding width of the side."""
    e = np.asarray(space.side(side).embed_dim, dtype=np.float64)[:, None]
    pre, post = side_ops(space, side, sc, e)
    rows = np.zeros((len(e), len(COLS)))
    rows[:, [_C[k] for k in _OPS_COLS]] = _ops_rows(pre + post, hw, len(e))
    return rows


def _tables(space: SearchSpace, sc: Scenario, hw: Hardware, codes: dict, full: bool) -> dict:
    """Per side: (layer table or None, rows for ``codes`` when no full table, side rows)."""
    key = (id(space), space.source, hw.key, sc)
    cached = _TABLES.get(key)
    if cached is not None:
        _TABLES.move_to_end(key)
        return {s: (cached[s][0], None, cached[s][1]) for s in space.sides()}
    out = {}
    for side in space.sides():
        side_rows = _side_rows(space, side, sc, hw)
        n_codes = _radix(space, side).n_codes
        if full:  # every configuration, plus a zero row for absent layers
            table = _layer_rows(space, side, sc, hw, np.arange(n_codes + 1))
            out[side] = (table, None, side_rows)
        else:
            uniq, inv = np.unique(codes[side], return_inverse=True)
            out[side] = (None, (_layer_rows(space, side, sc, hw, uniq), inv), side_rows)
    if full:
        _TABLES[key] = {s: (out[s][0], out[s][2]) for s in space.sides()}
        while len(_TABLES) > _MAX_TABLES:
            _TABLES.popitem(last=False)
    return out


#: LayerArch fields in the order ``vars(layer).values()`` yields them (checked below).
_LAYER_FIELDS = ("ffn_dim", "heads", "weight_bits", "act_bits", "cross_layers")
_FAST_VARS = tuple(LayerArch.__dataclass_fields__) == _LAYER_FIELDS


def _layer_values(layers: list) -> np.ndarray:
    """(len(layers), 5) gene values; ``vars`` is ~2x faster than attribute getters."""
    get = map(dict.values, map(vars, layers)) if _FAST_VARS else map(_GET, layers)
    return np.fromiter(chain.from_iterable(get), np.float64, 5 * len(layers)).reshape(-1, 5)


@dataclass
class Genes:
    """A batch of architectures as arrays: per side the embedding width, the layer count and
    every layer's genes (flattened, arch after arch: ffn, heads, weight bits, act bits,
    cross span)."""

    n: int
    embed: dict
    counts: dict
    layers: dict

    @classmethod
    def from_archs(cls, space: SearchSpace, archs: Sequence[Arch]) -> "Genes":
        embed, counts, layers = {}, {}, {}
        for side in space.sides():
            stacks = list(map(attrgetter(side), archs))
            counts[side] = np.fromiter(map(len, stacks), dtype=np.int64, count=len(archs))
            embed[side] = np.fromiter(map(attrgetter(f"{side}_embed_dim"), archs), np.float64, len(archs))
            layers[side] = _layer_values(list(chain.from_iterable(stacks)))
        return cls(len(archs), embed, counts, layers)

    def padded_codes(self, space: SearchSpace, side: str) -> np.ndarray:
        """(n, max layers) layer codes; absent layers point at the table's zero row."""
        rad = _radix(space, side)
        L, cnt = self.layers[side], self.counts[side]
        enc = self.embed["encoder"] if space.is_encdec else np.zeros(self.n)
        per_arch = rad.index(e=self.embed[side], e_enc=enc)
        code = np.repeat(per_arch, cnt) + rad.index(ffn=L[:, 0], heads=L[:, 1], wb=L[:, 2], ab=L[:, 3],
                                                     cross=L[:, 4])
        width = int(cnt.max()) if self.n else 0
        out = np.full((self.n, width), rad.n_codes, dtype=np.int64)
        owner = np.repeat(np.arange(self.n), cnt)
        pos = np.arange(len(L)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        out[owner, pos] = code
        return out


def _global_size_deci(space: SearchSpace, g: Genes) -> np.ndarray:
    """Embedding tables and layer norms, as ``space.size`` counts them (tenths of a bit)."""
    ebits = space.spec.quantization.embedding_bits
    per_row = _deci(STORAGE_BITS[ebits])
    extra = FLOAT_BITS * DECI if ebits < 16 else 0
    V = space.vocab_size
    if space.is_encdec and space.spec.share_embeddings:
        widths = [np.maximum(g.embed["encoder"], g.embed["decoder"])]
    else:
        widths = [g.embed[s] for s in space.sides()]
    total = sum(V * w * per_row + V * extra for w in widths)
    for side in space.sides():
        per = 3 if (side == "decoder" and space.is_encdec) else 2
        total = total + 2 * g.embed[side] * (per * g.counts[side] + 1) * FLOAT_BITS * DECI
    return total


def _batch_one_hw(space: SearchSpace, g: Genes, hw: Hardware, sc: Scenario) -> dict:
    codes = {s: g.padded_codes(space, s) for s in space.sides()}
    tabs = _tables(space, sc, hw, codes, full=g.n >= _FULL_TABLE_MIN_BATCH)  # a cached full table is used anyway
    tot = np.zeros((g.n, len(COLS)))
    feats = np.zeros(g.n, dtype=np.int64)
    for side in space.sides():
        table, partial, side_rows = tabs[side]
        if table is None:
            uniq_rows, inv = partial
            table, idx = uniq_rows, inv.reshape(codes[side].shape).T
        else:
            idx = codes[side].T
        # layer slot first: reductions over the leading axis are contiguous adds (fast)
        rows = table[idx]
        summed, peak = rows[:, :, :_GAIN.start].sum(axis=0), rows[:, :, _C["act_bytes"]].max(axis=0)
        e_idx = np.searchsorted(np.asarray(space.side(side).embed_dim, dtype=np.float64), g.embed[side])
        srow = side_rows[e_idx]
        tot[:, :5] += summed[:, :5] + srow[:, :5]
        tot[:, 6] += summed[:, 6]
        tot[:, 5] = np.maximum(tot[:, 5], np.maximum(peak, srow[:, 5]))
        if sc.name == "decode" and (side == "decoder" or not space.is_encdec):
            # layers (then the output projection) kept on chip where they fit
            units = np.concatenate([rows[:, :, -1].T, srow[:, -1:]], axis=1)
            keep = resident_units(units, hw.derived.wbuf, reserve_bytes(hw.array.rows, hw.array.cols))
            gain = srow[:, _GAIN] * keep[:, -1:]
            for slot in range(rows.shape[0]):
                gain += rows[slot, :, _GAIN] * keep[:, slot:slot + 1]
            tot[:, :3] += gain
        if hw.kind == "fpga":  # the PE logic a design needs: the union of its layers' modes
            feats = feats | np.bitwise_or.reduce(rows[:, :, 7].astype(np.int64), axis=0)
    size = tot[:, 6] + _global_size_deci(space, g)
    check_exact(f"{space.name} on {hw.name}", tot[:, :4])
    cycles, lat, energy, size_bytes, peak, power = totals_from_sums(hw, tot[:, 0], tot[:, 1], size, tot[:, 4],
                                                                    tot[:, 5])
    out = {"latency_ms": lat, "energy_mj": energy, "size_bytes": size_bytes, "peak_memory_bytes": peak,
           "power_w": power, "cycles": cycles, "dram_bytes": tot[:, 2], "macs": tot[:, 3]}
    if hw.kind == "fpga":
        # a few distinct PE-mode sets: look each one's resources up once (no sort of the batch)
        keys = ("feasible", "dsp", "bram36", "uram", "lut")
        lut = np.zeros((len(keys), int(feats.max()) + 1))
        for f in np.flatnonzero(np.bincount(feats)):
            r = resources(hw, int(f))[1]
            lut[:, f] = [r[k] for k in keys]
        per_arch = lut.take(feats, axis=1)  # one gather (4x faster than lut[:, feats])
        out["feasible"] = per_arch[0].astype(bool)
        out.update((f"fpga_{k}", row) for k, row in zip(keys[1:], per_arch[1:]))
        out["area_mm2"] = np.full(g.n, np.nan)
    else:
        area, _, ok = resources(hw, 0)
        out["feasible"] = np.full(g.n, ok, dtype=bool)
        out["area_mm2"] = np.full(g.n, area)
    out["feasible"] &= within_power(hw, power)
    return out


def cost_batch(space: SearchSpace, archs: Sequence[Arch] | Genes, hw: Hardware | str | Sequence,
               scenario: str | Scenario = "prefill", seq_len: int = 30, decode_tokens: int = 30,
               batch: int = 1) -> dict[str, np.ndarray]:
    """Cost many sub-networks at once: the same numbers as :func:`cost`, as arrays.

    ``hw``: one accelerator for all, or one per architecture (co-design). Returns arrays of
    length len(archs): latency_ms, energy_mj, size_bytes, peak_memory_bytes, power_w, cycles,
    dram_bytes, macs, feasible, area_mm2 (NaN on FPGAs) and, when any accelerator is an
    FPGA, fpga_dsp, fpga_bram36, fpga_uram, fpga_lut (NaN on ASICs).
    """
    sc = scenario if isinstance(scenario, Scenario) else Scenario(scenario, seq_len, decode_tokens, batch)
    g = archs if isinstance(archs, Genes) else Genes.from_archs(space, archs)
    if isinstance(hw, (str, Hardware)) or not isinstance(hw, Sequence):
        return _batch_one_hw(space, g, load_hardware(hw), sc)
    hws = [load_hardware(h) for h in hw]
    if len(hws) != g.n:
        raise ValueError(f"got {len(hws)} accelerators for {g.n} architectures")
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(hws):
        groups.setdefault(h.key, []).append(i)
    out: dict[str, np.ndarray] = {}
    for idx in groups.values():
        part = _batch_one_hw(space, _subset(space, g, idx), hws[idx[0]], sc)
        for k, v in part.items():
            if k not in out:
                out[k] = np.full(g.n, False) if v.dtype == bool else np.full(g.n, np.nan)
            out[k][idx] = v
    return out


def _subset(space: SearchSpace, g: Genes, idx: list[int]) -> Genes:
    idx = np.asarray(idx)
    layers = {}
    for side in space.sides():
        starts = np.concatenate([[0], np.cumsum(g.counts[side])[:-1]])
        take = np.concatenate([np.arange(starts[i], starts[i] + g.counts[side][i]) for i in idx])
        layers[side] = g.layers[side][take]
    return Genes(len(idx), {s: v[idx] for s, v in g.embed.items()},
                 {s: v[idx] for s, v in g.counts.items()}, layers)
