"""Noise-aware measurement: front candidates measured again on fresh data, recorded as the mean
with its standard error; the sampler and the front see the means."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cosearch.errors import UserError
from cosearch.search import search
from cosearch.search.quality import NoisySynthetic, SyntheticQuality, call_source
from cosearch.search.repeats import Repeats, RepeatSettings
from cosearch.space import Arch, SearchSpace

pytestmark = pytest.mark.xdist_group("search")


def test_candidates_are_points_an_optimistic_quality_puts_on_the_front():
    r = Repeats(RepeatSettings(repeats=3, margin=1.0), ["minimize", "minimize"], 0, "loss")
    assert r.candidates(np.array([[5.0, 5.0]]), np.array([True]), np.array([0.1])).tolist() == [True]  # empty front
    r.add([2.0, 2.0], True)
    r.add([9.0, 0.0], False)  # infeasible: not on the front
    vals = np.array([[2.5, 3.0],   # dominated, but 1 se (0.6) better it is not: 1.9 < 2
                     [2.5, 3.0],   # se 0.4: 2.1 still dominated
                     [3.0, 1.0],   # not dominated
                     [1.0, 1.0]])  # infeasible
    got = r.candidates(vals, np.array([True, True, True, False]), np.array([0.6, 0.4, np.nan, 0.0]))
    assert got.tolist() == [True, False, True, False]


def test_combine_averages_repeats_and_pools_their_spread():
    r = Repeats(RepeatSettings(repeats=3), ["minimize"], 0, "loss")
    first = {"loss": np.array([1.0, 2.0, 3.0])}  # no standard error from the source
    got = r.combine(first, {1: [{"loss": 4.0}, {"loss": 3.0}]}, 3)
    assert got["loss"].tolist() == [1.0, 3.0, 3.0] and got["loss_n"].tolist() == [1, 3, 1]
    sd = math.sqrt(((2 - 3) ** 2 + (4 - 3) ** 2 + 0) / 2)  # pooled over the one repeated arch: 1.0
    assert r.sigma == pytest.approx(sd)
    assert got["loss_se"].tolist() == pytest.approx([sd, sd / math.sqrt(3), sd])
    # the source's own standard error wins where it gives one
    got = r.combine({"loss": np.array([1.0, 2.0]), "loss_se": np.array([0.5, np.nan])}, {0: [{"loss": 3.0}]}, 2,
                    learn=False)
    assert got["loss_se"].tolist() == pytest.approx([0.5 / math.sqrt(2), r.sigma])


def test_a_noisy_search_records_means_of_fresh_measurements(tmp_path):
    sp = SearchSpace.load("tiny_lm")
    q = NoisySynthetic(sp, sigma=0.3)
    res = search(hw="zcu102", space=sp, quality=q, out=tmp_path / "s", trials=40, sampler="nsga2", population=8,
                 batch=8, repeats=4, progress=False, plots=False)
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert len(df) == 40 and df["loss_n"].between(1, 4).all() and (df["loss_n"] > 1).any()
    for _, row in df.iterrows():
        a = Arch.from_json(row["arch"])
        n = int(row["loss_n"])
        draws = [q.true_loss([a])[0] + 0.3 * q.noise(a, r) for r in range(n)]  # measurements 0 .. n-1
        assert row["quality"] == pytest.approx(np.mean(draws))
        assert row["loss_se"] == pytest.approx(0.3 / math.sqrt(n))
    assert res.timing["measured_again"] == int((df["loss_n"] - 1).sum())
    # the front is made of means: every design on it was a candidate once, so measured again
    front = pd.read_csv(tmp_path / "s" / "pareto.csv")
    assert len(front) >= 2 and (front["loss_n"] >= 2).all()


def test_repeats_beyond_the_data_are_one_line(tmp_path):
    sp = SearchSpace.load("tiny_lm")
    with pytest.raises(UserError, match="--repeats 9: the quality source has data for 8"):
        search(hw="zcu102", space=sp, quality=NoisySynthetic(sp, 0.3), out=tmp_path / "s", trials=4, repeats=9,
               progress=False, plots=False)


@pytest.mark.parametrize("margin", [-1.0, float("nan"), float("inf")])
def test_a_bad_repeat_margin_is_one_line(tmp_path, margin):
    sp = SearchSpace.load("tiny_lm")
    with pytest.raises(UserError, match="--repeat-margin .*: give a finite number >= 0"):
        search(hw="zcu102", space=sp, quality=NoisySynthetic(sp, 0.3), out=tmp_path / "s", trials=4,
               repeat_margin=margin, progress=False, plots=False)
    assert not (tmp_path / "s").exists()


def test_a_repeat_beyond_the_sources_data_is_a_value_error():
    sp = SearchSpace.load("tiny_lm")
    arch = sp.largest()
    with pytest.raises(ValueError, match="has no measurement 8 \\(repeats=8\\)"):
        call_source(NoisySynthetic(sp, 0.3), [arch], 8)
    # a source without ``repeats`` measures once: the same error, not an AttributeError
    with pytest.raises(ValueError, match="has no measurement 1 \\(repeats=1\\)"):
        call_source(SyntheticQuality(sp), [arch], 1)
