"""``cosearch fidelity``: arch picks, statistics, the report, and the command end to end
on tiny_lm (CPU), including a kill and a rerun that resumes."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from cosearch.cli import main
from cosearch.fidelity.pick import BIN_RATIO, pick_archs, subset, uniform_bits, unpicked_choices
from cosearch.fidelity.plan import PLAN, Plan
from cosearch.fidelity.proxies import decoder_params, proxy_values
from cosearch.fidelity import report as report_mod
from cosearch.strict_json import dumps as strict_dumps, finite_json
from cosearch.fidelity.report import build_report
from cosearch.fidelity.stats import (gaps, paired_tau_difference, rank_agreement, reference_ceiling, tau_difference,
                                     within_bin_tau)
from cosearch.space import Arch, LayerArch, SearchSpace

from train_fixtures import mt_space, one_thread, write_lm_text, write_word_translation  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- picks
@pytest.mark.parametrize("name, n, per_bin", [("tiny_lm", 12, 4), ("multi30k", 18, 6)])
def test_picks_come_in_size_bins_with_mixed_and_uniform_bits(name, n, per_bin):
    space = SearchSpace.load(name)
    p = pick_archs(space, n, per_bin, seed=3)
    assert p.archs == pick_archs(space, n, per_bin, seed=3).archs  # a function of the seed
    assert p.archs != pick_archs(space, n, per_bin, seed=4).archs
    assert len(p.archs) == n == len(set(p.archs)) and p.bins == [i // per_bin for i in range(n)]
    mb = [space.weight_size_bits(a) / 8e6 for a in p.archs]
    assert p.axis == pytest.approx(mb)
    for b in range(n // per_bin):
        sizes = [m for m, k in zip(mb, p.bins) if k == b]
        assert max(sizes) <= BIN_RATIO ** 2 * min(sizes)  # any two of a bin: within +-15%
    assert all(p.in_band)
    assert {"mixed", "uniform"} <= set(p.kinds)
    assert [uniform_bits(a) for a in p.archs] == [k == "uniform" for k in p.kinds]
    mixed = [a for a, k in zip(p.archs, p.kinds) if k == "mixed"]
    assert any(len({la.weight_bits for la in a.encoder + a.decoder}) > 1 for a in mixed)
    centres = [math.log(c) for c in p.centres]  # evenly spaced in log size
    assert all(abs((centres[i + 1] - centres[i]) - (centres[1] - centres[0])) < 1e-9 for i in range(len(centres) - 1))


def test_latency_bins_hold_archs_of_similar_latency():
    from cosearch.fidelity.plan import FidelitySettings, latency_axis
    from cosearch.hardware import cost_batch
    space = SearchSpace.load("tiny_lm")
    p = pick_archs(space, 8, 4, seed=0, axis_of=latency_axis(space, FidelitySettings(stratify="latency")))
    lat = list(cost_batch(space, p.archs, "zcu102", scenario="prefill", seq_len=30)["latency_ms"])
    assert p.axis == pytest.approx(lat)
    for b in (0, 1):
        vals = [v for v, k in zip(lat, p.bins) if k == b]
        assert max(vals) <= BIN_RATIO ** 2 * min(vals)
    assert max(lat[4:]) > min(lat[4:]) and min(lat[4:]) > max(lat[:4])


def test_step_scales_that_round_to_the_same_steps_are_one_grid_point():
    from types import SimpleNamespace

    from cosearch.fidelity.plan import FidelitySettings, grid_points
    run = SimpleNamespace(train={"steps": 10}, space=SimpleNamespace(spec=SimpleNamespace(dropout=0.1)))
    # 10 x 0.01 and 10 x 0.05 both round up to 1 step; 10 x 1.01 to 11
    s = FidelitySettings(step_scales=(0.01, 0.05, 1.01), dropouts=(0.0,))
    assert grid_points(run, s) == [(0.1, 10), (0.1, 1), (0.1, 11), (0.0, 10), (0.0, 1), (0.0, 11)]


def test_unpicked_choices_are_those_no_arch_takes_in_any_layer():
    space = SearchSpace.from_dict(dict(
        name="t", family="encoder_decoder", vocab_size=64, max_positions=32,
        encoder=dict(embed_dim=[16, 32], layers=[2, 3], ffn_dim=[32, 64], heads=[2], head_dim=8),
        decoder=dict(embed_dim=[16, 32], layers=[1, 3], ffn_dim=[32, 64], heads=[2, 4], head_dim=8,
                     cross_layers=[1, 2]),
        quantization=dict(weight_bits=[1.58, 4, 16], act_bits=[4, 8])))
    la = LayerArch
    archs = [Arch(decoder_embed_dim=16, encoder_embed_dim=32,
                  encoder=(la(32, 2, 1.58, 4), la(32, 2, 4, 4)),
                  decoder=(la(64, 2, 4, 8, 1), la(64, 2, 4, 8, 1), la(64, 2, 16, 8, 2))),
             Arch(decoder_embed_dim=16, encoder_embed_dim=32, encoder=(la(32, 2, 16, 8), la(32, 2, 16, 8)),
                  decoder=(la(64, 2, 1.58, 4, 1), la(64, 2, 1.58, 4, 1), la(64, 2, 1.58, 4, 1)))]
    assert unpicked_choices(space, archs) == [
        "encoder.embed_dim=16", "encoder.layers=3", "encoder.ffn_dim=64",
        "decoder.embed_dim=32", "decoder.layers=1", "decoder.ffn_dim=32", "decoder.heads=4"]
    one_cross = [Arch(decoder_embed_dim=a.decoder_embed_dim, encoder_embed_dim=a.encoder_embed_dim, encoder=a.encoder,
                      decoder=tuple(LayerArch(la.ffn_dim, la.heads, la.weight_bits, la.act_bits, 1) for la in a.decoder))
                 for a in archs]
    assert unpicked_choices(space, one_cross) == unpicked_choices(space, archs) + ["decoder.cross_layers=2"]
    assert unpicked_choices(space, archs[:1]) == [
        "encoder.embed_dim=16", "encoder.layers=3", "encoder.ffn_dim=64", "encoder.weight_bits=16",
        "encoder.act_bits=8", "decoder.embed_dim=32", "decoder.layers=1", "decoder.ffn_dim=32", "decoder.heads=4",
        "decoder.weight_bits=1.58", "decoder.act_bits=4"]


def test_jobs_of_a_data_parallel_run_take_every_workers_tokens_in_one_batch():
    from cosearch.fidelity.plan import recipe_flags
    train = dict(steps=100, max_tokens=1024, warmup=5)

    def max_tokens(flags):
        return flags[flags.index("--max-tokens") + 1]
    assert max_tokens(recipe_flags(train, 10)) == max_tokens(recipe_flags(train, 10, 1)) == "1024"
    assert max_tokens(recipe_flags(train, 10, 4)) == "4096"  # --workers 4: 4 x 1024 tokens a step
    assert recipe_flags(train, 10, 4)[:2] == ["--steps", "10"]


def test_subset_spreads_over_the_picks():
    assert subset(24, 4) == [0, 8, 15, 23] and subset(5, 1) == [2] and subset(5, 0) == [] and subset(3, 9) == [0, 1, 2]


def test_proxies_by_hand():
    space = SearchSpace.load("tiny_lm")
    a = space.smallest()  # 1 layer, width 64, ffn 128, 2 heads of 32 (attention 64), 1.58 bits
    d = 64
    linears = 4 * (d * d + d) + (d * 128 + 128) + (128 * d + d)
    assert decoder_params(space, a) == linears
    v = proxy_values(space, [a, space.largest()], seq_len=30)
    assert v["params"][0] == linears + 1024 * d + 2 * d * 3  # + token table + 3 norms
    assert v["macs"][0] < v["macs"][1] and v["weight_mb"][0] < v["weight_mb"][1]


# --------------------------------------------------------------------------- statistics
def test_within_bin_tau_counts_only_pairs_of_similar_size():
    pred, ref = [1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 3.0, 4.0]
    size = [1.0, 1.1, 5.0, 5.5]  # pairs (0,1) and (2,3) are in a bin
    assert within_bin_tau(pred, ref, size) == (0.0, 2)  # one discordant, one concordant
    assert within_bin_tau(pred, ref, [1.0, 1.2, 5.0, 5.5]) == (1.0, 1)
    # the tie (0, 1) is left out; of the other 5 pairs 2 agree and 3 disagree
    assert within_bin_tau([1, 1, 2, 3], [2, 1, 3, 0.5], [1, 1, 1, 1]) == (pytest.approx(-1 / 5), 5)


def test_rank_agreement_values_and_intervals():
    ref = [float(i) for i in range(10)]
    pred = ref[:]
    pred[0], pred[1] = pred[1], pred[0]  # one discordant pair of 45
    r = rank_agreement(pred, ref, size=[1.0] * 10, seed=0, n_boot=200)
    assert r["n"] == 10 and r["kendall_tau"] == pytest.approx(43 / 45)
    assert r["spearman"] == pytest.approx(1 - 6 * 2 / (10 * 99))
    lo, hi = r["kendall_ci"]
    assert lo < 43 / 45 <= hi <= 1.0 and r["within_bin_pairs"] == 45
    assert rank_agreement(pred, ref, seed=0, n_boot=200)["kendall_ci"] == r["kendall_ci"]  # seeded
    holes = rank_agreement([None, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0], n_boot=50)
    assert holes["n"] == 3 and holes["kendall_tau"] == pytest.approx(1.0)
    assert gaps([2.0, 3.0, None], [1.5, 3.5, 1.0]) == {"n": 2, "mean": 0.0, "mean_abs": 0.5, "max_abs": 0.5}


def test_a_proxy_equal_for_every_arch_ranks_nothing_and_the_report_stays_strict_json():
    r = rank_agreement([5.0] * 4, [1.0, 2.0, 3.0, 4.0], n_boot=50)
    assert r["kendall_tau"] is None and r["spearman"] is None  # not nan: JSON has none
    assert finite_json({"a": [float("nan"), 1.0, (float("inf"), 2)], "b": {"c": float("-inf")}, "d": "x"}) \
        == {"a": [None, 1.0, [None, 2]], "b": {"c": None}, "d": "x"}
    assert strict_dumps({"a": [float("nan"), 1.5]}) == '{"a": [null, 1.5]}'
    rows = [{"arch": None, "inherited": {"valid_loss": i}, "standalone": {"valid_loss": s}, "untuned": None,
             "sweep": [], "axis": 1.0, "weight_mb": 1.0, "params": 7, "macs": 9, "decoder_params": d}
            for i, s, d in zip([1.0, 2.0, 4.0, 3.0], [1.0, 2.0, 3.0, 4.0], [4, 3, 2, 1])]
    summary = report_mod.summarise(rows, "valid_loss")
    # params, weight MB and MACs are the same for every arch: only decoder params can be the best
    assert summary["proxies"]["params"]["kendall_tau"] is None and summary["best_proxy"] == "decoder_params"
    for r in rows:
        r["decoder_params"] = 5
    assert report_mod.summarise(rows, "valid_loss")["best_proxy"] is None


def test_tau_difference_of_two_variants_by_hand():
    ref = [0.0, 1, 2, 3, 4, 5, 6, 7, 8]
    size = [1.0, 1, 3, 3, 9, 9, 27, 27, 81]  # bins of two: pairs (0,1) (2,3) (4,5) (6,7)
    a = [[0, 1, 2, 3, 4, 5, 6, 7, 8], [1, 0, 2, 3, 4, 5, 6, 7, 8]]  # tau 28/28, 26/28
    b = [[1, 0, 3, 2, 5, 4, 7, 6, 8], [0, 1, 3, 2, 4, 5, 6, 7, None]]  # 20/28, 26/28; arch 8 has a hole
    d = tau_difference(a, b, ref, size, seed=0, n_boot=200)
    assert d["n"] == 8 and (d["seeds_a"], d["seeds_b"]) == (2, 2)
    assert d["kendall_a"] == pytest.approx([1.0, 26 / 28]) and d["kendall_b"] == pytest.approx([20 / 28, 26 / 28])
    assert d["kendall_diff"] == pytest.approx((28 + 26 - 20 - 26) / 56)  # A is better
    lo, hi = d["kendall_diff_ci"]
    assert lo <= 4 / 28 <= hi
    assert d["every_seed_of_a_above_b"] is False  # A's worse seed ties B's better one
    # within bins (4 pairs): A 1 and (3 - 1) / 4 = 0.5 (pair (0,1) swapped); B -1 and 0.5
    assert d["within_bin_a"] == [1.0, 0.5] and d["within_bin_b"] == [-1.0, 0.5] and d["within_bin_pairs"] == 4
    assert d["within_bin_diff"] == pytest.approx(1.0)
    reverse = tau_difference(b, a, ref, size, seed=0, n_boot=200)
    assert reverse["kendall_diff"] == pytest.approx(-4 / 28)
    # paired: a variant against itself differs by exactly 0 in every resample
    same = tau_difference(a, a, ref, seed=0, n_boot=200)
    assert same["kendall_diff"] == 0.0 and same["kendall_diff_ci"] == [0.0, 0.0]
    assert tau_difference([[1.0, 2.0]], [[2.0, 1.0]], [1.0, 2.0])["kendall_diff"] is None  # too few archs
    # a constant prediction has no tau: None (JSON has no nan), never a win
    flat = tau_difference([[1.0] * 9], a, ref, size, seed=0, n_boot=50)
    assert flat["kendall_a"] == [None] and flat["kendall_diff"] is None and flat["every_seed_of_a_above_b"] is False
    assert flat["within_bin_a"] == [None] and flat["within_bin_diff"] is None


def test_one_ranker_against_two_references_by_hand():
    size = [1.0, 1, 3, 3, 9, 9, 27, 27, 81]  # bins of two: pairs (0,1) (2,3) (4,5) (6,7)
    long = [0.0, 1, 2, 3, 4, 5, 6, 7, 8]
    pred = [0.0, 1, 2, 3, 4, 5, 7, 6, 8]  # swaps (6,7) of long: tau 26/28, within-bin 2/4
    short = [1.0, 0, 3, 2, 4, 5, 6, 7, None]  # swaps (0,1) (2,3) of long, so also (6,7) of pred; a hole
    d = paired_tau_difference([(pred, long)], [(short, pred)], size, seed=0, n_boot=200)  # a pair's order is free
    assert d["n"] == 8  # arch 8 left out everywhere: 28 pairs
    assert d["kendall_a"] == pytest.approx([26 / 28]) and d["kendall_b"] == pytest.approx([22 / 28])
    assert d["kendall_diff"] == pytest.approx(4 / 28)
    assert d["within_bin_a"] == pytest.approx([0.5]) and d["within_bin_b"] == pytest.approx([-0.5])
    assert d["within_bin_pairs"] == 4 and d["within_bin_diff"] == pytest.approx(1.0)
    lo, hi = d["kendall_diff_ci"]
    assert lo <= d["kendall_diff"] <= hi
    # the same pair on both sides: 0 in every resample (the draw of archs is shared)
    assert paired_tau_difference([(pred, short)], [(pred, short)], seed=0, n_boot=200)["kendall_diff_ci"] == [0.0, 0.0]
    # within-bin pairs: the fewest any reference has (a tie in a bin is no pair)
    tied = [0.0, 0, 2, 3, 4, 5, 6, 7, 8]
    assert paired_tau_difference([(pred, tied)], [(pred, long)], size, n_boot=20)["within_bin_pairs"] == 3


def test_reference_ceiling_follows_the_normal_law():
    import numpy as np
    from scipy.stats import chi2
    # 400 archs whose reference has variance exactly 1; 8 noise pairs whose differences, less a
    # shift of 0.3 that the second seed gives every arch, are +-e with 8 e^2 / (2 * 7) = 0.36
    ref = np.random.default_rng(1).standard_normal(400)
    ref = ((ref - ref.mean()) / ref.std(ddof=1)).tolist()
    e = math.sqrt(0.36 * 2 * 7 / 8)
    first, second = [3.0] * 8, [3.3 + e, 3.3 - e] * 4
    c = reference_ceiling(ref, first, second, seed=0, n_sim=100)
    assert c["noise_pairs"] == 8 and c["n"] == 400 and c["noise_sd"] == pytest.approx(0.6)
    assert c["seed_shift"] == pytest.approx(0.3)
    # sum((d - 0.3)^2) / 2 = 2.52 is sigma^2 times a chi-square with 7 degrees of freedom
    assert c["noise_sd_ci"] == pytest.approx([math.sqrt(2.52 / chi2.ppf(0.975, 7)), math.sqrt(2.52 / chi2.ppf(0.025, 7))])
    # the true values keep variance 1 - 0.36, so they correlate 0.8 with a noisy redraw, and for
    # normal pairs Kendall's tau = 2 / pi * asin(correlation) (Greiner)
    assert c["kendall_tau"] == pytest.approx(2 / math.pi * math.asin(0.8), abs=0.02)
    lo_tau, hi_tau = c["kendall_range"]  # more noise, a lower ceiling
    assert lo_tau < c["kendall_tau"] < hi_tau
    assert c["within_bin_tau"] is None  # no sizes given
    assert reference_ceiling(ref, first, second, seed=0, n_sim=100) == c  # seeded


def test_reference_ceiling_without_noise_is_one_and_with_only_noise_zero():
    ref, size = [1.0, 2.0, 3.0, 4.0], [1.0, 1.1, 5.0, 5.5]
    c = reference_ceiling(ref, [2.0, 3.0], [2.5, 3.5], size, n_sim=10)  # seed 2 shifts both archs alike
    assert c["noise_sd"] == 0.0 and c["kendall_tau"] == 1.0 and c["within_bin_tau"] == 1.0
    # seed noise larger than the spread between archs: nothing left to rank
    c = reference_ceiling(ref, [2.0, 3.0], [7.0, -2.0], size, n_sim=10)
    assert c["noise_sd"] == pytest.approx(math.sqrt((25 + 25) / 2)) and c["kendall_tau"] == 0.0
    assert c["within_bin_tau"] == 0.0
    assert reference_ceiling(ref, [2.0], [2.5], size)["kendall_tau"] is None  # one pair is no estimate
    # 3 archs of sample variance 1 (unbiased, as sigma^2 is) and noise variance 0.8: a little
    # ranking is left (the biased variance, 2/3, would call it all noise)
    a = math.sqrt(0.8)
    c = reference_ceiling([0.0, 1.0, 2.0], [0.0, 0.0], [a, -a], n_sim=50)
    assert c["noise_sd"] == pytest.approx(math.sqrt(0.8)) and c["kendall_tau"] > 0.05


def test_reference_ceiling_leaves_out_archs_without_a_value_and_their_sizes():
    ref = [1.0, 2.0, None, 3.0, 4.0, 5.0, float("nan")]
    size = [1.0, 1.1, 1.05, 5.0, 5.5, 5.2, 9.0]
    first, second = [2.0, 3.0, 1.0], [2.6, 2.4, 1.0]
    got = reference_ceiling(ref, first, second, size, seed=3, n_sim=50)
    want = reference_ceiling([1.0, 2.0, 3.0, 4.0, 5.0], first, second, [1.0, 1.1, 5.0, 5.5, 5.2], seed=3, n_sim=50)
    assert got == want and got["n"] == 5 and got["within_bin_tau"] < 1.0


def test_reference_budgets_rank_the_longer_sweep_point_against_the_runs_own(monkeypatch):
    archs = [{"decoder_embed_dim": 64, "decoder": []}] * 4
    short, long = [3.0, 3.2, 3.4, 3.6], [2.5, 2.4, 2.9, 3.1]  # 3x the steps: archs 0 and 1 swap
    jobs, measured = [], {}
    for i in range(4):
        for k, (d, steps, loss) in enumerate(((0.0, 10, short[i]), (0.0, 30, long[i]), (0.1, 10, 9.0), (0.0, 5, 7.0))):
            jobs.append(dict(arch=i, dropout=d, steps=steps, seed=0, teacher=False, role="grid", name=f"j{i}{k}"))
            measured[f"j{i}{k}"] = {"valid_loss": loss}
    plan = Plan(run="r", settings={"seed": 0, "stratify": "size", "seq_len": 30}, archs=archs,
                labels=list("abcd"), bins=[0, 0, 1, 1], kinds=["mixed"] * 4, axis=[1.0, 1.1, 2.0, 2.1],
                in_band=[True] * 4, centres=[1.0, 2.0], space={}, jobs=jobs, noise=[])
    proxies = {p: [1.0, 1.1, 2.0, 2.1] for p in ("params", "weight_mb", "macs", "decoder_params")}
    monkeypatch.setattr(report_mod, "proxy_values", lambda space, archs, seq_len: proxies)
    monkeypatch.setattr(report_mod.SearchSpace, "from_dict", lambda d: None)
    inherited = [{"valid_loss": v} for v in (3.5, 3.4, 3.9, 4.0)]  # ranks like the 30-step runs
    budgets = build_report(plan, inherited, measured)["summary"]["valid_loss"]["reference_budgets"]
    assert list(budgets) == ["30"]  # neither the dropout 0.1 point nor the shorter 5-step one is a longer budget
    b = budgets["30"]
    assert b["reference"]["kendall_tau"] == pytest.approx(4 / 6)  # one of six pairs swapped
    assert b["gap"]["mean"] == pytest.approx((-0.5 - 0.8 - 0.5 - 0.5) / 4)
    assert b["inherited"]["kendall_tau"] == pytest.approx(1.0)
    assert b["reference"]["within_bin_pairs"] == 2 and b["reference"]["within_bin_tau"] == 0.0
    # the supernet ranks the 30-step runs better than the 10-step runs do: 1 - 4/6; within bins 1 - 0
    assert b["inherited_minus_reference"]["kendall_diff"] == pytest.approx(1 - 4 / 6)
    assert b["inherited_minus_reference"]["within_bin_diff"] == pytest.approx(1.0)


def test_report_takes_the_best_sweep_point_and_compares_proxies(monkeypatch):
    archs = [{"decoder_embed_dim": 64, "decoder": []}] * 4
    jobs, measured = [], {}
    stand = [3.0, 3.2, 3.4, 3.6]
    for i, s in enumerate(stand):
        for k, (d, off) in enumerate(((0.0, 0.1), (0.1, 0.0))):  # dropout 0.1 wins on valid
            name = f"j{i}{k}"
            jobs.append(dict(arch=i, dropout=d, steps=10, seed=0, teacher=False, role="grid", name=name))
            measured[name] = {"valid_loss": s + off, "test_loss": s + off + 0.05}
    jobs.append(dict(arch=0, dropout=0.0, steps=10, seed=1, teacher=False, role="noise", name="n0"))
    measured["n0"] = {"valid_loss": 3.15, "test_loss": 3.2}
    plan = Plan(run="r", settings={"seed": 0, "stratify": "size", "seq_len": 30}, archs=archs,
                labels=list("abcd"), bins=[0, 0, 1, 1], kinds=["mixed"] * 4, axis=[1.0, 1.1, 2.0, 2.1],
                in_band=[True] * 4, centres=[1.0, 2.0], space={}, jobs=jobs, noise=[0])
    proxies = {"params": [4, 3, 2, 1], "weight_mb": [1.0, 1.1, 2.0, 2.1], "macs": [1, 2, 3, 4],
               "decoder_params": [1, 1, 1, 1]}
    monkeypatch.setattr(report_mod, "proxy_values", lambda space, archs, seq_len: proxies)
    monkeypatch.setattr(report_mod.SearchSpace, "from_dict", lambda d: None)
    inherited = [{"valid_loss": v, "test_loss": v} for v in (3.5, 3.4, 3.9, 4.0)]  # swaps archs 0 and 1
    rep = build_report(plan, inherited, measured)
    row = rep["per_arch"][0]
    assert row["standalone"]["dropout"] == 0.1 and row["untuned"]["dropout"] == 0.0
    assert row["standalone"]["test_loss"] == pytest.approx(3.05)
    s = rep["summary"]["test_loss"]
    assert rep["headline"] == "test_loss" and s["inherited"]["kendall_tau"] == pytest.approx(4 / 6)
    assert s["inherited"]["within_bin_tau"] == 0.0 and s["inherited"]["within_bin_pairs"] == 2
    assert s["gap"]["mean"] == pytest.approx((0.45 + 0.15 + 0.45 + 0.35) / 4)
    assert s["proxies"]["params"]["kendall_tau"] == pytest.approx(1.0)  # more params: lower loss
    assert s["proxies"]["macs"]["kendall_tau"] == pytest.approx(-1.0)
    assert s["best_proxy"] == "params"
    assert s["seed_noise"]["gap"]["mean_abs"] == pytest.approx(abs(3.2 - 3.15))
    assert s["reference_ceiling"]["noise_pairs"] == 1 and rep["goals"]["reference_ceiling"] is None
    assert rep["goals"]["tau"] == pytest.approx(4 / 6) and rep["goals"]["tau_ok"] is False


def _four_arch_plan(monkeypatch, measured_points, axis=(1.0, 1.1, 2.0, 2.1), weight_mb=(1.0, 1.1, 2.0, 2.1)):
    """A plan of 4 archs, each with the sweep points ``measured_points[i]`` ((dropout, loss), ...),
    its proxies patched to ``weight_mb``; returns (plan, measured)."""
    jobs, measured = [], {}
    for i, points in enumerate(measured_points):
        for k, (d, loss) in enumerate(points):
            jobs.append(dict(arch=i, dropout=d, steps=10, seed=0, teacher=False, role="grid", name=f"j{i}{k}"))
            measured[f"j{i}{k}"] = {"valid_loss": loss}
    plan = Plan(run="r", settings={"seed": 0, "stratify": "latency", "seq_len": 30},
                archs=[{"decoder_embed_dim": 64, "decoder": []}] * 4, labels=list("abcd"), bins=[0, 0, 1, 1],
                kinds=["mixed"] * 4, axis=list(axis), in_band=[True] * 4, centres=[1.0, 2.0], space={}, jobs=jobs,
                noise=[])
    proxies = {p: list(weight_mb) for p in ("params", "weight_mb", "macs", "decoder_params")}
    monkeypatch.setattr(report_mod, "proxy_values", lambda space, archs, seq_len: proxies)
    monkeypatch.setattr(report_mod.SearchSpace, "from_dict", lambda d: None)
    return plan, measured


def test_a_diverged_model_is_left_out_and_named(monkeypatch, tmp_path):
    from cosearch.commands.fidelity import format_summary
    nan = float("nan")
    plan, measured = _four_arch_plan(monkeypatch, [((0.0, nan), (0.1, 3.1)), ((0.0, 3.2), (0.1, 3.3)),
                                                   ((0.0, 3.4), (0.1, float("inf"))), ((0.0, 3.6), (0.1, 3.7))])
    plan.jobs.append(dict(arch=1, dropout=0.0, steps=10, seed=1, teacher=False, role="noise", name="n1"))
    measured["n1"] = {"valid_loss": nan}
    inherited = [{"valid_loss": v} for v in (3.5, 3.4, 3.9, None)]  # the last one diverged (null in the JSON)
    rep = build_report(plan, inherited, measured)
    rows = rep["per_arch"]
    assert rows[0]["standalone"] == {"dropout": 0.1, "steps": 10, "job": "j01", "valid_loss": 3.1}
    assert rows[0]["untuned"] is None  # the run's own recipe diverged for arch a
    assert rows[2]["standalone"]["valid_loss"] == 3.4
    assert rep["diverged"] == ["a: standalone (dropout 0, 10 steps)", "b: seed2",
                               "c: standalone (dropout 0.1, 10 steps)", "d: inherited"]
    s = rep["summary"]["valid_loss"]["inherited"]
    assert s["n"] == 3 and s["kendall_tau"] == pytest.approx(1 / 3)  # a, b, c: 3.5, 3.4, 3.9 vs 3.1, 3.2, 3.4
    assert "left out, no finite loss (diverged): 4 models" in format_summary(rep)
    report_mod.plot(rep, tmp_path / "p.png")  # drawn from the finite rows
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_the_plot_spans_the_points_when_inherited_losses_sit_far_above_standalone(monkeypatch, tmp_path):
    from matplotlib.figure import Figure
    figs = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figs.append(self))

    def report(inherited):
        rows = [{"inherited": {"valid_loss": i}, "standalone": {"valid_loss": s}, "weight_mb": mb, "params": mb}
                for i, s, mb in zip(inherited, (1.7, 1.8, 1.9), (1.0, 2.0, 4.0))]
        return {"headline": "valid_loss", "per_arch": rows,
                "summary": {"valid_loss": {"best_proxy": "params", "inherited": {}, "proxies": {}}}}
    report_mod.plot(report([4.0, 4.1, 4.2]), tmp_path / "p.png")
    left = figs[-1].axes[0]
    # each axis spans its own points, 5% of their range beyond them: not a square range down to 1.7
    assert left.get_xlim() == pytest.approx((3.99, 4.21)) and left.get_ylim() == pytest.approx((1.69, 1.91))
    assert left.get_legend().get_texts()[0].get_text() == "y = x (out of view: mean gap +2.30)"
    report_mod.plot(report([1.75, 1.8, 1.85]), tmp_path / "p.png")  # y = x crosses the view
    assert figs[-1].axes[0].get_legend().get_texts()[0].get_text() == "y = x"


def test_within_bin_pairs_follow_the_axis_the_archs_were_picked_along(monkeypatch):
    # latency bins: a and b within 5% in latency, 2x apart in weight MB
    plan, measured = _four_arch_plan(monkeypatch, [((0.0, 3.0),), ((0.0, 3.2),), ((0.0, 3.4),), ((0.0, 3.6),)],
                                     axis=(1.0, 1.05, 3.0, 3.1), weight_mb=(1.0, 2.0, 3.0, 6.0))
    inherited = [{"valid_loss": v} for v in (3.5, 3.4, 3.9, 4.0)]
    s = build_report(plan, inherited, measured)["summary"]["valid_loss"]["inherited"]
    assert s["within_bin_pairs"] == 2 and s["within_bin_tau"] == 0.0  # a-b swapped, c-d kept


def test_a_nonfinite_loss_is_scored_as_null(monkeypatch):
    from cosearch.fidelity import measure

    class TD:
        task, test, tokenizer = "lm", object(), type("T", (), {"pad_id": 0, "vocab_size": 4})()

        @staticmethod
        def batches(*a, **k):
            return iter(())
    losses = iter([float("nan"), 2.5, 3.0, float("-inf")])
    monkeypatch.setattr(measure, "eval_loss", lambda *a: (next(losses), 10))
    assert measure.score(None, TD, {"max_len": 8}, "cpu", 64, False, 0) == {"valid_loss": None, "test_loss": 2.5}
    assert measure.score(None, TD, {"max_len": 8}, "cpu", 64, False, 0) == {"valid_loss": 3.0, "test_loss": None}
    # a diverged model's BLEU is left out too
    assert report_mod.metric_column([{"inherited": {"valid_loss": None, "test_bleu": 30.0}},
                                     {"inherited": {"valid_loss": 2.0, "test_bleu": 31.0}}], "inherited",
                                    "test_bleu") == [None, -31.0]


@pytest.mark.parametrize("error", [KeyError(174812789), ValueError("bad"), IndexError("x")])
def test_a_checkpoint_damaged_inside_is_one_line(tmp_path, monkeypatch, error):
    import torch
    from cosearch.errors import UserError
    from cosearch.training import checkpoint
    path = tmp_path / "step_00000001.pt"
    path.write_bytes(b"x")

    def damaged(*a, **k):
        raise error
    monkeypatch.setattr(torch, "load", damaged)
    with pytest.raises(UserError, match="not a readable cosearch checkpoint"):
        checkpoint.load_checkpoint(path)


def test_a_space_with_fewer_archs_than_asked_is_refused(tmp_path):
    from cosearch.errors import UserError
    from cosearch.fidelity.plan import FidelitySettings, RunInfo, make_plan
    for ffn, archs, msg in (([64, 128], 4, "has only 2 distinct arch(s), and ranking needs 3"),
                            ([64, 128, 256, 512], 6, "only 4 distinct archs were drawn")):
        space = SearchSpace.from_dict({
            "name": "few", "family": "decoder_only", "vocab_size": 64, "max_positions": 32, "dropout": 0.0,
            "decoder": {"embed_dim": [32], "layers": [1], "ffn_dim": ffn, "heads": [2], "head_dim": 16},
            "quantization": {"weight_bits": [16], "act_bits": [16], "embedding_bits": 16}})
        run = RunInfo(tmp_path, {"seed": 0, "train": {}}, space, tmp_path / "c.pt")
        with pytest.raises(UserError, match=re.escape(msg)):
            make_plan(run, FidelitySettings(archs=archs, per_bin=2, noise_archs=0))


@pytest.mark.slow
def test_an_unfinished_supernet_is_checked_with_a_warning_naming_its_step(tmp_path, capsys, one_thread):
    """A run whose training stopped early (a benchmark once checked a supernet that had died at
    step 1 of 400) is named as such, not passed off as the trained supernet."""
    run = tmp_path / "sup"
    assert main(["train", "--space", "tiny_lm", "--data", str(write_lm_text(tmp_path / "t.txt")), "--out", str(run),
                 "--steps", "400", "--time-limit", "1", *LM]) == 0
    step = int(json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"])
    assert step < 400
    capsys.readouterr()
    assert main(["fidelity", str(run), "--out", str(tmp_path / "fid"), "--archs", "3",  # --per-bin: 3 then
                 "--noise-archs", "0", "--steps", "2", "--no-progress"]) == 0
    rep = json.loads((tmp_path / "fid" / "fidelity.json").read_text())
    assert rep["settings"]["per_bin"] == 3
    assert rep["supernet"] == {"checkpoint": f"step_{step:08d}.pt", "step": step, "steps_planned": 400}
    assert f"checked at step {step} of its 400" in capsys.readouterr().err


# --------------------------------------------------------------------------- the command
LM = ["--task", "lm", "--max-tokens", "64", "--max-len", "16", "--no-progress"]


def _supernet(tmp_path: Path, steps: int = 4) -> tuple[Path, Path]:
    data = write_lm_text(tmp_path / "t.txt")
    run = tmp_path / "sup"
    assert main(["train", "--space", "tiny_lm", "--data", str(data), "--out", str(run), "--steps", str(steps),
                 "--ckpt-every", "2", *LM]) == 0
    return run, data


@pytest.mark.slow
def test_fidelity_end_to_end_on_tiny_lm(tmp_path, capsys, one_thread):
    run, _ = _supernet(tmp_path)
    out = tmp_path / "fid"
    argv = ["fidelity", str(run), "--out", str(out), "--archs", "4", "--per-bin", "2", "--noise-archs", "1",
            "--distilled-archs", "1", "--steps", "3", "--no-progress"]
    assert main(argv) == 0
    rep = json.loads((out / "fidelity.json").read_text())
    plan = json.loads((out / PLAN).read_text())
    assert len(plan["jobs"]) == 6 and rep["jobs"] == {"planned": 6, "measured": 6, "failed": {}, "from": None,
                                                                  "shard": None}
    assert rep["supernet"] == {"checkpoint": "step_00000004.pt", "step": 4, "steps_planned": 4}
    tokenizer = json.loads((out / "measured.json").read_text())["tokenizer"]
    assert rep["tokenizer"] == tokenizer and len(tokenizer) == 12  # what a rescoring compares
    # 4 archs cannot take every choice of tiny_lm: the ones none takes are said and recorded
    # (expected from the plan's arch dicts and the preset's choices, read here by hand)
    taken = {"embed_dim": {a["decoder_embed_dim"] for a in plan["archs"]},
             "layers": {len(a["decoder"]) for a in plan["archs"]},
             **{f: {la[f] for a in plan["archs"] for la in a["decoder"]}
                for f in ("ffn_dim", "heads", "weight_bits", "act_bits")}}
    preset = {"embed_dim": [64, 96, 128], "layers": [1, 2, 3, 4], "ffn_dim": [128, 256, 512], "heads": [2, 4],
              "weight_bits": [1.58, 2, 4, 8, 16], "act_bits": [8, 16]}
    missing = [f"decoder.{f}={c:g}" for f, cs in preset.items() for c in cs if c not in taken[f]]
    assert missing and rep["unpicked_choices"] == missing
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and f"no checked arch takes {', '.join(missing)};" in err
    assert (out / "fidelity.png").stat().st_size > 10_000
    s = rep["summary"]["valid_loss"]
    assert rep["headline"] == "valid_loss" and s["inherited"]["n"] == 4  # lm data: no test split
    assert set(s["proxies"]) == {"params", "weight_mb", "macs", "decoder_params"}
    assert s["seed_noise"]["gap"]["n"] == 1 and s["distilled"]["minus_standalone"]["n"] == 1
    # the arch axes that vary over the picks, each scored on the 4 archs (tiny_lm has no
    # encoder), on the headline metric only
    assert s["axes"] and all(a["n"] == 4 and not a["axis"].startswith("encoder") for a in s["axes"])
    assert all("axes" not in v for m, v in rep["summary"].items() if m != rep["headline"])
    rows = rep["per_arch"]
    assert all(r["inherited"]["valid_loss"] > 0 and r["standalone"]["step"] == 3 for r in rows)
    # each job repeats the supernet's recipe: the same training settings but steps and warm-up
    sup = json.loads((run / "config.json").read_text())
    job = plan["jobs"][0]
    cfg = json.loads((out / "jobs" / job["name"] / "run" / "config.json").read_text())
    skip = {"steps", "warmup", "ckpt_every", "log_every", "distill", "n_random", "deep_random"}
    assert {k: v for k, v in cfg["train"].items() if k not in skip} == \
        {k: v for k, v in sup["train"].items() if k not in skip}
    assert sup["train"]["deep_random"] == 1 and cfg["train"]["deep_random"] == 0  # one arch: no sandwich
    assert cfg["arch"] == plan["archs"][job["arch"]] and cfg["seed"] == sup["seed"] and cfg["data"] == sup["data"]
    assert (out / "jobs" / job["name"] / "run" / "tokenizer.model").read_bytes() == \
        (run / "tokenizer.model").read_bytes()
    teacher = next(j for j in plan["jobs"] if j["teacher"])
    kd_cfg = json.loads((out / "jobs" / teacher["name"] / "run" / "config.json").read_text())
    assert kd_cfg["teacher"] == str(run.resolve())
    # the supernet trained without distillation; its control still learns from the teacher
    assert sup["train"]["distill"] == 0.0 and kd_cfg["train"]["distill"] == 0.5 and cfg["train"]["distill"] == 0.0
    # the report is rebuilt from the plan and the measurements alone
    (out / "fidelity.json").unlink()
    assert main(["fidelity", str(tmp_path / "gone"), "--out", str(out), "--report-only"]) == 0
    assert json.loads((out / "fidelity.json").read_text())["summary"] == rep["summary"]
    # a rerun trains and measures nothing again
    mtime = (out / "measurements.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert (out / "measurements.json").stat().st_mtime_ns == mtime
    assert all((out / "jobs" / j["name"] / "log.txt").read_text().count("$ ") == 1 for j in plan["jobs"])
    # another plan in the same folder is refused, naming the setting
    assert main(argv[:-1] + ["--seed", "5", "--no-progress"]) == 2
    assert "--seed" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_check_resumes_where_it_stopped(tmp_path, one_thread):
    run, _ = _supernet(tmp_path)
    out = tmp_path / "fid"
    argv = [sys.executable, "-m", "cosearch.cli", "fidelity", str(run), "--out", str(out), "--archs", "3",
            "--per-bin", "3", "--noise-archs", "0", "--steps", "160", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while not (out / PLAN).is_file():
            assert time.time() - t0 < 120 and proc.poll() is None
            time.sleep(0.1)
        names = [j["name"] for j in json.loads((out / PLAN).read_text())["jobs"]]
        first, second = (out / "jobs" / n / "run" for n in names[:2])
        while not list((second / "checkpoints").glob("*.pt")):  # the second job has a checkpoint
            assert time.time() - t0 < 600 and proc.poll() is None, "finished before the kill"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its running job
        proc.wait()
    assert (first / "summary.json").is_file() and not (second / "summary.json").is_file()
    done = json.loads((first / "summary.json").read_text())
    assert subprocess.run(argv, env=env, capture_output=True).returncode == 0
    assert json.loads((first / "summary.json").read_text()) == done  # not trained again
    resumed = json.loads((second / "summary.json").read_text())
    assert resumed["finished"] and resumed["start_step"] > 0  # went on from its checkpoint
    rep = json.loads((out / "fidelity.json").read_text())
    assert rep["jobs"]["measured"] == 3 and rep["summary"]["valid_loss"]["inherited"]["n"] == 3


def test_a_finished_job_missing_its_last_checkpoint_is_one_line_not_an_earlier_model(tmp_path, capsys, one_thread):
    run, _ = _supernet(tmp_path, steps=2)
    out = tmp_path / "fid"
    argv = ["fidelity", str(run), "--out", str(out), "--archs", "3", "--per-bin", "3", "--noise-archs", "0",
            "--steps", "3", "--no-progress"]
    assert main(argv) == 0
    job, other = (out / "jobs" / j["name"] for j in json.loads((out / PLAN).read_text())["jobs"][:2])
    from cosearch.fidelity.plan import JOB_NAME
    assert JOB_NAME.fullmatch(job.name) and JOB_NAME.fullmatch(other.name)  # what an old jobs folder holds
    assert sorted(p.name for p in (job / "run" / "checkpoints").iterdir()) == ["step_00000002.pt", "step_00000003.pt"]
    (job / "run" / "checkpoints" / "step_00000003.pt").unlink()
    shutil.rmtree(other / "run")  # a job the rerun would train: refused before it does
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{job / 'run'} finished 3 steps but has its newest checkpoint at step 2" in err
    assert f"delete that job folder ({job})" in err and err.count("\n") == 1
    assert not (other / "run").exists()
    (job / "run" / "checkpoints" / "step_00000002.pt").unlink()
    assert main(argv) == 2 and "finished 3 steps but has no checkpoint" in capsys.readouterr().err


def test_bleu_without_a_test_split_is_refused_before_any_work(tmp_path, capsys, one_thread):
    from cosearch.training.train import train
    data = write_word_translation(tmp_path / "mt", n_train=200)
    for side in ("en", "de"):
        (data / f"test.{side}").unlink()
    train(mt_space(), "translation", data, tmp_path / "sup", steps=2, max_tokens=128, progress=False)
    assert main(["fidelity", str(tmp_path / "sup"), "--out", str(tmp_path / "f"), "--archs", "3", "--bleu",
                 "--no-progress"]) == 2
    assert f"--bleu scores the test split's translations, and {data} has no test split" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_bad_input_is_refused_before_any_work(tmp_path, capsys, one_thread, monkeypatch):
    run, _ = _supernet(tmp_path, steps=2)
    cases = [
        ([str(tmp_path / "nope")], "not a cosearch run"),
        ([str(run), "--archs", "2"], "--archs 2 is invalid"),
        ([str(run), "--archs", "6001", "--per-bin", "1"], "--archs 6001 is invalid; give between 3"),
        ([str(run), "--dropouts", "0,1.5"], "--dropouts 0.0,1.5 is invalid"),
        ([str(run), "--step-scales", "1,inf"], "--step-scales 1.0,inf is invalid"),
        ([str(run), "--step-scales", "1,1e308"], "--step-scales 1e+308 is invalid: 2 x 1e+308 steps is more than"),
        ([str(run), "--steps", str(10 ** 9 + 1)], "--steps 1000000001 is invalid; give between 1 and 1,000,000,000"),
        ([str(run), "--hw", ""], "--hw '' is invalid"),
        ([str(run), "--seed", "-1"], "--seed -1 is invalid"),
        ([str(run), "--standalone-seed", "-1"], "--standalone-seed -1 is invalid"),
        ([str(run), "--gpu-share", "0"], "--gpu-share 0 is invalid"),
        ([str(run), "--eval-tokens", "0"], "--eval-tokens 0 is invalid"),
        ([str(run), "--stratify", "latency", "--hw", "no_such_hw"], "no_such_hw"),
        ([str(run), "--hw", "no_such_hw"], "--hw no_such_hw: unknown hw_models preset"),
        ([str(run), "--seq-len", "100000"], "--seq-len 100000 is invalid"),
        ([str(run), "--bleu"], "drop --bleu"),  # an lm run has no translations to score
    ]
    for args, msg in cases:
        assert main(["fidelity", *args, "--out", str(tmp_path / "f"), "--no-progress"]) == 2, args
        assert msg in capsys.readouterr().err
        assert not (tmp_path / "f").exists()
    with pytest.raises(SystemExit) as e:  # an empty list is a typo, not "no sweep"
        main(["fidelity", str(run), "--dropouts", ",", "--out", str(tmp_path / "f"), "--no-progress"])
    assert e.value.code == 2 and "argument --dropouts: ',': give numbers" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    assert main(["fidelity", str(run), "--out", str(tmp_path / "busy"), "--no-progress"]) == 2
    assert "exists and is not a cosearch fidelity check" in capsys.readouterr().err
    assert main(["fidelity", str(run), "--out", str(run / "f"), "--no-progress"]) == 2
    assert "inside the input RUN" in capsys.readouterr().err and not (run / "f").exists()
    # a user's folder holding an sa- name is no jobs folder from before markers: refused, untouched
    (tmp_path / "ud" / "sa-mydata").mkdir(parents=True)
    (tmp_path / "ud" / "sa-mydata" / "notes.txt").write_text("x")
    (tmp_path / "ud" / "README").write_text("mine")
    assert main(["fidelity", str(run), "--out", str(tmp_path / "f"), "--jobs", str(tmp_path / "ud"),
                 "--no-progress"]) == 2
    assert "--jobs" in capsys.readouterr().err and not (tmp_path / "f").exists()
    assert sorted(p.name for p in (tmp_path / "ud").rglob("*")) == ["README", "notes.txt", "sa-mydata"]
    (tmp_path / "uj" / "sa-0123456789ab").mkdir(parents=True)  # named as a job is, without a job's files
    (tmp_path / "uj" / "sa-0123456789ab" / "notes.txt").write_text("x")
    assert main(["fidelity", str(run), "--out", str(tmp_path / "f"), "--jobs", str(tmp_path / "uj"),
                 "--no-progress"]) == 2
    assert "--jobs" in capsys.readouterr().err and not (tmp_path / "f").exists()
    assert sorted(p.name for p in (tmp_path / "uj").rglob("*")) == ["notes.txt", "sa-0123456789ab"]
    sa = tmp_path / "sa"
    assert main(["train", "--space", "tiny_lm", "--data", str(tmp_path / "t.txt"), "--out", str(sa),
                 "--steps", "1", "--arch", "smallest", *LM]) == 0
    assert main(["fidelity", str(sa), "--no-progress"]) == 2
    assert "standalone run" in capsys.readouterr().err
    # the run's data moved away: a check has no data flag, so the line names the run's own path
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    cfg = json.loads((moved / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps(dict(cfg, data=str(tmp_path / "gone.txt"))))
    assert main(["fidelity", str(moved), "--out", str(tmp_path / "f"), "--no-progress"]) == 2
    assert f"trained on {tmp_path / 'gone.txt'} (its config.json's \"data\"), which no longer exists" in \
        capsys.readouterr().err and not (tmp_path / "f").exists()
    (moved / "config.json").write_text(json.dumps(dict(cfg, data="t.txt")))  # relative: read from the cwd
    monkeypatch.chdir(run)
    assert main(["fidelity", str(moved), "--out", str(tmp_path / "f"), "--no-progress"]) == 2
    assert f"trained on t.txt (its config.json's \"data\"), which is not found from {run} (a relative path: run " \
        "the check from the folder the run was trained from, or put the data back there)" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # from where it was trained the data is found: the next check refuses
    assert main(["fidelity", str(moved), "--out", str(tmp_path / "f"), "--standalone-from", str(tmp_path / "no"),
                 "--no-progress"]) == 2
    assert "--standalone-from" in capsys.readouterr().err and not (tmp_path / "f").exists()
    # a damaged supernet checkpoint is found before any standalone run trains
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    for ckpt in (bad / "checkpoints").iterdir():
        ckpt.write_bytes(b"junk\n")
    assert main(["fidelity", str(bad), "--out", str(tmp_path / "f"), "--no-progress"]) == 2
    assert "not a readable cosearch checkpoint" in capsys.readouterr().err and not (tmp_path / "f").exists()
    # a diverged supernet (non-finite weights) is refused before any standalone run trains for it
    from cosearch.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    nan = tmp_path / "nan"
    shutil.copytree(run, nan)
    ckpt = latest_checkpoint(nan)
    state = load_checkpoint(ckpt)
    name = next(k for k, t in state["model"].items() if t.is_floating_point() and t.numel() > 1)
    state["model"][name].view(-1)[0] = float("nan")
    save_checkpoint(ckpt, state)
    assert main(["fidelity", str(nan), "--out", str(tmp_path / "f"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"holds non-finite weights ({name}): its training diverged" in err and not (tmp_path / "f").exists()


@pytest.mark.slow
def test_checks_sharing_a_jobs_folder_score_each_standalone_run_once(tmp_path, capsys, one_thread, monkeypatch):
    from cosearch.fidelity import measure
    run, data = _supernet(tmp_path, steps=2)
    run2 = tmp_path / "sup2"  # another supernet seed on the same data: the same standalone runs
    assert main(["train", "--space", "tiny_lm", "--data", str(data), "--out", str(run2), "--steps", "2",
                 "--seed", "1", "--ckpt-every", "2", *LM]) == 0
    scored = []
    real = measure.score
    monkeypatch.setattr(measure, "score", lambda model, *a, **k: scored.append(model) or real(model, *a, **k))
    jobs = tmp_path / "jobs"
    common = ["--archs", "3", "--per-bin", "3", "--noise-archs", "0", "--steps", "2", "--jobs", str(jobs),
              "--standalone-seed", "0", "--no-progress"]
    assert main(["fidelity", str(run), "--out", str(tmp_path / "f1"), *common]) == 0
    assert len(scored) == 3 + 3  # three inherited, three standalone
    assert main(["fidelity", str(run2), "--out", str(tmp_path / "f2"), *common]) == 0
    assert len(scored) == 6 + 3  # the second supernet's three inherited only
    r1, r2 = (json.loads((tmp_path / f / "fidelity.json").read_text()) for f in ("f1", "f2"))
    assert [r["standalone"] for r in r1["per_arch"]] == [r["standalone"] for r in r2["per_arch"]]
    # a retrained job (same folder and checkpoint names, another file) is scored again
    ckpt = max((jobs / next(p.name for p in jobs.iterdir() if p.name.startswith("sa-")) / "run").rglob("*.pt"))
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10 ** 9))
    assert main(["fidelity", str(run2), "--out", str(tmp_path / "f2"), *common]) == 0
    assert len(scored) == 9 + 1
    # a supernet trained again in the same folder (a checkpoint of the same name) is scored again
    (mine,), (theirs,) = ((r / "checkpoints").glob("*.pt") for r in (run, run2))
    assert mine.name == theirs.name
    shutil.copyfile(theirs, mine)
    assert main(["fidelity", str(run), "--out", str(tmp_path / "f1"), *common]) == 0
    assert len(scored) == 10 + 3
    r1 = json.loads((tmp_path / "f1" / "fidelity.json").read_text())
    assert [r["inherited"] for r in r1["per_arch"]] == [r["inherited"] for r in r2["per_arch"]]
    # a check while another process holds the shared jobs folder stops at once, in one line, unwritten
    from test_outdirs import _holder, _release
    holder = _holder(jobs, "exclusive")
    capsys.readouterr()  # what earlier commands said
    try:
        assert main(["fidelity", str(run2), "--out", str(tmp_path / "f4"), *common]) == 2
    finally:
        _release(holder)
    err = capsys.readouterr().err
    assert f"{jobs} is in use by another cosearch command (pid {holder.pid}); wait for it to finish or choose " \
        "another --jobs" in err and err.count("\n") == 1
    assert not (tmp_path / "f4").exists()


@pytest.mark.slow
def test_a_check_reuses_an_earlier_checks_standalone_scores_and_trains_nothing(tmp_path, capsys, one_thread,
                                                                                  monkeypatch):
    from cosearch.fidelity import measure
    run, data = _supernet(tmp_path, steps=2)
    run2 = tmp_path / "sup2"  # another supernet (seed, a lever off) on the same data and recipe
    assert main(["train", "--space", "tiny_lm", "--data", str(data), "--out", str(run2), "--steps", "2",
                 "--seed", "1", "--deep-random", "0", "--ckpt-every", "2", *LM]) == 0
    common = ["--archs", "3", "--per-bin", "3", "--noise-archs", "1", "--steps", "2", "--standalone-seed", "0",
              "--no-progress"]
    f1, f2 = tmp_path / "f1", tmp_path / "f2"
    assert main(["fidelity", str(run), "--out", str(f1), *common]) == 0
    # the earlier runs' checkpoints are gone (another machine); its scores are marked, so
    # that reading them, not scoring again, is what the second check shows
    shutil.rmtree(f1 / "jobs")
    m1 = json.loads((f1 / "measured.json").read_text())
    assert len(m1["standalone"]) == 4 and m1["standalone_from"] is None
    for name, entry in m1["standalone"].items():
        entry["valid_loss"] = 100.0 + len(entry) + int(name[3:7], 16) / 1e5
    (f1 / "measured.json").write_text(json.dumps(m1))
    scored = []
    real = measure.score
    monkeypatch.setattr(measure, "score", lambda model, *a, **k: scored.append(model) or real(model, *a, **k))
    capsys.readouterr()
    assert main(["fidelity", str(run2), "--out", str(f2), "--standalone-from", str(f1), *common]) == 0
    assert len(scored) == 3  # the three inherited only
    assert "from the earlier check" in capsys.readouterr().out
    assert not (f2 / "jobs").exists() and not (f1 / "jobs").exists()
    plan = json.loads((f2 / PLAN).read_text())
    m2 = json.loads((f2 / "measured.json").read_text())
    assert m2["standalone"] == {j["name"]: m1["standalone"][j["name"]] for j in plan["jobs"]}
    assert m2["standalone_from"] == str(f1.resolve()) and m2["tokenizer"] == m1["tokenizer"]
    rep = json.loads((f2 / "fidelity.json").read_text())
    assert rep["jobs"] == {"planned": 4, "measured": 4, "failed": {}, "from": str(f1.resolve()), "shard": None}
    grid = {j["arch"]: j["name"] for j in plan["jobs"] if j["role"] == "grid"}
    assert [r["standalone"]["valid_loss"] for r in rep["per_arch"]] == \
        [m1["standalone"][grid[i]]["valid_loss"] for i in range(3)]
    # the second supernet's own inherited scores, not the first's
    r1 = json.loads((f1 / "fidelity.json").read_text())
    assert [r["inherited"] for r in rep["per_arch"]] != [r["inherited"] for r in r1["per_arch"]]
    assert main(["fidelity", str(run2), "--out", str(f2), "--standalone-from", str(f1), *common]) == 0
    assert len(scored) == 3  # a rerun measures nothing again

    def refused(extra, msg, ref=f1):
        out = tmp_path / "f3"
        capsys.readouterr()  # what earlier commands said
        assert main(["fidelity", str(run2), "--out", str(out), "--standalone-from", str(ref), *common,
                     *extra]) == 2
        err = capsys.readouterr().err
        assert msg in err and "--standalone-from" in err and err.count("\n") == 1, err
        assert not out.exists()  # nothing written
    refused(["--steps", "3"], "has no score of 4 of this check's 4")  # another recipe: other jobs
    refused(["--standalone-seed", "1"], "(a supernet of another seed: --standalone-seed of that check's runs)")
    refused(["--noise-archs", "2"], "has no score of 2 of this check's 5")  # noise runs it never trained
    refused(["--eval-tokens", "32"], "give the same --eval-tokens")
    refused(["--jobs", str(tmp_path / "j")], "exclude each other")
    refused([], "give the --out folder of a finished fidelity check", ref=run)  # a run, not a check
    refused([], f"--standalone-from {tmp_path / 'nosuch'} does not exist", ref=tmp_path / "nosuch")
    refused([], "is inside the input --standalone-from", ref=tmp_path)  # an --out inside it
    refused(["--distilled-archs", "1"], "give --distilled-archs 0")  # their teacher is this supernet
    # a check keeps the source of its standalone scores
    assert main(["fidelity", str(run2), "--out", str(f2), *common]) == 2
    assert "read its standalone scores from" in capsys.readouterr().err
    assert main(["fidelity", str(run), "--out", str(f1), "--standalone-from", str(f2), *common]) == 2
    assert "trained its standalone runs; rerun it without --standalone-from" in capsys.readouterr().err
    # with --eval-tokens the batches decide which tokens are scored
    plan1 = json.loads((f1 / PLAN).read_text())
    (f1 / PLAN).write_text(json.dumps({**plan1, "settings": {**plan1["settings"], "eval_tokens": 32}}))
    refused(["--eval-tokens", "32", "--max-tokens", "128"], "give the same --max-tokens")
    (f1 / PLAN).write_text(json.dumps(plan1))
    failed = {**m1, "failed": {grid[0]: "log.txt"}}
    (f1 / "measured.json").write_text(json.dumps(failed))
    refused([], "rerun that check to finish them first")
    import sentencepiece
    assert m1["sentencepiece"] == sentencepiece.__version__  # kept to explain a tokenizer found elsewhere
    m1["tokenizer"] = "0" * 12
    (f1 / "measured.json").write_text(json.dumps(m1))
    refused([], "another tokenizer")
    m1["sentencepiece"] = "0.0.1"
    (f1 / "measured.json").write_text(json.dumps(m1))
    refused([], f"(sentencepiece 0.0.1 there, {sentencepiece.__version__} here)")
    del m1["sentencepiece"]
    # a check written before tokenizers were recorded is read, with a warning
    del m1["tokenizer"]
    (f1 / "measured.json").write_text(json.dumps(m1))
    assert main(["fidelity", str(run2), "--out", str(tmp_path / "f4"), "--standalone-from", str(f1), *common]) == 0
    assert "does not record its tokenizer" in capsys.readouterr().err


@pytest.mark.parametrize("text, want", [("1/4", (1, 4)), (" 4 / 4 ", (4, 4)), ("1/1", (1, 1)), ("0/4", None),
                                        ("5/4", None), ("1/0", None), ("-1/4", None), ("1.5/4", None), ("x", None),
                                        ("1/4/2", None), (None, None)])
def test_parse_shard(text, want):
    from cosearch.fidelity.plan import parse_shard
    assert parse_shard(text) == want


def test_balanced_parts_by_hand():
    from cosearch.fidelity.plan import balanced_parts
    # 5 -> part 0; 4 -> 1; 3 -> 1 (4 < 5); 2 -> 0 (5 < 7); 1 -> 0 (7 = 7: the lower part)
    assert balanced_parts([5, 1, 4, 2, 3], 2) == [[0, 1, 3], [2, 4]]
    assert balanced_parts([1, 1, 1], 3) == [[0], [1], [2]]
    assert balanced_parts([2, 9, 4], 1) == [[0, 1, 2]]


@pytest.mark.slow
def test_a_reference_trained_in_parts_serves_as_one(tmp_path, capsys, one_thread, monkeypatch):
    from cosearch.fidelity import measure
    run, data = _supernet(tmp_path, steps=2)
    run2 = tmp_path / "sup2"  # the supernet checked against the parts
    assert main(["train", "--space", "tiny_lm", "--data", str(data), "--out", str(run2), "--steps", "2",
                 "--seed", "1", "--ckpt-every", "2", *LM]) == 0
    common = ["--archs", "3", "--per-bin", "3", "--noise-archs", "1", "--steps", "2", "--standalone-seed", "0",
              "--no-progress"]
    parts = [tmp_path / "p1", tmp_path / "p2"]
    for k, part in enumerate(parts, 1):
        assert main(["fidelity", str(run), "--out", str(part), "--shard", f" {k} / 2", *common]) == 0
        assert f"part {k}/2 of the standalone runs: " in capsys.readouterr().out
    plan = json.loads((parts[0] / PLAN).read_text())
    jobs = [j["name"] for j in plan["jobs"]]
    assert len(jobs) == 4 and plan["settings"]["shard"] == "1/2"  # recorded in one spelling
    m = [json.loads((p / "measured.json").read_text()) for p in parts]
    # the two parts split the jobs, each trained once, the two costliest (steps x parameters) apart
    trained = [sorted(p.name for p in (part / "jobs").iterdir() if p.name.startswith("sa-")) for part in parts]
    assert trained == [sorted(mi["standalone"]) for mi in m] and sorted(trained[0] + trained[1]) == sorted(jobs)
    space = SearchSpace.from_dict(plan["space"])
    cost = {j["name"]: j["steps"] * space.param_count(Arch.from_dict(plan["archs"][j["arch"]])) for j in plan["jobs"]}
    top2 = sorted(cost, key=cost.get)[-2:]
    assert {next(k for k, t in enumerate(trained) if name in t) for name in top2} == {0, 1}
    rep = json.loads((parts[1] / "fidelity.json").read_text())
    assert rep["jobs"]["shard"] == "2/2" and rep["jobs"]["measured"] == len(trained[1])
    # the same jobs trained whole give the very same scores
    whole = tmp_path / "whole"
    assert main(["fidelity", str(run), "--out", str(whole), *common]) == 0
    assert json.loads((whole / "measured.json").read_text())["standalone"] == {**m[0]["standalone"],
                                                                               **m[1]["standalone"]}
    scored = []
    real = measure.score
    monkeypatch.setattr(measure, "score", lambda model, *a, **k: scored.append(model) or real(model, *a, **k))
    f = tmp_path / "f"
    given = ["--standalone-from", str(parts[1]), "--standalone-from", str(parts[0])]
    assert main(["fidelity", str(run2), "--out", str(f), *given, *common]) == 0
    assert len(scored) == 3  # the three inherited only
    mf = json.loads((f / "measured.json").read_text())
    assert mf["standalone"] == {**m[0]["standalone"], **m[1]["standalone"]}
    assert mf["standalone_from"] == [str(parts[1].resolve()), str(parts[0].resolve())]
    assert "from the earlier checks" in capsys.readouterr().out
    # a rerun may list the parts in another order (or one twice), but not drop one
    assert main(["fidelity", str(run2), "--out", str(f), *given[2:], *given[:2], *given[2:], *common]) == 0
    assert len(scored) == 3

    def refused(args, msg, out=tmp_path / "f3"):
        capsys.readouterr()  # what earlier commands said
        assert main(["fidelity", *args, "--out", str(out), *common]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
        assert not out.exists()
    refused([str(run2), "--standalone-from", str(parts[0])], "has no score of 2 of this check's 4")
    refused([str(run2), "--standalone-from", str(parts[0]), "--shard", "1/2"], "give one")
    for bad in ("0/2", "3/2", "x"):
        refused([str(run), "--shard", bad], f"--shard {bad} is invalid")
    refused([str(run), "--shard", "1/5"], "give N <= 4")
    refused([str(run), "--jobs", str(parts[0])], "is the --out folder of a check")
    refused([str(run), "--jobs", str(tmp_path / "f3")], "is the --out folder of a check")  # its own --out
    # one part of one is the whole: trained (here found in the whole check's jobs) and not partial
    assert main(["fidelity", str(run), "--out", str(tmp_path / "p11"), "--shard", "1/1", "--jobs", str(whole / "jobs"),
                 *common]) == 0
    assert "partial" not in capsys.readouterr().out
    assert json.loads((tmp_path / "p11" / "measured.json").read_text())["standalone"] == \
        json.loads((whole / "measured.json").read_text())["standalone"]
    assert main(["fidelity", str(run2), "--out", str(f), "--standalone-from", str(parts[0]), *common]) == 2
    assert "read its standalone scores from" in capsys.readouterr().err
    assert main(["fidelity", str(run), "--out", str(parts[0]), "--shard", "2/2", *common]) == 2
    assert "another --shard" in capsys.readouterr().err
    # two checks that scored one job differently are not parts of one reference
    one = trained[0][0]
    other = {**m[1], "standalone": {**m[1]["standalone"], one: {**m[0]["standalone"][one], "valid_loss": 9.0}}}
    (parts[1] / "measured.json").write_text(json.dumps(other))
    refused([str(run2), *given], "with other scores")


def test_eval_tokens_scores_only_the_first_batches(tmp_path, one_thread):
    import itertools

    import torch

    from cosearch.fidelity.measure import score, task_data
    from cosearch.training.evaluate import eval_loss, load_run
    run, _ = _supernet(tmp_path, steps=2)
    loaded = load_run(run, torch.device("cpu"))
    td = task_data(run, loaded.config)
    model = loaded.net.extract(loaded.space.smallest()).eval()
    cfg = loaded.config["train"]  # max_len 16: 4 blocks of 16 per batch of 64 tokens

    def first(k):  # the first k validation batches, read here independently of score()
        batches = td.batches("valid", batch_size=4, block=16, shuffle=False, repeat=False)
        return eval_loss(model, itertools.islice(batches, k), td.tokenizer.pad_id, td.tokenizer.vocab_size,
                         torch.device("cpu"))[0]
    whole = score(model, td, cfg, torch.device("cpu"), 64, False, 0)["valid_loss"]
    assert whole == pytest.approx(first(10 ** 9), abs=1e-6)
    assert score(model, td, cfg, torch.device("cpu"), 64, False, 0, eval_tokens=64)["valid_loss"] == \
        pytest.approx(first(1), abs=1e-6)
    assert score(model, td, cfg, torch.device("cpu"), 64, False, 0, eval_tokens=65)["valid_loss"] == \
        pytest.approx(first(2), abs=1e-6)
    assert first(1) != pytest.approx(whole, abs=1e-4)  # the limit is visible in the loss
    # a rerun with other batches reads other first tokens: measured again, not taken from the cache
    from cosearch.fidelity.measure import Cache, measure_inherited
    cache = Cache(tmp_path / "m.json")
    small = [loaded.space.smallest()]
    at64 = measure_inherited(run, small, td, cache, torch.device("cpu"), 64, False, eval_tokens=64)[0][0]
    at4k = measure_inherited(run, small, td, cache, torch.device("cpu"), 4096, False, eval_tokens=64)[0][0]
    assert at64["valid_loss"] == pytest.approx(first(1), abs=1e-6)
    assert at4k["valid_loss"] == pytest.approx(
        score(model, td, cfg, torch.device("cpu"), 4096, False, 0, eval_tokens=64)["valid_loss"], abs=1e-6)
    assert at4k["valid_loss"] != pytest.approx(at64["valid_loss"], abs=1e-4)


@pytest.mark.parametrize("plan, measured, msg", [
    ("{", "{}", "fidelity plan .*plan.json: not valid JSON"),
    ('{"run": "r"}', '{"inherited": [', "fidelity measurements .*measured.json: not valid JSON"),
    ('{"run": "r"}', "{}", "plan.json or measured.json lacks what a fidelity check writes"),
    ("[]", '{"inherited": [], "standalone": {}, "failed": {}}', "lacks what a fidelity check writes"),
])
def test_report_only_on_damaged_files_is_one_line(tmp_path, capsys, plan, measured, msg):
    out = tmp_path / "fid"
    out.mkdir()
    (out / PLAN).write_text(plan)
    (out / "measured.json").write_text(measured)
    assert main(["fidelity", str(tmp_path / "gone"), "--out", str(out), "--report-only"]) == 2
    err = capsys.readouterr().err
    assert re.search(msg, err) and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_only_on_values_a_check_never_writes_is_one_line(tmp_path, capsys, one_thread):
    from cosearch.fidelity.plan import FidelitySettings, check_or_write_plan, make_plan, read_run
    run, _ = _supernet(tmp_path, steps=2)
    plan = make_plan(read_run(run), FidelitySettings(archs=3, per_bin=3, noise_archs=0, steps=2))
    good_plan = json.loads(json.dumps(asdict(plan)))
    good = {"inherited": [{"valid_loss": 3.0 + i} for i in range(3)], "failed": {},
            "standalone": {j["name"]: {"valid_loss": 2.0 + j["arch"]} for j in plan.jobs}}
    out = tmp_path / "fid"

    def report_only(plan_dict, measured) -> int:
        out.mkdir(exist_ok=True)
        (out / PLAN).write_text(json.dumps(plan_dict))
        (out / "measured.json").write_text(json.dumps(measured))
        return main(["fidelity", str(tmp_path / "gone"), "--out", str(out), "--report-only"])

    assert report_only(good_plan, good) == 0
    capsys.readouterr()

    def damaged(edit):
        p, m = json.loads(json.dumps(good_plan)), json.loads(json.dumps(good))
        edit(p, m)
        return p, m
    cases = [damaged(lambda p, m: p["archs"][0]["decoder"][0].update(weight_bits=5)),
             damaged(lambda p, m: p["archs"].__setitem__(0, "largest")),
             damaged(lambda p, m: m.__setitem__("inherited", [1, 2, 3])),
             damaged(lambda p, m: m.__setitem__("standalone", [])),
             damaged(lambda p, m: p["settings"].update(seed="x"))]
    for p, m in cases:
        assert report_only(p, m) == 2
        err = capsys.readouterr().err.strip()
        assert "holds what a fidelity check does not write" in err and "Traceback" not in err
        assert len(err.splitlines()) == 1


def test_summary_lines_count_pairs_in_words():
    from cosearch.commands.fidelity import _pairs
    assert [_pairs(n) for n in (0, 1, 2)] == ["0 pairs", "1 pair", "2 pairs"]


def test_summary_lines_name_the_longer_reference_budget():
    from cosearch.commands.fidelity import format_summary
    agree = {"n": 4, "kendall_tau": 0.5, "kendall_ci": [0.1, 0.9], "spearman": 0.6, "within_bin_tau": None}
    summary = {"inherited": agree, "gap": {"mean_abs": 0.2}, "proxies": {},
               "reference_budgets": {"600": {"reference": {**agree, "kendall_tau": 0.25}, "inherited": agree}}}
    text = format_summary({"summary": {"valid_loss": summary}})
    assert "standalone at 600 steps vs the run's: tau 0.250 [0.10, 0.90], inherited vs it: tau 0.500" in text
    summary["reference_budgets"]["600"]["inherited_minus_reference"] = {"kendall_diff": 0.25,
                                                                        "kendall_diff_ci": [0.05, 0.45]}
    text = format_summary({"summary": {"valid_loss": summary}})
    assert "inherited vs it: tau 0.500 (+0.250 [0.05, 0.45] over the run's-steps runs)" in text
    summary["reference_ceiling"] = {"kendall_tau": 0.8, "kendall_range": [0.7, 0.9], "within_bin_tau": 0.4}
    text = format_summary({"summary": {"valid_loss": summary}})
    assert "a perfect ranker against this one-seed reference: tau 0.800 [0.70, 0.90], within-bin 0.400" in text


def test_summary_lines_name_the_axis_the_supernet_weighs_most_unlike_standalone():
    from cosearch.commands.fidelity import format_summary
    agree = {"n": 4, "kendall_tau": 0.5, "kendall_ci": [0.1, 0.9], "spearman": 0.6, "within_bin_tau": None}
    axes = [{"axis": "encoder.depth", "inherited": 0.01, "standalone": 0.34, "difference": -0.33,
             "difference_ci": [-0.49, -0.18]},
            {"axis": "decoder.depth", "inherited": -0.4, "standalone": -0.59, "difference": 0.19,
             "difference_ci": [-0.01, 0.4]}]
    summary = {"inherited": agree, "gap": {"mean_abs": 0.2}, "proxies": {}, "axes": axes}
    text = format_summary({"summary": {"valid_loss": summary}})
    assert ("most apart from standalone: encoder.depth (tau with loss: inherited +0.01, standalone +0.34, "
            "difference -0.33 [-0.49, -0.18]; 1 of 2 arch axes apart at 95% each, not adjusted for 2 looks)") in text
    summary["axes"] = axes[1:]  # its interval holds 0
    assert "no arch axis apart from standalone (1 arch axis, 95% each)" in format_summary({"summary": {"v": summary}})


def test_a_second_seed_on_every_arch_gives_a_two_seed_reference():
    """seed 1 and seed 2 each swap a pair; their mean is the order 1 < 2 < 3 < 4, as inherited."""
    from cosearch.fidelity.report import summarise
    s1, s2 = [1.0, 2.2, 2.0, 4.0], [1.0, 1.8, 3.0, 2.9]  # means 1.0, 2.0, 2.5, 3.45
    rows = [{"label": f"a{k}", "weight_mb": w, "axis": w, "params": p, "macs": p, "decoder_params": p,
             "inherited": {"valid_loss": float(k)}, "standalone": {"valid_loss": s1[k]},
             "untuned": {"valid_loss": s1[k]}, "seed2": {"valid_loss": s2[k]},
             "sweep": [{"dropout": 0.0, "steps": 10, "valid_loss": s1[k]}]}
            for k, (w, p) in enumerate(zip([1.0, 1.1, 5.0, 5.2], [4, 1, 3, 2]))]
    s = summarise(rows, "valid_loss")
    assert s["inherited"]["kendall_tau"] == pytest.approx(4 / 6)  # one of 6 pairs swapped by seed 1
    # the seeds agree on the small pair (0, 1) and disagree on (2, 3): within bins (1 - 1) / 2
    assert (s["seed_noise"]["within_bin_tau"], s["seed_noise"]["within_bin_pairs"]) == (0.0, 2)
    sm = s["seed_noise"]["seed_mean"]
    assert sm["n"] == 4 and sm["inherited"]["kendall_tau"] == pytest.approx(1.0)
    assert sm["inherited"]["within_bin_tau"] == pytest.approx(1.0) and sm["inherited"]["within_bin_pairs"] == 2
    # params 4, 1, 3, 2 (bigger predicts better): pairs (0,1) right, (0,2) right, (0,3) right,
    # (1,2) wrong, (1,3) wrong, (2,3) right -> tau (4 - 2) / 6; within bins (0,1) right, (2,3) right
    assert sm["proxies"]["params"]["kendall_tau"] == pytest.approx(2 / 6)
    assert sm["proxies"]["params"]["within_bin_tau"] == pytest.approx(1.0)
    from cosearch.commands.fidelity import format_summary
    assert "against the mean of both seeds: tau 1.000" in format_summary({"summary": {"valid_loss": s}})
    del rows[3]["seed2"]  # a subset only: no two-seed reference of the whole check
    assert "mean of both seeds" not in format_summary({"summary": {"valid_loss": summarise(rows, "valid_loss")}})


def test_failed_jobs_are_one_line_naming_the_first_and_the_ones_out_of_gpu_memory(tmp_path):
    from cosearch.fidelity.run import failure_message
    from cosearch.jobs import JobResult

    def result(name, rc, tail=""):
        return JobResult(name, rc, 1.0, False, tmp_path / name / "log.txt", tail)

    ok, crash = result("sa-1", 0), result("sa-2", 1, "ValueError: bad arch")
    oom = result("sa-3", 1, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1024.00 MiB.")
    text = failure_message([ok, crash, oom], tmp_path / "fidelity.json")
    assert text.startswith(f"2 of 3 standalone jobs failed (e.g. sa-2: see {tmp_path / 'sa-2' / 'log.txt'})")
    assert "rerun the same command" in text and "\n" not in text
    assert text.endswith("(1 ran out of GPU memory; where jobs share a GPU, a larger --gpu-share runs fewer at once)")
    assert "GPU memory" not in failure_message([ok, crash], tmp_path / "fidelity.json")
