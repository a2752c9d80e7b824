"""Bit-packing of integer weight codes for export (numpy only).

Codes are the signed integers of ``cosearch.model.quant.quantize_codes``. They are stored offset
to unsigned (code + 2^(b-1)):

* 1, 2, 3, 4, 8 bits: one dense bitstream, b bits per weight (3 bits really take 3),
  most significant bit first within each code and each byte (``np.packbits`` order);
* ternary (1.58): five trits per byte, ``t0 + 3 t1 + 9 t2 + 27 t3 + 81 t4`` with
  t = code + 1 (3^5 = 243 <= 256), i.e. 1.6 bits per weight;
* 16 bits: the fp16 bit patterns, little-endian, two bytes per weight.

The tail of the last byte is zero padding; ``unpack_codes`` needs the weight count.
"""
from __future__ import annotations

import numpy as np

from ..space import canonical_bits

TERNARY = 1.58
_TRITS_PER_BYTE = 5
_TRIT_WEIGHTS = 3 ** np.arange(_TRITS_PER_BYTE, dtype=np.uint8)  # 1, 3, 9, 27, 81


def packed_nbytes(count: int, bits: float) -> int:
    """Bytes that ``count`` codes take once packed at ``bits``."""
    b = canonical_bits(bits)
    if b == TERNARY:
        return -(-count // _TRITS_PER_BYTE)
    return -(-count * int(b) // 8)


def _code_range(b: float) -> tuple[int, int]:
    if b == TERNARY:
        return -1, 1
    return -(2 ** (int(b) - 1)), 2 ** (int(b) - 1) - 1


def pack_codes(codes: np.ndarray, bits: float) -> np.ndarray:
    """Pack signed integer codes (any shape, flattened in C order) into a uint8 buffer.

    At 16 bits ``codes`` are fp16 bit patterns (int16) or an fp16 array.
    """
    b = canonical_bits(bits)
    flat = np.ascontiguousarray(codes).reshape(-1)
    if b == 16:
        if flat.dtype == np.float16:
            flat = flat.view(np.int16)
        if flat.dtype.itemsize != 2 or flat.dtype.kind not in "iu":
            raise ValueError(f"16-bit codes must be int16 fp16 bit patterns or float16, got {flat.dtype}")
        return flat.astype("<i2", copy=False).view(np.uint8).copy()
    if flat.dtype.kind not in "iu":
        raise ValueError(f"codes must be integers, got {flat.dtype}")
    lo, hi = _code_range(b)
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"{b}-bit codes must lie in [{lo}, {hi}], got [{flat.min()}, {flat.max()}]")
    unsigned = (flat.astype(np.int16) - lo).astype(np.uint8)
    if b == TERNARY:
        pad = (-unsigned.size) % _TRITS_PER_BYTE
        trits = np.concatenate([unsigned, np.zeros(pad, np.uint8)]).reshape(-1, _TRITS_PER_BYTE)
        return (trits * _TRIT_WEIGHTS).sum(axis=1, dtype=np.uint16).astype(np.uint8)
    if b == 8:
        return unsigned
    nb = int(b)
    bitmat = np.unpackbits(unsigned[:, None], axis=1)[:, 8 - nb:]  # low nb bits, MSB first
    return np.packbits(bitmat.reshape(-1))


def unpack_codes(buf: np.ndarray, bits: float, count: int) -> np.ndarray:
    """Inverse of ``pack_codes``: the first ``count`` codes (int8; int16 at 16 bits)."""
    b = canonical_bits(bits)
    buf = np.ascontiguousarray(buf, dtype=np.uint8).reshape(-1)
    need = packed_nbytes(count, b)
    if buf.size < need:
        raise ValueError(f"buffer holds {buf.size} bytes but {count} codes at {b} bits need {need}")
    if b == 16:
        return buf[:need].view("<i2").astype(np.int16)
    lo, _ = _code_range(b)
    if b == TERNARY:
        trits = (buf[:need, None] // _TRIT_WEIGHTS) % 3
        unsigned = trits.reshape(-1)[:count]
    elif b == 8:
        unsigned = buf[:count]
    else:
        nb = int(b)
        bitmat = np.unpackbits(buf[:need])[: count * nb].reshape(count, nb)
        unsigned = np.packbits(np.pad(bitmat, ((0, 0), (8 - nb, 0))), axis=1)[:, 0]
    return (unsigned.astype(np.int16) + lo).astype(np.int8)
