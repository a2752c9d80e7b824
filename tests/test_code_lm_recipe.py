"""benchmarks/code_lm_recipe.py and its GPU plan: the seed-noise ratio, the bit-widths on a
search front, and the plan's order (all without training)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import code_lm_recipe as recipe  # noqa: E402
import gpu_plans  # noqa: E402

TINY = dict(name="tiny_code", family="decoder_only", vocab_size=512, max_positions=32,
            decoder=dict(embed_dim=[16, 32], layers=[1, 2], ffn_dim=[32, 64], heads=[1, 2], head_dim=8),
            quantization=dict(weight_bits=[1.58, 2, 4, 8, 16], act_bits=[8, 16], embedding_bits=8))


def test_seed_noise_ratio_by_hand(tmp_path):
    for name, losses in (("largest", [3.0, 3.02]), ("smallest", [4.0, 4.04])):
        for seed, loss in enumerate(losses):
            d = tmp_path / f"alone_{name}_seed{seed}"
            d.mkdir()
            (d / "eval.json").write_text(json.dumps({"loss": loss, "bits_per_byte": loss / 2, "step": 10}))
    r = recipe.seed_noise(tmp_path)
    assert r["gap"] == pytest.approx(4.02 - 3.01)
    # sample variances 0.0002 and 0.0008 (ddof 1), pooled: sqrt(0.0005)
    assert r["pooled_seed_std"] == pytest.approx(math.sqrt(0.0005))
    assert r["gap_over_std"] == pytest.approx(1.01 / math.sqrt(0.0005))


def test_bit_widths_on_a_search_front(tmp_path):
    (tmp_path / "pareto.csv").write_text("quality,size,weight_bits\n3.1,1.0,2 2 4\n3.0,2.0,8 8 16 16\n3.5,0.5,1.58\n")
    r = recipe.search_front(tmp_path)
    assert r["front_size"] == 3 and r["best_loss"] == 3.0
    assert r["bit_widths_used"] == [1.58, 2, 4, 8, 16]
    assert r["dominant_bit_widths"] == [1.58, 2, 8]  # a tie goes to the lower width


def test_the_plan_trains_alone_first_and_reports_last(tmp_path, monkeypatch):
    import os

    import yaml
    monkeypatch.delenv("COSEARCH_DATA_CACHE", raising=False)
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(TINY))
    work = tmp_path / "w"
    jobs = gpu_plans.code_lm(data=str(tmp_path), work=str(work), space=str(space))
    names = [j.name for j in jobs]
    assert names[:3] == ["code_lm_data", "code_lm_calibrate", "code_lm_supernet"]
    assert [j.gpu for j in jobs[1:3]] == [1.0, 1.0]  # timed stages have the GPU alone
    stage4 = jobs[3:-1]
    assert all(j.after == ("code_lm_supernet",) and 0 <= j.gpu < 1 for j in stage4)
    assert sum(j.gpu for j in stage4) <= 1.0  # all of them fit on the GPU at once
    assert jobs[-1].name == "code_lm_report" and set(jobs[-1].after) == {j.name for j in stage4}
    assert len({j.done for j in jobs}) == len(jobs)
    assert {"code_lm_alone_largest_seed1", "code_lm_search_tpu_like", "code_lm_bits_inherited"} <= set(names)
    assert not work.exists()  # listing a plan writes nothing
    assert "COSEARCH_DATA_CACHE" not in os.environ  # nor changes the environment of the process
    fixed = gpu_plans.code_lm(data=str(tmp_path), work=str(work), space=str(space), steps="50")
    assert "code_lm_calibrate" not in [j.name for j in fixed] and fixed[1].after == ("code_lm_data",)


def test_the_calibration_folder_is_removed_only_when_cosearch_made_it(tmp_path):
    from cosearch.outdirs import mark
    run = tmp_path / "calib"
    mark(run, "run")
    (run / "metrics.jsonl").write_text("{}\n")
    recipe.remove_run(run)
    assert not run.exists()
    for kind in (None, "search", "export"):  # a user's folder, or cosearch's of another kind
        mine = tmp_path / f"mine_{kind}"
        mine.mkdir()
        (mine / "config.json").write_text("{}")  # looks like an old run, but has no run marker
        if kind:
            mark(mine, kind)
        recipe.remove_run(mine)
        assert (mine / "config.json").read_text() == "{}"
    other = tmp_path / "other_run"
    mark(other, "run")
    link = tmp_path / "link"  # a link is not the run it points at
    link.symlink_to(other)
    recipe.remove_run(link)
    assert link.is_symlink() and (other / ".cosearch").exists()
