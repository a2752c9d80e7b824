"""Bit-packing of weight codes: exact round trips and real sizes for every width."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cosearch.export.packing import pack_codes, packed_nbytes, unpack_codes
from cosearch.space import STORAGE_BITS

RANGES = {1: (-1, 0), 1.58: (-1, 1), 2: (-2, 1), 3: (-4, 3), 4: (-8, 7), 8: (-128, 127)}


def _codes(bits):
    lo, hi = RANGES[bits]
    return hnp.arrays(np.int8, st.integers(0, 200), elements=st.integers(lo, hi))


@pytest.mark.parametrize("bits", list(RANGES))
def test_round_trip(bits):
    @settings(max_examples=60, deadline=None)
    @given(_codes(bits))
    def check(codes):
        buf = pack_codes(codes, bits)
        assert buf.dtype == np.uint8
        assert buf.size == packed_nbytes(codes.size, bits)
        back = unpack_codes(buf, bits, codes.size)
        assert back.dtype == np.int8
        np.testing.assert_array_equal(back, codes)
    check()


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float16, st.integers(0, 200)))
def test_round_trip_fp16(values):
    buf = pack_codes(values, 16)
    assert buf.size == 2 * values.size == packed_nbytes(values.size, 16)
    back = unpack_codes(buf, 16, values.size)
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, values.view(np.int16))  # bit patterns, NaNs included
    np.testing.assert_array_equal(pack_codes(values.view(np.int16), 16), buf)


@pytest.mark.parametrize("bits", list(STORAGE_BITS))
def test_size_is_the_storage_bits(bits):
    n = 1000  # multiple of 5 and 8: no padding
    assert packed_nbytes(n, bits) * 8 == n * STORAGE_BITS[bits]
    assert packed_nbytes(7, 3) == 3 and packed_nbytes(6, 1.58) == 2 and packed_nbytes(0, 4) == 0


def test_known_layouts():
    # offset to unsigned, MSB first: 3-bit codes -4, 3, 0 -> 000 111 100 -> 0x1E 0x00
    np.testing.assert_array_equal(pack_codes(np.array([-4, 3, 0], np.int8), 3), [0b00011110, 0b00000000])
    # ternary trits t = code + 1, byte = sum t_i 3^i: codes [1, -1, 0, 1, 1] -> 2 + 0 + 9 + 54 + 162
    np.testing.assert_array_equal(pack_codes(np.array([1, -1, 0, 1, 1], np.int8), 1.58), [227])
    np.testing.assert_array_equal(pack_codes(np.array([-1, 0, 0, -1], np.int8), 1), [0b01100000])


def test_multidimensional_codes_flatten_in_c_order():
    codes = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    back = unpack_codes(pack_codes(codes, 4), 4, codes.size).reshape(4, 4)
    np.testing.assert_array_equal(back, codes)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[-2, 1\]"):
        pack_codes(np.array([2], np.int8), 2)
    with pytest.raises(ValueError):
        pack_codes(np.array([0.5]), 4)
    with pytest.raises(ValueError):
        unpack_codes(np.zeros(1, np.uint8), 4, 3)
    with pytest.raises(ValueError):
        pack_codes(np.array([0], np.int8), 5)


def test_torch_codes_round_trip_through_packing():
    torch = pytest.importorskip("torch")
    from cosearch.model.quant import WeightQuantizer, dequantize_codes, quantize_codes
    w = torch.randn(6, 37, generator=torch.Generator().manual_seed(0))
    for bits in (1, 1.58, 2, 3, 4, 8, 16):
        wq = WeightQuantizer(6, [bits])
        s = wq.scale(w, bits) if bits != 16 else None
        q = wq(w, bits).detach()
        codes = quantize_codes(q, bits, s).numpy()
        buf = pack_codes(codes, bits)
        back = torch.from_numpy(unpack_codes(buf, bits, codes.size).reshape(codes.shape))
        assert torch.equal(dequantize_codes(back, bits, s), q)
