"""The hypervolume benchmarks' comparison of two settings over seeds (benchmarks/search_hv.py)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from search_hv import difference_interval, goal, summarize  # noqa: E402


def _runs(setting, values):
    return [{"setting": setting, "seed": i, "300": {"hv_front": v, "hv_oracle": v, "hv_recorded": v,
                                                     "measurements": 300}} for i, v in enumerate(values)]


def test_difference_of_means_with_its_welch_interval():
    from scipy.stats import t
    runs = _runs("a", [1.0, 2.0, 3.0]) + _runs("b", [0.0, 0.0, 0.0])
    d = difference_interval(runs, "a", "b", checkpoints=(300,))["300"]
    assert d["difference"] == 2.0 and d["n"] == [3, 3]
    # by hand: b has no spread, so se = s_a / sqrt(3) = sqrt(1/3) and Welch's df = n_a - 1 = 2
    half = t.ppf(0.975, 2) * (1 / 3) ** 0.5
    assert d["ci95"] == pytest.approx([2 - half, 2 + half], abs=1e-5)
    assert difference_interval(runs, "b", "a", checkpoints=(300,))["300"]["difference"] == -2.0
    # no spread in either setting: the interval is the difference itself
    flat = _runs("a", [0.5, 0.5]) + _runs("b", [0.25, 0.25])
    assert difference_interval(flat, "a", "b", checkpoints=(300,))["300"]["ci95"] == [0.25, 0.25]
    assert difference_interval(_runs("a", [1.0]) + _runs("b", [0.0, 1.0]), "a", "b", checkpoints=(300,)) == {}


def test_goal_is_mean_plus_two_sample_std_of_the_baseline():
    runs = _runs("a", [0.9, 0.9]) + _runs("b", [0.5, 0.7])  # b: mean 0.6, sample std 0.141421
    g = goal(summarize(runs, ["a", "b"]), "a", "b")["300"]
    assert g["needed"] == pytest.approx(0.6 + 2 * 0.141421, abs=1e-5) and g["met"] is True


def test_a_setting_names_sampler_repeats_margin_and_population():
    from search_hv import parse_setting
    assert parse_setting("nsga2:r5:m2:p24") == {"sampler": "nsga2", "repeats": 5, "repeat_margin": 2.0,
                                                "population": 24}
    assert parse_setting("random") == {"sampler": "random", "repeats": 1, "repeat_margin": 1.0}
    with pytest.raises(SystemExit):
        parse_setting("nsga2:x3")
