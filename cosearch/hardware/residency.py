"""Which layers keep their weights on chip across decode steps.

In decode every step runs the decoder's GEMMs again. A layer whose weights fit the weight
buffer (``memory.weight_kb``: SRAM on an ASIC, URAM or BRAM on an FPGA; a co-searched
knob) is loaded once per inference and read on chip afterwards; the others stream from
DRAM every step. Units are the decoder layers in order, then the output projection; each
is resident whole or not at all, first fit: a unit stays if it fits what is left. When
everything fits the whole buffer holds it; otherwise a double-buffered tile of the array
(R x C PEs, 2 bytes a weight) stays free for the weights that stream.

Both cost paths call :func:`resident_units` on the same unit sizes, so they agree exactly.
"""
from __future__ import annotations

import numpy as np

#: Bytes of the streaming reserve per PE: a double-buffered tile of 16-bit weights.
RESERVE_BYTES_PER_PE = 4


def reserve_bytes(rows: int, cols: int) -> float:
    """Weight-buffer bytes kept free for streamed tiles when not every unit is resident."""
    return float(RESERVE_BYTES_PER_PE * rows * cols)


def resident_units(unit_bytes: np.ndarray, wbuf: float, reserve: float) -> np.ndarray:
    """(n, U) weight bytes of each unit -> (n, U) bool: kept on chip. Units of 0 bytes
    (nothing to keep, or absent layers) count as resident."""
    b = np.asarray(unit_bytes, dtype=np.float64)
    if b.ndim == 1:
        b = b[None, :]
    everything = b.sum(axis=1) <= wbuf
    if everything.all():
        return np.ones(b.shape, dtype=bool)
    left = np.where(everything, wbuf, wbuf - reserve)
    mask = np.empty(b.shape, dtype=bool)
    for u in range(b.shape[1]):
        fits = b[:, u] <= left
        mask[:, u] = fits
        left = left - np.where(fits, b[:, u], 0.0)
    return mask
