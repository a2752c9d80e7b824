"""benchmarks/bits_front.py: archs at matched weight size per bit-width, paired bootstrap."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bits_front as bf  # noqa: E402

from cosearch.space import SearchSpace  # noqa: E402

SPACE = dict(name="t", family="decoder_only", vocab_size=256, max_positions=16,
             decoder=dict(embed_dim=[16, 32], layers=[1, 2, 3], ffn_dim=[32, 64], heads=[1, 2], head_dim=8),
             quantization=dict(weight_bits=[1.58, 2, 4, 8, 16], act_bits=[8, 16], embedding_bits=8))


def test_candidates_are_the_closest_in_size_of_each_bit_width():
    space = SearchSpace.from_dict(SPACE)
    t = 0.008
    cands = bf.select(space, [t], per_cell=2, tol=0.3, mixed=8)
    for b in (1.58, 2, 4, 8, 16):
        mine = [c for c in cands if c.label == f"W{b}"]
        # every homogeneous arch of these bits, by hand: 2 widths x 3 depths x 2 FFN x 2 heads
        sizes = sorted(abs(space.weight_size_bits(a) / 8e6 / t - 1) for a in bf.homogeneous_archs(space, b))
        assert len(bf.homogeneous_archs(space, b)) == 24
        within = [d for d in sizes if d <= 0.3]
        assert len(mine) == min(2, len(within))
        got = sorted(abs(bf.weight_mb(space, c.arch) / t - 1) for c in mine)
        assert got == within[:len(mine)]
        assert all({la.weight_bits for la in c.arch.decoder} == {b} for c in mine)
        assert all({la.act_bits for la in c.arch.decoder} == {16} for c in mine)
    mixed = [c for c in cands if c.label == "mixed"]
    assert len(mixed) == 8 and len({c.arch.digest() for c in mixed}) == 8
    for c in mixed:
        bits = {la.weight_bits for la in c.arch.decoder}
        assert len(bits) > 1 and 16 not in bits and abs(bf.weight_mb(space, c.arch) / t - 1) <= 0.3


def test_paired_bootstrap_and_winner_by_hand():
    rows = {"W2": (np.array([1.0, 2.0, 3.0, 4.0]), np.array([2, 2, 2, 2])),
            "W8": (np.array([1.5, 2.5, 3.5, 4.5]), np.array([2, 2, 2, 2]))}
    r = bf.paired_bootstrap(rows, n=500)
    assert r["best"] == "W2"
    assert r["archs"]["W2"]["bits_per_byte"] == pytest.approx(10 / (8 * math.log(2)))
    assert r["archs"]["W8"]["minus_best"] == pytest.approx(2 / (8 * math.log(2)))
    # W8 is worse on every sequence: it never wins a resample and its difference is > 0
    assert r["archs"]["W8"]["p_best"] == 0 and r["archs"]["W8"]["minus_best_ci95"][0] > 0
    recs = [dict(target_mb=1.0, label=k, bits_per_byte=v[0].sum() / (math.log(2) * 8), loss=0.0, weight_mb=1.0,
                 params=1, digest=k, row_nats=v[0].tolist(), row_bytes=v[1].tolist()) for k, v in rows.items()]
    s = bf.summarize(recs, n_boot=200)
    assert s["winners"] == ["W2"] and s["low_bit_wins"] == 1 and s["clear_winners"] == ["W2"]


def test_bootstrap_resamples_sequences_with_their_bytes():
    # every sequence of A at exactly 1 bit per byte (nats proportional to bytes): each resample
    # gives exactly 1; B wins on short sequences and loses on long ones: sometimes best
    nb = np.array([1, 5, 2, 8, 3, 1, 4, 6])
    a = nb * math.log(2)
    b = a + np.where(nb > 3, 0.5, -0.5)
    r = bf.paired_bootstrap({"A": (a, nb), "B": (b, nb)}, n=400)
    assert r["archs"]["A"]["ci95"] == pytest.approx([1.0, 1.0])
    assert 0 < r["archs"]["B"]["p_best"] < 1 and r["archs"]["A"]["p_best"] + r["archs"]["B"]["p_best"] == 1
    lo, hi = r["archs"]["B"]["ci95"]
    assert lo < r["archs"]["B"]["bits_per_byte"] < hi
