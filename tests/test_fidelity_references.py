"""benchmarks/fidelity_references.py: the same supernets against a short and a longer
standalone reference of the same archs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fidelity_references as refs  # noqa: E402

PROXY = {"params": 0, "weight_mb": 0, "macs": 0, "decoder_params": 0}


def _result(standalone, inherited_by_key, depths=(1, 2, 3, 4)):
    """A fidelity.py result: archs a0..a3 (``layers`` of the given depths, all 1 MB, so every
    pair shares a bin), one report per supernet key."""
    def rows(inh):
        return [{"arch": {"layers": [{}] * d, "dim": 8}, **PROXY, "weight_mb": 1.0, "params": 10 - k,
                 "inherited": {"valid_loss": i}, "standalone": {"valid_loss": s, "steps": 10}}
                for k, (d, i, s) in enumerate(zip(depths, inh, standalone))]
    return {"reports": {key: {"summary": {"valid_loss": {"reference_ceiling": {"kendall_tau": 0.9}}},
                              "per_arch": rows(inh)} for key, inh in inherited_by_key.items()}}


def test_a_predictor_is_scored_against_both_references_with_a_paired_difference():
    pred = [1.0, 2.0, 3.0, 4.0]
    short, long = [1.0, 2.0, 4.0, 3.0], [1.0, 2.0, 3.0, 4.0]  # short swaps one of six pairs
    got = refs.against_both([pred], short, long, size=[1.0] * 4)
    assert got["kendall_short"] == pytest.approx([4 / 6]) and got["kendall_long"] == pytest.approx([1.0])
    assert got["kendall_diff"] == pytest.approx(1 - 4 / 6)
    assert got["within_bin_pairs"] == 6 and got["within_bin_diff"] == pytest.approx(1 - 4 / 6)
    # the predictor ranks the long reference perfectly; the short reference itself gets 4/6 of it
    assert got["beats_short"]["kendall_diff"] == pytest.approx(1 - 4 / 6)
    assert got["beats_short"]["within_bin_diff"] == pytest.approx(1 - 4 / 6)
    # the interval: ten archs, the short reference swaps one of 45 pairs
    ten = refs.against_both([list(range(10))], [0, 1, 2, 3, 4, 5, 6, 7, 9, 8], list(range(10)), size=[1.0] * 10)
    lo, hi = ten["kendall_diff_ci"]
    assert ten["kendall_diff"] == pytest.approx(2 / 45) and lo <= 2 / 45 <= hi and hi > 0
    # two columns: the difference is the mean over them (the second ranks backwards against both)
    two = refs.against_both([pred, pred[::-1]], short, long, size=[1.0] * 4)
    assert two["kendall_long"] == pytest.approx([1.0, -1.0]) and two["kendall_diff"] == pytest.approx(0.0)
    assert two["beats_short"]["kendall_diff"] == pytest.approx(0.0 - 4 / 6)  # mean of +1 and -1, minus 4/6
    # a predictor that is the short reference beats it by exactly nothing
    short10 = [0, 1, 2, 3, 4, 5, 6, 7, 9, 8]
    itself = refs.against_both([short10], short10, list(range(10)), size=[1.0] * 10)
    assert itself["beats_short"]["kendall_diff"] == 0.0 and itself["beats_short"]["kendall_diff_ci"] == [0.0, 0.0]


def test_a_ranker_against_one_reference_twice_differs_by_exactly_zero():
    pred, ref = list(range(10)), [0, 2, 1, 3, 5, 4, 6, 7, 9, 8]
    same = refs.against_both([pred], ref, ref, size=[1.0] * 10)
    assert same["kendall_diff"] == 0.0 and same["kendall_diff_ci"] == [0.0, 0.0]  # paired, never two draws


def test_axes_say_where_the_supernet_still_disagrees_with_the_long_reference():
    archs = [{"layers": [{"width": w}] * d} for d, w in zip([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])]
    short, long = [5.0, 4, 3, 2, 1], [1.0, 2, 3, 4, 5]  # deeper: better when short, worse when long
    cols = {"none": {"none": [5.0, 4, 3, 2, 1], "none_seed1": [5.0, 4, 3, 2, 1]}}  # the supernet: deeper, better
    axes = refs.axis_agreement(archs, short, long, cols, n_boot=50)
    depth = axes["layers.depth"]
    assert (depth["short"], depth["long"]) == (pytest.approx(-1.0), pytest.approx(1.0))
    assert depth["long_minus_short"] == pytest.approx(2.0)
    assert depth["inherited"]["none"]["tau"] == pytest.approx(-1.0)
    assert depth["inherited"]["none"]["minus_long"] == pytest.approx(-2.0)  # the supernet minus the long reference
    assert axes["layers.width"]["long"] == pytest.approx(-1.0)  # width falls as depth rises


def test_seeds_of_both_checks_are_pooled_and_a_shared_seed_must_agree():
    short = {"none": {"none": [1.0, 2.0], "none_seed1": [2.0, 1.0]}}
    long = {"none": {"none": [1.0, 2.0 + 1e-12]}, "fast": {"fast": [3.0, 4.0]}}
    cols, checked = refs.merge_seeds(short, long)
    assert list(cols) == ["none", "fast"] and list(cols["none"]) == ["none", "none_seed1"]
    assert checked == {"none": pytest.approx(1e-12)}
    with pytest.raises(SystemExit, match="none: its inherited losses differ"):
        refs.merge_seeds(short, {"none": {"none": [1.0, 2.5]}})


def test_the_command_writes_every_comparison(tmp_path, capsys):
    short = _result([4.0, 3.0, 2.0, 1.0], {"none": [1, 2, 3, 4], "none_seed1": [1, 2, 3, 4]})
    long = _result([1.0, 2.0, 3.0, 4.0], {"none": [1, 2, 3, 4]})
    (tmp_path / "s.json").write_text(json.dumps(short))
    (tmp_path / "l.json").write_text(json.dumps(long))
    out = tmp_path / "out.json"
    assert refs.main([str(tmp_path / "s.json"), str(tmp_path / "l.json"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["references"]["long_vs_short"]["kendall_tau"] == pytest.approx(-1.0)
    v = res["variants"]["none"]
    assert v["seeds"] == ["none", "none_seed1"] and v["same_seed_max_difference"] == 0.0
    assert v["kendall_short"] == pytest.approx([-1.0, -1.0]) and v["kendall_diff"] == pytest.approx(2.0)
    # params fall with the index: bigger predicts better, so it ranks like the long reference
    assert res["proxies"]["params"]["kendall_short"] == pytest.approx([-1.0])
    assert res["proxies"]["params"]["kendall_long"] == pytest.approx([1.0])
    # depth rises with the index: +1 with the long reference's loss, -1 with the short one's;
    # "dim" is the same for every arch, so it is no axis
    axes = res["axes"]
    assert list(axes) == ["layers.depth"]
    assert (axes["layers.depth"]["short"], axes["layers.depth"]["long"]) == (pytest.approx(-1.0), pytest.approx(1.0))
    assert axes["layers.depth"]["long_minus_short"] == pytest.approx(2.0)
    assert axes["layers.depth"]["inherited"]["none"]["tau"] == pytest.approx(1.0)
    assert axes["layers.depth"]["inherited"]["none"]["minus_long"] == pytest.approx(0.0)
    assert res["references"]["ceiling"] == [{"kendall_tau": 0.9}] * 2
    assert "long vs short reference: tau -1.000" in capsys.readouterr().out


def test_checks_of_other_archs_or_without_reports_are_refused(tmp_path):
    a = _result([1.0, 2.0, 3.0, 4.0], {"none": [1, 2, 3, 4]})
    b = _result([1.0, 2.0, 3.0, 4.0], {"none": [1, 2, 3, 4]}, depths=(2, 2, 3, 4))
    with pytest.raises(SystemExit, match="other archs"):
        refs.compare_references(a, b)
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "empty.json").write_text(json.dumps({"reports": {}}))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match="bad.json: not a readable result JSON"):
        refs.main([str(tmp_path / "bad.json"), str(tmp_path / "a.json"), "--out", str(tmp_path / "o.json")])
    lm = json.loads(json.dumps(a).replace("valid_loss", "test_loss"))
    with pytest.raises(SystemExit, match="share no metric"):
        refs.compare_references(json.loads(json.dumps(a).replace("valid_loss", "bleu")), lm)
    with pytest.raises(SystemExit, match="no per-variant reports"):
        refs.main([str(tmp_path / "a.json"), str(tmp_path / "empty.json"), "--out", str(tmp_path / "o.json")])
    assert not (tmp_path / "o.json").exists()


def test_a_longer_reference_with_archs_not_yet_scored_is_read_on_the_others(tmp_path):
    """A reference read while its parts are trained (fidelity.py --reference-parts): an arch
    without a standalone score drops out of every comparison, and ``n`` counts the rest."""
    short = _result([1.0, 2.0, 3.0, 4.0], {"none": [1, 2, 3, 4]})
    long = _result([1.0, 3.0, 2.0, 4.0], {"none": [1, 2, 3, 4]})
    long["reports"]["none"]["per_arch"][3]["standalone"] = None  # a4 is in a part not trained yet
    (tmp_path / "s.json").write_text(json.dumps(short))
    (tmp_path / "l.json").write_text(json.dumps(long))
    out = tmp_path / "out.json"
    assert refs.main([str(tmp_path / "s.json"), str(tmp_path / "l.json"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 3 and res["references"]["long_vs_short"]["n"] == 3
    assert res["references"]["long_vs_short"]["kendall_tau"] == pytest.approx(1 / 3)  # one of 3 pairs swapped
    v = res["variants"]["none"]
    assert v["n"] == 3 and v["kendall_short"] == pytest.approx([1.0]) and v["kendall_long"] == pytest.approx([1 / 3])
