"""The fidelity benchmark's pure parts: arch choice, GPU assignment, the report."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fidelity  # noqa: E402

from cosearch.space import SearchSpace  # noqa: E402


def test_archs_spread_over_size_and_bits():
    space = SearchSpace.load("multi30k")
    archs = fidelity.pick_archs(space, 8, seed=0)
    assert archs == fidelity.pick_archs(space, 8, seed=0)  # fixed seed
    assert archs[0] == space.largest() and archs[1] == space.smallest()
    bits = [{la.weight_bits for la in a.encoder + a.decoder} for a in archs[2:]]
    assert all(len(b) == 1 for b in bits)  # one uniform width per sampled arch
    assert {b.pop() for b in bits} == {16, 8, 4, 3, 2, 1.58}  # from float down to ternary
    params = [space.param_count(a) for a in archs[2:]]
    assert len(set(params)) == 6 and len({a.decoder_embed_dim for a in archs}) > 1


def test_assign_gpus_balances_cost():
    costs = {"a": 5.0, "b": 5.0, "c": 1.0, "d": 1.0, "e": 1.0, "f": 1.0, "g": 1.0}
    g = fidelity.assign_gpus(costs, 3)
    load = [sum(c for n, c in costs.items() if g[n] == k) for k in range(3)]
    assert g["a"] != g["b"] and max(load) == 5.0
    assert set(fidelity.assign_gpus(costs, 0).values()) == {0}  # CPU: one queue


def _job(out: Path, name: str, evals: dict, **extra):
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    (out / "jobs" / f"{name}.json").write_text(json.dumps({"name": name, "evals": evals, "finished": True, **extra}))


def test_report_ranks_gaps_and_noise(tmp_path):
    plan = {"modes": ["none", "layer"], "archs": [{}] * 4, "labels": ["a", "b", "c", "d"], "params": [4, 3, 2, 1],
            "size_mb": [1, 1, 1, 1], "noise": {"0": [1]}}
    alone = [(2.0, 40.0), (2.2, 38.0), (2.4, 36.0), (2.6, 34.0)]
    for i, (loss, bleu) in enumerate(alone):
        _job(tmp_path, f"standalone_{i}", {"0": {"loss": loss, "bleu": bleu}})
    _job(tmp_path, "standalone_0_seed1", {"0": {"loss": 2.05, "bleu": 39.5}})
    _job(tmp_path, "supernet_none", {str(i): {"loss": loss + 0.3, "bleu": bleu - 3} for i, (loss, bleu) in enumerate(alone)})
    order = [1, 0, 2, 3]  # layer swaps the first two archs but is closer
    _job(tmp_path, "supernet_layer", {str(i): {"loss": alone[j][0] + 0.1, "bleu": alone[j][1] - 1}
                                       for i, j in enumerate(order)})
    rep = fidelity.summarise(tmp_path, plan)
    none, layer = rep["modes"]["none"], rep["modes"]["layer"]
    assert none["loss"]["kendall_tau"] == pytest.approx(1.0) and none["bleu"]["spearman"] == pytest.approx(1.0)
    assert none["loss"]["mean_gap"] == pytest.approx(0.3) and none["bleu"]["mean_gap"] == pytest.approx(3.0)
    assert layer["loss"]["kendall_tau"] == pytest.approx(2 / 3)  # one discordant pair of 6
    assert rep["mos_vs_none"]["layer"] == {"loss": True, "bleu": True}
    assert rep["seed_noise"] == [{"arch": 0, "seed": 1, "loss_diff": pytest.approx(0.05), "bleu_diff": pytest.approx(0.5)}]
    assert rep["per_arch"][2]["standalone"] == {"loss": 2.4, "bleu": 36.0}
    # a missing job leaves holes, not a crash
    (tmp_path / "jobs" / "standalone_3.json").unlink()
    assert fidelity.summarise(tmp_path, plan)["modes"]["none"]["loss"]["n"] == 3


def test_supernet_seeds_are_averaged_and_finished_jobs_reused(tmp_path):
    plan = {"modes": ["none"], "archs": [{"a": [1]}] * 3, "labels": ["a", "b", "c"], "params": [3, 2, 1],
            "size_mb": [1, 1, 1], "noise": {}, "supernet_seeds": [0, 1], "steps": 5, "max_tokens": 64,
            "recipe": {"bit_stages": (0.2, 0.5)}, "data": "/x/multi30k"}
    alone = [(2.0, 40.0), (2.2, 38.0), (2.4, 36.0)]
    src = tmp_path / "old"
    for i, (loss, bleu) in enumerate(alone):
        _job(src, f"standalone_{i}", {"0": {"loss": loss, "bleu": bleu}})
    _job(src, "supernet_none", {"0": {"loss": 3.0, "bleu": 30.0}, "1": {"loss": 2.9, "bleu": 31.0},
                                "2": {"loss": 3.4, "bleu": 26.0}})
    (src / "jobs" / "unfinished.json").write_text(json.dumps({"finished": False}))
    (src / "plan.json").write_text(json.dumps(dict(plan, data="/elsewhere/multi30k")))
    out = tmp_path / "new"
    (out / "jobs").mkdir(parents=True)
    fidelity.reuse_jobs(src, out, plan)
    assert sorted(p.stem for p in (out / "jobs").glob("*.json")) == [
        "standalone_0", "standalone_1", "standalone_2", "supernet_none"]
    assert fidelity.job_finished(out, "supernet_none") and not fidelity.job_finished(out, "supernet_none_seed1")
    # seed 0 swaps archs 0 and 1; seed 1 swaps them the other way round: the mean ranks them right
    _job(out, "supernet_none_seed1", {"0": {"loss": 2.6, "bleu": 36.0}, "1": {"loss": 2.9, "bleu": 33.0},
                                      "2": {"loss": 3.2, "bleu": 28.0}})
    rep = fidelity.summarise(out, plan)
    assert rep["modes"]["none"]["loss"]["kendall_tau"] == pytest.approx(1 / 3)
    mean = rep["modes_seed_mean"]["none"]
    assert mean["loss"]["kendall_tau"] == pytest.approx(1.0) and mean["seeds"] == [0, 1]
    assert mean["bleu"]["mean_gap"] == pytest.approx(((40 - 33) + (38 - 32) + (36 - 27)) / 3)
    with pytest.raises(SystemExit, match="steps"):
        fidelity.reuse_jobs(src, out, dict(plan, steps=6))


def test_a_rerun_with_another_plan_is_refused_before_any_job(tmp_path):
    """A rerun keeps the finished jobs of its folder: they must come from the same plan."""
    archs = [a.to_dict() for a in fidelity.pick_archs(SearchSpace.load("multi30k"), 2, 0)]
    old = {"archs": archs, "steps": 5, "max_tokens": 64, "recipe": fidelity.RECIPE, "data": str(tmp_path / "multi30k")}
    (tmp_path / "plan.json").write_text(json.dumps(old))
    _job(tmp_path, "standalone_0", {"0": {"loss": 2.0}})
    argv = ["--out", str(tmp_path), "--data", str(tmp_path / "multi30k"), "--cpu", "--modes", "none",
            "--n-archs", "2", "--noise-archs", "0", "--max-tokens", "64"]
    with pytest.raises(SystemExit, match="--out .*'steps'"):
        fidelity.main(argv + ["--steps", "6"])
    assert not (tmp_path / "specs" / "supernet_none.json").exists()  # nothing launched
    assert json.loads((tmp_path / "plan.json").read_text())["steps"] == 5  # nor the plan overwritten
