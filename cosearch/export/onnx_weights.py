"""Quantized weights inside ONNX graphs: the integer forms, and how they are stored.

Two runtime forms of a weight w[n, k] = level(c[n, k]) * s[n] (``cosearch.model.quant``):

* ``MatMulNBits`` (float activations): unsigned codes q with w = (q - zero_point) * scale,
  2, 4 or 8 bits wide, packed low bits first along K in blocks (``nbits_weight``);
* integer numerators for ``MatMulInteger`` (integer activations): int8 m with
  w = m * scale' exactly (``numerators``: 2 bits and binary m = 2c + 1, ternary m = c).

Storage: every weight below 8 bits is stored in the file as the very bytes of
``model.safetensors`` (``cosearch.export.packing``: b bits per weight, ternary five per
byte), and a few integer operators (Div, Mod, Mul, ReduceSum on constants) turn them into
the runtime form. Their inputs are all constants, so onnxruntime folds them into
initializers when the session starts (and ``MatMulNBits`` then pre-packs the folded codes
as usual): the file holds each weight at its real size (ternary 1.6 bits, 3 bits 3,
binary 1) and the runtime the form its kernel needs. 4- and 8-bit ``MatMulNBits`` weights
(and 2-bit ones without K padding) are stored in the kernel's own layout, which is as dense.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from onnx import TensorProto

from ..model.quant import TERNARY, quantize_codes
from ..space import canonical_bits
from .packing import pack_codes


def matmul_nbits_bits(bits: float) -> int:
    """The MatMulNBits code width that holds ``bits``-bit weights."""
    b = canonical_bits(bits)
    if b <= 2:
        return 2
    if b <= 4:
        return 4
    return 8


def block_size_for(k: int, bits: int, has_zero_point: bool) -> int:
    """The MatMulNBits block size (power of two, >= 16) that holds K columns in the fewest
    bytes of the kernel's memory (padding plus one scale, and zero point, per block); ties
    go to the larger block."""
    limit = 256 if bits == 2 else 2048  # onnxruntime's CPU kernel refuses 2-bit blocks over 256
    best = None
    bs = 16
    while bs <= limit:
        blocks = -(-k // bs)
        cost = blocks * (bs * bits // 8 + 4 * (2 if has_zero_point else 1))
        if best is None or cost <= best[0]:
            best = (cost, bs)
        if bs >= k:
            break
        bs *= 2
    return best[1]


def pack_low_first(q: np.ndarray, bits: int, block_size: int) -> np.ndarray:
    """Unsigned codes (N, K) -> uint8 (N, k_blocks, block_size * bits / 8), the first code
    of every byte in its lowest bits (MatMulNBits' layout); K is zero-padded to whole blocks."""
    n, k = q.shape
    blocks = -(-k // block_size)
    padded = np.zeros((n, blocks * block_size), np.uint8)
    padded[:, :k] = q
    per_byte = 8 // bits
    groups = padded.reshape(n, blocks, block_size // per_byte, per_byte).astype(np.uint16)
    out = np.zeros(groups.shape[:-1], np.uint16)
    for i in range(per_byte):
        out |= groups[..., i] << (i * bits)
    return out.astype(np.uint8)


@dataclass
class NBitsWeight:
    """One linear's weight in MatMulNBits form: w[n, k] = (q[n, k] - zero_point) * scale[n]."""

    codes: np.ndarray        # uint8 (N, K), unsigned
    scale: np.ndarray        # float32 (N,)
    zero_point: float | None  # None: the default 2^(bits-1), an integer
    bits: int
    #: q = code_mul * c + code_add from the signed codes c of quantize_codes
    code_mul: int = 1
    code_add: int = 0


def nbits_weight(weight: torch.Tensor, bits: float, scale: torch.Tensor) -> NBitsWeight:
    """The MatMulNBits form of a fake-quantized weight with per-row ``scale`` (exact)."""
    b = canonical_bits(bits)
    c = quantize_codes(weight, b, scale).numpy().astype(np.int16)
    s = scale.detach().float().reshape(-1)
    nb = matmul_nbits_bits(b)
    if b == 2:      # level (c + 1/2) / 2: (q - 1.5) * s/2 with q = c + 2
        return NBitsWeight((c + 2).astype(np.uint8), (s * 0.5).numpy(), 1.5, nb, 1, 2)
    if b == TERNARY:  # level 2c/3: (q - 2) * (2/3 s), the float32 product quant.py forms
        return NBitsWeight((c + 2).astype(np.uint8), (torch.ones(1) * (2.0 / 3.0) * s).numpy(), 2.0, nb, 1, 2)
    if b == 1:      # level 2c + 1 in {-1, 1}: q = 2c + 3 in {1, 3}, zero point 2
        return NBitsWeight((2 * c + 3).astype(np.uint8), s.numpy(), 2.0, nb, 2, 3)
    off = 2 ** (nb - 1)
    return NBitsWeight((c + off).astype(np.uint8), s.numpy(), None, nb, 1, off)


def numerators(weight: torch.Tensor, bits: float, scale: torch.Tensor) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(int8 numerators (N, K), float32 scale (N,), mul, add) with numerator * scale ==
    weight exactly and numerator = mul * c + add for the signed codes c."""
    b = canonical_bits(bits)
    c = quantize_codes(weight, b, scale).numpy().astype(np.int16)
    s = scale.detach().float().reshape(-1)
    if b == 2:
        return (2 * c + 1).astype(np.int8), (s * 0.25).numpy(), 2, 1
    if b == TERNARY:
        return c.astype(np.int8), (torch.ones(1) * (2.0 / 3.0) * s).numpy(), 1, 0
    if b == 1:
        return (2 * c + 1).astype(np.int8), s.numpy(), 2, 1
    return c.astype(np.int8), s.numpy(), 1, 0


def table_numerators(weight: torch.Tensor, bits: float, scale: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(int8 numerators (V, D), float32 scale (V,)) with numerator * scale == weight exactly."""
    num, s, _, _ = numerators(weight, bits, scale)
    return num, s


# --------------------------------------------------------------------------- stored codes
def stored_codes(g, name: str, weight: torch.Tensor, bits: float, scale: torch.Tensor) -> str:
    """An int32 (N, K) tensor of the signed codes of ``weight``, stored as its packed bytes
    (``pack_codes``, as in model.safetensors) and unpacked by operators on constants."""
    b = canonical_bits(bits)
    codes = quantize_codes(weight, b, scale).numpy()
    n, k = codes.shape
    packed = g.const(f"{name}.packed_codes", pack_codes(codes, b))
    x = g.op("Unsqueeze", [g.op("Cast", [packed], to=TensorProto.INT32), g.ints([-1])])
    if b == TERNARY:  # five trits a byte: t_i = byte // 3^i mod 3, code = t - 1
        digits = g.op("Mod", [g.op("Div", [x, g.const("unpack.pow3", 3 ** np.arange(5, dtype=np.int32))]),
                              g.scalar(3, np.int32)])
        flat = g.op("Slice", [g.op("Reshape", [digits, g.ints([-1])]), g.ints([0]), g.ints([n * k])])
        signed = g.op("Sub", [flat, g.scalar(1, np.int32)])
    elif b == 8:
        signed = g.op("Sub", [g.op("Reshape", [x, g.ints([-1])]), g.scalar(128, np.int32)])
    else:  # a most-significant-bit-first stream of b-bit unsigned codes, code = u - 2^(b-1)
        nb = int(b)
        bits_of = g.op("Mod", [g.op("Div", [x, g.const("unpack.pow2", 2 ** np.arange(7, -1, -1, dtype=np.int32))]),
                               g.scalar(2, np.int32)])
        stream = g.op("Slice", [g.op("Reshape", [bits_of, g.ints([-1])]), g.ints([0]), g.ints([n * k * nb])])
        place = g.const(f"unpack.place{nb}", 2 ** np.arange(nb - 1, -1, -1, dtype=np.int32))
        unsigned = g.op("ReduceSum", [g.op("Mul", [g.op("Reshape", [stream, g.ints([n * k, nb])]), place]),
                                      g.ints([-1])], keepdims=0)
        signed = g.op("Sub", [unsigned, g.scalar(2 ** (nb - 1), np.int32)])
    return g.op("Reshape", [signed, g.ints([n, k])])


def _affine(g, codes: str, mul: int, add: int) -> str:
    if mul != 1:
        codes = g.op("Mul", [codes, g.scalar(mul, np.int32)])
    return g.op("Add", [codes, g.scalar(add, np.int32)]) if add else codes


def nbits_inputs(g, name: str, weight: torch.Tensor, bits: float, scale: torch.Tensor) -> tuple[list[str], dict]:
    """(MatMulNBits inputs B, scales, zero points; its attributes) for one linear."""
    w = nbits_weight(weight, bits, scale)
    n, k = w.codes.shape
    bs = block_size_for(k, w.bits, w.zero_point is not None)
    blocks = -(-k // bs)
    b = canonical_bits(bits)
    if b in (4, 8) or (b == 2 and k % bs == 0):  # the kernel's own layout is as dense
        packed = g.const(f"{name}.weight_codes", pack_low_first(w.codes, w.bits, bs))
    else:  # stored at the real bit-width, repacked to the kernel's layout when the session starts
        q = _affine(g, stored_codes(g, name, weight, bits, scale), w.code_mul, w.code_add)
        per_byte = 8 // w.bits
        q = g.op("Pad", [q, g.ints([0, 0, 0, blocks * bs - k])]) if blocks * bs != k else q
        groups = g.op("Reshape", [q, g.ints([n, blocks, bs // per_byte, per_byte])])
        place = g.const(f"pack.low_first{w.bits}", (2 ** (w.bits * np.arange(per_byte))).astype(np.int32))
        packed = g.op("Cast", [g.op("ReduceSum", [g.op("Mul", [groups, place]), g.ints([-1])], keepdims=0)],
                      to=TensorProto.UINT8)
    rows = g.ints([n, blocks])
    scales = g.op("Expand", [g.const(f"{name}.weight_scale", w.scale[:, None].astype(np.float32)), rows])
    zp = g.op("Expand", [g.scalar(float(w.zero_point)), rows]) if w.zero_point is not None else ""
    return [packed, scales, zp], dict(K=k, N=n, bits=w.bits, block_size=bs)


def integer_inputs(g, name: str, weight: torch.Tensor, bits: float, scale: torch.Tensor) -> tuple[str, str]:
    """(int8 numerators (K, N), float32 scale (N,)) of one linear, for ``MatMulInteger``."""
    num, s, mul, add = numerators(weight, bits, scale)
    if canonical_bits(bits) == 8:
        b = g.const(f"{name}.weight_int8_t", np.ascontiguousarray(num.T))
    else:
        m = _affine(g, stored_codes(g, name, weight, bits, scale), mul, add)
        b = g.op("Cast", [g.op("Transpose", [m], perm=[1, 0])], to=TensorProto.INT8)
    return b, g.const(f"{name}.weight_scale", s.astype(np.float32))
