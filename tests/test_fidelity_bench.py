"""benchmarks/fidelity.py, the thin caller of `cosearch fidelity`: its variant syntax and
the supernet commands it runs (the command itself is tested in test_fidelity.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fidelity  # noqa: E402


def test_variants_parse_into_space_and_training_settings():
    v = fidelity.parse_variants("none:mode=none; bal:mode=layer,router_balance=0.05,sample_pool=3")
    assert v == {"none": {"mode": "none"}, "bal": {"mode": "layer", "router_balance": 0.05, "sample_pool": 3}}
    space = {"mos": {"mode": "layer", "experts": 3, "router_hidden": 8}}
    assert fidelity.variant_space(space, v["none"])["mos"] == {"mode": "none", "experts": 1, "router_hidden": 8}
    assert fidelity.variant_space(space, {"mode": "neuron"})["mos"]["experts"] == 3
    for bad in ("x:lr=1", "x:mode=none;x:mode=layer", "", "1x:mode=none", "a_seeded:mode=none"):
        with pytest.raises(SystemExit):
            fidelity.parse_variants(bad)


def test_dry_run_prints_one_train_command_per_variant_and_seed(capsys, tmp_path):
    assert fidelity.main(["--out", str(tmp_path / "o"), "--variants", "a:mode=none;b:router_balance=0.1,label_smoothing=0",
                          "--supernet-seeds", "2", "--steps", "7", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["a", "a_seed1", "b", "b_seed1"]
    assert "--router-balance 0.1" in lines[2] and "--router-balance" not in lines[0]
    assert "--seed 1" in lines[1] and "--steps 7" in lines[0]
    assert "--label-smoothing 0.0" in lines[2] and "--label-smoothing" not in lines[0]
    assert "--tokenizer" not in lines[0]  # cosearch train's default
    assert not (tmp_path / "o").exists()


def test_more_seeds_start_at_the_first_seed_asked_for(capsys, tmp_path):
    assert fidelity.main(["--out", str(tmp_path / "o"), "--variants", "a:mode=none", "--supernet-seeds", "2",
                          "--first-seed", "1", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["a_seed1", "a_seed2"]
    assert "--seed 1" in lines[0] and "--seed 2" in lines[1]
    for bad in (["--first-seed", "-1"], ["--supernet-seeds", "0"]):
        with pytest.raises(SystemExit) as e:
            fidelity.main(["--out", str(tmp_path / "o"), "--variants", "a:mode=none", *bad, "--dry-run"])
        assert e.value.code == 2 and "--first-seed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as e:  # only a training run chooses seeds
        fidelity.main(["--rescore", "a.json", "--result", "b.json", "--first-seed", "1"])
    assert e.value.code == 2 and "--first-seed chooses the supernets to train" in capsys.readouterr().err
    # more seeds in the --out of seed 0 would drop seed 0 from its result: refused before any work
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "run_info.json").write_text(json.dumps({"supernets": {"a": {}}}))
    with pytest.raises(SystemExit) as e:
        fidelity.main(["--out", str(tmp_path / "o"), "--variants", "a:mode=none", "--first-seed", "1", "--dry-run"])
    assert e.value.code == 2 and "holds the checks of a, which this run would drop" in capsys.readouterr().err
    assert fidelity.main(["--out", str(tmp_path / "o"), "--variants", "a:mode=none", "--supernet-seeds", "2",
                          "--dry-run"]) == 0  # seed 0 again, and seed 1: nothing dropped


@pytest.mark.parametrize("flag, value, msg", [("--eval-tokens", "0", "--eval-tokens 0 is invalid"),
                                              ("--archs", "2", "--archs 2 is invalid"),
                                              ("--dropouts", "0.1,x", "--dropouts / --step-scales")])
def test_the_checks_settings_are_refused_before_any_training(capsys, tmp_path, flag, value, msg):
    with pytest.raises(SystemExit) as e:
        fidelity.main(["--out", str(tmp_path / "o"), flag, value, "--dry-run"])
    assert e.value.code == 2 and msg in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_the_tokenizer_is_passed_to_every_supernet(capsys, tmp_path):
    assert fidelity.main(["--out", str(tmp_path / "o"), "--variants", "a:mode=none", "--supernet-seeds", "2",
                          "--tokenizer", "bpe", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(" --tokenizer bpe" in ln for ln in lines)


def test_the_gpu_plan_runs_this_script_with_valid_arguments(capsys, tmp_path):
    import gpu_plans
    (job,) = gpu_plans.fidelity(out=str(tmp_path / "f"), variants="a:mode=none", dropouts="0,0.1")
    assert job.argv[1].endswith("benchmarks/fidelity.py") and job.done == f"{tmp_path / 'f'}/run_info.json"
    assert fidelity.main(list(job.argv[2:]) + ["--dry-run"]) == 0
    assert "--gpu" in capsys.readouterr().out


def _report(archs, inherited, standalone, metric="valid_loss"):
    rows = [{"arch": a, "weight_mb": 1.0, "params": 10 - k, "inherited": {metric: i}, "standalone": {metric: s}}
            for k, (a, i, s) in enumerate(zip(archs, inherited, standalone))]
    return {"summary": {metric: {}}, "per_arch": rows}


def test_variants_are_compared_with_the_first_on_the_same_archs(capsys):
    archs, ref = ["a", "b", "c", "d"], [1.0, 2.0, 3.0, 4.0]
    reports = {"none": _report(archs, [1, 2, 3, 4], ref), "none_seed1": _report(archs, [2, 1, 3, 4], ref),
               "layer": _report(archs, [4, 3, 2, 1], ref),  # ranks backwards: tau -1
               "moved": _report(["a", "b", "c", "e"], [1, 2, 3, 4], ref)}
    out = fidelity.compare_variants(reports)
    assert set(out) == {"layer"} and "moved: not compared" in capsys.readouterr().out
    c = out["layer"]
    assert c["baseline"] == "none" and (c["seeds_a"], c["seeds_b"]) == (1, 2) and c["headline"] == "valid_loss"
    assert c["kendall_b"] == pytest.approx([1.0, 4 / 6]) and c["kendall_diff"] == pytest.approx(-1 - 5 / 6)
    assert fidelity.compare_variants({"none": reports["none"]}) == {}
    back = fidelity.compare_variants(reports, [("none", "layer"), ("x", "none")])
    assert list(back) == ["none vs layer"] and back["none vs layer"]["kendall_diff"] == pytest.approx(1 + 5 / 6)
    assert "x vs none: not compared" in capsys.readouterr().out
    # against a proxy: params fall with the index, so bigger-is-better ranks like the reference (tau 1)
    proxy = fidelity.compare_variants(reports, [("layer", "params")])["layer vs params"]
    assert proxy["kendall_b"] == pytest.approx([1.0]) and proxy["kendall_diff"] == pytest.approx(-2.0)
    mixed = {**reports, "moved_seed1": _report(["a", "b", "c", "d"], [1, 2, 3, 4], ref)}
    assert fidelity.compare_variants(mixed, [("moved", "params")]) == {}
    assert "moved: not compared with params" in capsys.readouterr().out
    assert fidelity.parse_pairs("a:b, c_d0:a") == [("a", "b"), ("c_d0", "a")] and fidelity.parse_pairs("") is None
    for bad in ("a", "a:b:c", "a:1b"):
        with pytest.raises(SystemExit):
            fidelity.parse_pairs(bad)


def _row(k, inherited, standalone, seed2=None):
    point = {"dropout": 0.1, "steps": 10, "valid_loss": standalone}
    return {"arch": f"a{k}", "weight_mb": 1.0 + k, "params": 10 - k, "macs": 1, "decoder_params": 1,
            "inherited": {"valid_loss": inherited}, "standalone": point, "untuned": point, "sweep": [point],
            "seed2": None if seed2 is None else {"valid_loss": seed2}, "distilled": None}


def test_rescore_scores_kept_rows_again_and_keeps_what_it_cannot_redo(tmp_path):
    ref = [1.0, 2.0, 3.0, 4.0]
    noise = {0: 0.1, 1: -0.1}  # a second seed's result minus the first's on archs 0 and 1
    rows = {"none": [_row(k, i, s, s + noise[k] if k in noise else None) for k, (i, s) in enumerate(zip([2, 1, 3, 4], ref))],
            "layer": [_row(k, i, s) for k, (i, s) in enumerate(zip([1, 2, 3, 4], ref))]}
    stale = {"goals": {"tau": 0.0}, "summary": {}}
    kept = {"variant": "none", "baseline": "elsewhere", "kendall_diff": 0.5}
    old = {"settings": {"arch_seed": 0}, "reports": {k: {**stale, "per_arch": r} for k, r in rows.items()},
           "comparisons": {"layer": {"variant": "layer", "baseline": "none", "kendall_diff": 9.0},
                           "none vs elsewhere": kept}}
    src, dest = tmp_path / "old.json", tmp_path / "new.json"
    src.write_text(json.dumps(old))
    assert fidelity.main(["--rescore", str(src), "--result", str(dest)]) == 0
    new = json.loads(dest.read_text())
    assert new["reports"]["none"]["goals"]["tau"] == pytest.approx(4 / 6)  # one of six pairs swapped
    assert new["reports"]["layer"]["goals"]["tau"] == pytest.approx(1.0)
    ceiling = new["reports"]["none"]["summary"]["valid_loss"]["reference_ceiling"]
    # differences 0.1 and -0.1 about their mean 0: sigma^2 = (0.01 + 0.01) / (2 * (2 - 1))
    assert ceiling["noise_pairs"] == 2 and ceiling["noise_sd"] == pytest.approx(0.1)
    assert new["comparisons"]["layer"]["kendall_diff"] == pytest.approx(1 - 4 / 6)
    assert new["comparisons"]["none vs elsewhere"] == kept  # its baseline is in another JSON
    assert new["rescored"]["from"] == "old.json" and "commit" in new["rescored"]
    # what was there and now differs is recorded; new statistics (the summaries) are not changes
    changed = {c["path"]: (c["old"], c["new"]) for c in new["rescored"]["changed"]}
    assert set(changed) == {"reports.none.goals.tau", "reports.layer.goals.tau", "comparisons.layer.kendall_diff"}
    assert changed["reports.none.goals.tau"] == (0.0, pytest.approx(4 / 6))
    assert json.loads(src.read_text()) == old  # the source is only read
    assert "\n" not in dest.read_text().strip()  # laid out as the source: one line
    src.write_text(json.dumps(old, indent=1))
    assert fidelity.main(["--rescore", str(src), "--result", str(dest)]) == 0
    assert dest.read_text().count("\n") > 100 and json.loads(dest.read_text())["reports"] == new["reports"]
    # rescoring a rescored JSON keeps the earlier record
    again = tmp_path / "again.json"
    assert fidelity.main(["--rescore", str(dest), "--result", str(again)]) == 0
    twice = json.loads(again.read_text())
    assert twice["rescored_history"] == [json.loads(dest.read_text())["rescored"]]
    assert twice["rescored"]["changed"] == []  # nothing moved the second time
    with pytest.raises(SystemExit):
        fidelity.main(["--rescore", str(src)])


def _result_json(path, rows_by_key, arch_seed=0, **extra):
    path.write_text(json.dumps({"settings": {"arch_seed": arch_seed}, **extra,
                                "reports": {k: {"per_arch": r} for k, r in rows_by_key.items()}}))
    return path


def test_results_of_other_seeds_are_rescored_as_one(tmp_path, capsys):
    ref = [1.0, 2.0, 3.0, 4.0]
    rows = lambda inh: [_row(k, i, s) for k, (i, s) in enumerate(zip(inh, ref))]  # noqa: E731
    # seed 0 in one JSON (layer ranks perfectly, none swaps one pair), seed 1 of each in another
    a = _result_json(tmp_path / "a.json", {"none": rows([2, 1, 3, 4]), "layer": rows([1, 2, 3, 4])}, machine="gpu0",
                     comparisons={"layer": {"variant": "layer", "baseline": "none", "kendall_diff": 9.0}},
                     supernets={"none": {"train": {"lr": 0.001}}})
    a.write_text(json.dumps(json.loads(a.read_text()), indent=1))  # the first JSON's layout is kept
    b = _result_json(tmp_path / "b.json", {"none_seed1": rows([1, 2, 4, 3]), "layer_seed1": rows([1, 3, 2, 4])},
                     machine="gpu1", comparisons={"none vs params": {"variant": "none", "baseline": "params"}},
                     comparisons_valid={"stale": {}}, supernets={"none_seed1": {"train": {"lr": 0.001}}})
    dest = tmp_path / "ab.json"
    assert fidelity.main(["--rescore", f"{a},{b}", "--result", str(dest)]) == 0
    got = json.loads(dest.read_text())
    assert dest.read_text().count("\n") > 100
    assert list(got["reports"]) == ["none", "layer", "none_seed1", "layer_seed1"]
    assert list(got["comparisons"]) == ["layer", "none vs params"]  # each JSON's, redone
    c = got["comparisons"]["layer"]  # both seeds of each variant pooled
    assert (c["seeds_a"], c["seeds_b"]) == (2, 2)
    assert c["kendall_a"] == pytest.approx([1.0, 4 / 6]) and c["kendall_b"] == pytest.approx([4 / 6, 4 / 6])
    assert c["kendall_diff"] == pytest.approx((1 + 4 / 6) / 2 - 4 / 6)
    assert got["comparisons"]["none vs params"]["seeds_a"] == 2
    assert got["machine"] == "gpu0" and got["merged"] == [{"from": "b.json", "settings": {"arch_seed": 0},
                                                          "machine": "gpu1",
                                                          "supernets": {"none_seed1": {"train": {"lr": 0.001}}}}]
    assert got["rescored"]["from"] == "a.json,b.json"
    assert got["rescored"]["changed"] == []  # pooled seeds are new comparisons, not moved statistics
    # refused before anything is written: a report in both, other archs, other standalone
    # runs (without --reference-parts), another arch seed
    other_ref = [_row(k, i, s + 0.5) for k, (i, s) in enumerate(zip([1, 2, 3, 4], ref))]
    moved = rows([1, 2, 3, 4])
    moved[0]["arch"] = "z"
    bad = {"both hold a report none": {"none": rows([1, 2, 3, 4])},
           "checked other archs": {"none_seed2": moved},
           "other standalone runs": {"none_seed2": other_ref}}
    for msg, reps in bad.items():
        c_json = _result_json(tmp_path / "c.json", reps)
        with pytest.raises(SystemExit) as e:
            fidelity.main(["--rescore", f"{a},{c_json}", "--result", str(tmp_path / "no.json")])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    # seeds of one name from supernets of other recipes or step counts
    c_json = _result_json(tmp_path / "c.json", {"none_seed2": rows([1, 2, 3, 4])},
                          supernets={"none_seed2": {"train": {"lr": 0.002}}})
    with pytest.raises(SystemExit) as e:
        fidelity.main(["--rescore", f"{a},{c_json}", "--result", str(tmp_path / "no.json")])
    assert e.value.code == 2 and "trained with other lr (0.001 vs 0.002)" in capsys.readouterr().err
    steps = json.loads(a.read_text())
    steps["reports"]["none"]["supernet"] = {"steps_planned": 300}
    a2 = tmp_path / "a2.json"
    a2.write_text(json.dumps(steps))
    c_json = _result_json(tmp_path / "c.json", {"none_seed2": rows([1, 2, 3, 4])})
    c_doc = json.loads(c_json.read_text())
    c_doc["reports"]["none_seed2"]["supernet"] = {"steps_planned": 900}
    c_json.write_text(json.dumps(c_doc))
    with pytest.raises(SystemExit) as e:
        fidelity.main(["--rescore", f"{a2},{c_json}", "--result", str(tmp_path / "no.json")])
    assert e.value.code == 2 and "seeds of none come from supernets of other step counts" in capsys.readouterr().err
    c_json = _result_json(tmp_path / "c.json", {"none_seed2": rows([1, 2, 3, 4])}, arch_seed=3)
    with pytest.raises(SystemExit) as e:
        fidelity.main(["--rescore", f"{a},{c_json}", "--result", str(tmp_path / "no.json")])
    assert e.value.code == 2 and "arch seeds differ" in capsys.readouterr().err
    assert not (tmp_path / "no.json").exists()


def test_report_only_keeps_the_comparisons_the_run_was_given(tmp_path, monkeypatch):
    import cosearch.fidelity.run as fidelity_run
    archs, ref = ["a", "b", "c", "d"], [1.0, 2.0, 3.0, 4.0]
    reports = {"none": _report(archs, [1, 2, 3, 4], ref), "layer": _report(archs, [4, 3, 2, 1], ref)}
    for r in reports.values():
        r.update(goals={}, supernet=None)
    monkeypatch.setattr(fidelity_run, "write_report", lambda folder: reports[Path(folder).name])
    out = tmp_path / "o"
    out.mkdir()
    info = {"variants": {"none": {}, "layer": {}}, "settings": {"compare": "none:params,layer:none"}}
    (out / "run_info.json").write_text(json.dumps(info))
    assert fidelity.main(["--out", str(out), "--report-only"]) == 0
    got = json.loads((out / "result.json").read_text())["comparisons"]
    assert list(got) == ["none vs params", "layer"]  # against the first variant: named by the variant alone
    assert got["layer"]["kendall_diff"] == pytest.approx(-2.0)
    assert fidelity.main(["--out", str(out), "--report-only", "--compare", "none:layer"]) == 0
    assert list(json.loads((out / "result.json").read_text())["comparisons"]) == ["none vs layer"]


@pytest.mark.slow
def test_a_run_against_an_earlier_reference_trains_only_its_supernets(tmp_path, capsys, monkeypatch):
    from train_fixtures import write_lm_text
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = write_lm_text(tmp_path / "t.txt")
    common = ["--space", "tiny_lm", "--task", "lm", "--data", str(data), "--steps", "4", "--max-tokens", "64",
              "--max-len", "16", "--archs", "3", "--per-bin", "3", "--noise-archs", "0", "--parallel", "1",
              "--eval-tokens", "32"]
    ref = tmp_path / "ref"
    assert fidelity.main([*common, "--out", str(ref), "--variants", "a:mode=none"]) == 0
    assert json.loads((ref / "fidelity" / "a" / "plan.json").read_text())["settings"]["eval_tokens"] == 32
    measured = json.loads((ref / "fidelity" / "a" / "measured.json").read_text())
    kept = json.loads((ref / "result.json").read_text())["reports"]["a"]  # what a later rescoring compares
    assert kept["tokenizer"] == measured["tokenizer"] and kept["max_tokens"] == measured["max_tokens"] == 4096
    assert kept["settings"]["eval_tokens"] == 32
    capsys.readouterr()
    out = tmp_path / "new"
    assert fidelity.main([*common, "--out", str(out), "--variants", "b:mode=none,deep_random=0",
                          "--standalone-from", str(ref / "fidelity" / "a")]) == 0
    assert not any((out / "standalone").glob("sa-*")) and not (out / "fidelity" / "b" / "jobs").exists()
    rep = json.loads((out / "result.json").read_text())["reports"]["b"]
    mine = json.loads((ref / "result.json").read_text())["reports"]["a"]
    assert [r["standalone"] for r in rep["per_arch"]] == [r["standalone"] for r in mine["per_arch"]]
    assert json.loads((out / "fidelity" / "b" / "fidelity.json").read_text())["jobs"]["from"] == \
        str((ref / "fidelity" / "a").resolve())
    # a reference that cannot serve is refused before the supernets train
    bad = tmp_path / "bad"
    with pytest.raises(SystemExit, match="has no score of 3 of this check's 3"):
        fidelity.main([*common, "--out", str(bad), "--variants", "b:mode=none", "--standalone-steps", "5",
                       "--standalone-from", str(ref / "fidelity" / "a")])
    assert not (bad / "supernets" / "b" / "summary.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("check_trains_it", [True, False])
def test_a_standalone_run_the_wave_lost_is_no_failure_once_a_check_trained_it(tmp_path, monkeypatch, check_trains_it):
    """A standalone run that dies in the wave (e.g. out of GPU memory beside the others) is
    trained by the check; the result is then written, and the retry recorded. If the check
    cannot train it either, it stays a failure. (A relative --out, too.)"""
    import cosearch.fidelity.run
    import cosearch.jobs
    from train_fixtures import write_lm_text
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    real, lost = cosearch.jobs.run_jobs, []

    def dead(job_name, root):
        return cosearch.jobs.JobResult(job_name, 1, 0.0, False, Path(root) / job_name / "log.txt", "CUDA out of memory")

    def wave_loses_one(jobs, root, **kw):  # the first call with standalone jobs: one of them "dies"
        standalone = [j for j in jobs if j.name.startswith("sa-")]
        if not standalone or lost:
            return real(jobs, root, **kw)
        lost.append(standalone[0].name)
        done = {r.name: r for r in real([j for j in jobs if j.name != lost[0]], root, **kw)}
        return [done.get(j.name) or dead(j.name, root) for j in jobs]

    def check_loses_it_again(jobs, root, **kw):
        done = {r.name: r for r in real([j for j in jobs if j.name not in lost], root, **kw)}
        return [done.get(j.name) or dead(j.name, root) for j in jobs]

    monkeypatch.setattr(cosearch.jobs, "run_jobs", wave_loses_one)
    if not check_trains_it:
        monkeypatch.setattr(cosearch.fidelity.run, "run_jobs", check_loses_it_again)
    monkeypatch.chdir(tmp_path)
    rc = fidelity.main(["--space", "tiny_lm", "--task", "lm", "--data", str(write_lm_text(tmp_path / "t.txt")),
                        "--steps", "2", "--max-tokens", "64", "--max-len", "16", "--archs", "3", "--per-bin", "3",
                        "--noise-archs", "0", "--parallel", "1", "--out", "o", "--variants", "a:mode=none"])
    info = json.loads((tmp_path / "o" / "run_info.json").read_text())
    assert len(lost) == 1
    if check_trains_it:
        assert rc == 0 and info["failed"] == {} and info["retried_by_checks"] == lost
        assert (tmp_path / "o" / "standalone" / lost[0] / "run" / "summary.json").is_file()
        assert (tmp_path / "o" / "result.json").is_file()
    else:
        assert rc == 1 and lost[0] in info["failed"] and "fidelity-a" in info["failed"]
        assert info["retried_by_checks"] == [] and not (tmp_path / "o" / "result.json").exists()


@pytest.mark.slow
def test_seeds_of_one_variant_trained_with_other_settings_are_not_pooled(tmp_path, monkeypatch):
    from train_fixtures import write_lm_text
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = write_lm_text(tmp_path / "t.txt")
    out = tmp_path / "o"
    argv = ["--space", "tiny_lm", "--task", "lm", "--data", str(data), "--steps", "2", "--max-tokens", "64",
            "--max-len", "16", "--archs", "3", "--per-bin", "3", "--noise-archs", "0", "--parallel", "1",
            "--out", str(out), "--variants", "a:mode=none"]
    assert fidelity.main(argv) == 0
    config = out / "supernets" / "a" / "config.json"  # seed 0 as a run from before deep members were a default
    c = json.loads(config.read_text())
    del c["train"]["deep_random"]
    config.write_text(json.dumps(c))
    with pytest.raises(SystemExit, match=r"a: a was trained with deep_random=0, a_seed1 with 1 .*add deep_random=0"):
        fidelity.main(argv + ["--supernet-seeds", "2"])
    # how often a run logs or checkpoints is not its recipe: recorded otherwise, still one recipe
    assert fidelity.train_difference({"a": {"lr": 0.1, "ckpt_every": 243, "log_every": 10},
                                      "a_seed1": {"lr": 0.1, "ckpt_every": 500, "log_every": 1}}) is None
    assert fidelity.train_difference({"a": {"lr": 0.1}, "a_seed1": {"lr": 0.2}})[3:] == ("lr", 0.1, 0.2)


def _check_report(inherited, standalone, steps=300):
    """A check's report as `cosearch fidelity` builds it: 4 archs of 1 MB, test and valid loss."""
    rows = [{"arch": a, "axis": 1.0, "weight_mb": 1.0, "params": 10 - k,
             "inherited": {"test_loss": i, "valid_loss": i}, "standalone": {"test_loss": r, "valid_loss": r}}
            for k, (a, i, r) in enumerate(zip("abcd", inherited, standalone))]
    return {"run": None, "supernet": {"steps_planned": steps}, "settings": {"archs": 4}, "goals": {},
            "summary": {"test_loss": {}, "valid_loss": {}}, "per_arch": rows}


def test_checks_made_by_the_command_are_gathered_and_compared(tmp_path, monkeypatch, capsys):
    import cosearch.fidelity.run as fidelity_run
    ref = [1.0, 2.0, 3.0, 4.0]
    reports = {"x": _check_report([1, 2, 3, 4], ref), "y": _check_report([2, 1, 3, 4], ref),
               "z": _check_report([4, 3, 2, 1], ref), "other": _check_report([1, 2, 3, 4], ref[::-1]),
               "longer": _check_report([1, 2, 3, 4], ref, steps=600)}
    for name in reports:
        (tmp_path / name).mkdir()
        for f in ("plan.json", "measured.json"):
            (tmp_path / name / f).write_text("{}")
    for name, steps in (("ra", 300), ("rb", 600)):  # checks of supernets whose config.json is here
        reports[name] = dict(_check_report([1, 2, 3, 4], ref), run=str(tmp_path / f"run_{name}"))
        (tmp_path / f"run_{name}").mkdir()
        (tmp_path / f"run_{name}" / "config.json").write_text(json.dumps({"train": {"steps": steps}}))
        (tmp_path / name).mkdir()
        for f in ("plan.json", "measured.json"):
            (tmp_path / name / f).write_text("{}")
    (tmp_path / "noplan").mkdir()
    (tmp_path / "noplan" / "measured.json").write_text("{}")
    monkeypatch.setattr(fidelity_run, "read_report", lambda folder: reports[Path(folder).name])
    result = tmp_path / "r.json"
    checks = f"v={tmp_path / 'x'},v_seed1={tmp_path / 'y'},w={tmp_path / 'z'}"
    assert fidelity.main(["--checks", checks, "--compare", "v:w,w:params", "--result", str(result)]) == 0
    got = json.loads(result.read_text())
    assert list(got["reports"]) == ["v", "v_seed1", "w"] and got["checks"]["w"] == str(tmp_path / "z")
    assert got["reports"]["w"]["settings"] == {"archs": 4} and "--compare v:w,w:params" in got["command"]
    assert list(got["comparisons"]) == ["v vs w", "w vs params"] and list(got["comparisons_valid"]) == list(
        got["comparisons"])
    c = got["comparisons"]["v vs w"]  # v's two seeds (tau 1 and 4/6) against w's one (tau -1)
    assert (c["seeds_a"], c["seeds_b"], c["headline"]) == (2, 1, "test_loss")
    assert c["kendall_diff"] == pytest.approx((1 + 4 / 6) / 2 + 1)
    assert got["comparisons"]["w vs params"]["kendall_diff"] == pytest.approx(-2.0)  # params 10..7: tau 1
    # other variants may come from other recipes (that is what they compare)
    assert fidelity.main(["--checks", f"v={tmp_path / 'ra'},w={tmp_path / 'rb'}", "--result", str(result)]) == 0
    capsys.readouterr()
    for bad, msg in ((f"v={tmp_path / 'x'},v_seed1={tmp_path / 'y'},w={tmp_path / 'other'}", "other standalone runs"),
                     (f"v={tmp_path / 'x'},v_seed1={tmp_path / 'longer'}", "other step counts"),
                     (f"v={tmp_path / 'ra'},v_seed1={tmp_path / 'rb'}", "trained with other steps"),
                     (f"v={tmp_path / 'x'},v={tmp_path / 'y'}", "named twice"),
                     (f"v={tmp_path / 'x'},w={tmp_path / 'x'}", "same check"),
                     (f"v={tmp_path / 'nowhere'}", "no plan.json"), (f"v={tmp_path / 'noplan'}", "no plan.json"),
                     ("v", "NAME=FOLDER"), ("v=", "NAME=FOLDER"), (f"1x={tmp_path / 'x'}", "NAME=FOLDER"),
                     (f"v_seedx={tmp_path / 'x'}", "NAME=FOLDER"), (",", "at least one")):
        with pytest.raises(SystemExit, match=msg) as e:
            fidelity.main(["--checks", bad, "--result", str(tmp_path / "bad.json")])
        assert e.value.code == 2 and msg.split()[0] in capsys.readouterr().err
    with pytest.raises(SystemExit, match="neither a checked variant nor a proxy|neither a checked variant"):
        fidelity.main(["--checks", checks, "--compare", "v:W", "--result", str(tmp_path / "bad.json")])
    assert not (tmp_path / "bad.json").exists()
    with pytest.raises(SystemExit, match="needs --result"):
        fidelity.main(["--checks", checks])


def _part_plan(archs, shard, dropouts=(0.1,), names="gh", noise=True, steps=10):
    """A `cosearch fidelity --shard` plan.json of tiny_lm archs planned from a run of dropout
    ``dropouts[0]``: one grid run per arch and dropout (g0, g1, ...; with a second dropout also
    h0, h1, ...) and, with ``noise``, a second seed (n1) of arch 1."""
    from cosearch.space import SearchSpace
    space = SearchSpace.load("tiny_lm").to_dict()
    space["dropout"] = dropouts[0]
    n = len(archs)
    jobs = [{"arch": i, "dropout": d, "steps": steps, "seed": 0, "teacher": False, "role": "grid", "name": f"{g}{i}"}
            for i in range(n) for d, g in zip(dropouts, names)] + [
        {"arch": 1, "dropout": dropouts[0], "steps": steps, "seed": 1, "teacher": False, "role": "noise",
         "name": "n1"}] * noise
    return {"run": "sup", "settings": {"seq_len": 16, "seed": 0, "shard": shard, "steps": steps,
                                       "noise_archs": int(noise), "dropouts": list(dropouts[1:])}, "archs": archs,
            "labels": [f"b0-{i}" for i in range(n)], "bins": [0] * n, "kinds": ["uniform"] * n, "axis": [1.0] * n,
            "in_band": [True] * n, "centres": [1.0], "space": space, "jobs": jobs, "noise": [1] * noise,
            "distilled": [], "format": 1}


def test_kept_rows_are_scored_against_the_parts_of_a_reference_trained_so_far(tmp_path, capsys):
    import numpy as np
    from cosearch.space import SearchSpace
    space = SearchSpace.load("tiny_lm")
    archs = [space.sample(np.random.default_rng(s)).to_dict() for s in range(4)]
    old_sa = {"valid_loss": 9.0, "test_loss": 9.0}
    rows = [{"arch": a, "inherited": {"valid_loss": i, "test_loss": i}, "standalone": old_sa, "untuned": old_sa,
             "sweep": [old_sa], "seed2": None, "distilled": None} for a, i in zip(archs, [1.0, 2.0, 3.0, 4.0])]
    # gathered checks (--checks) carry no run settings: the seed is their plans'
    src = tmp_path / "r.json"
    comparisons = {"v vs params": {"variant": "v", "baseline": "params", "n": 4, "kendall_diff": 9.0},
                   "v vs w": {"variant": "v", "baseline": "w", "n": 4, "kendall_diff": 9.0}}  # w: another JSON's
    src.write_text(json.dumps({"settings": {"old": 1}, "reports": {"v": {"settings": {"seed": 0, "steps": 5},
                                                                        "tokenizer": "t", "per_arch": rows}},
                               "comparisons": comparisons}))

    def score(x):
        return {"valid_loss": x, "test_loss": x + 0.5, "step": 10}
    parts = {"p1": ("1/2", {"g0": score(1.0), "g1": score(3.0), "n1": score(3.1)}), "p2": ("2/2", {"g2": score(2.0)})}
    for name, (shard, scores) in parts.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "plan.json").write_text(json.dumps(_part_plan(archs, shard)))
        (tmp_path / name / "measured.json").write_text(json.dumps({"standalone": scores, "tokenizer": "t"}))
    given = f"{tmp_path / 'p1'},{tmp_path / 'p2'}"
    dest = tmp_path / "new.json"
    assert fidelity.main(["--rescore", str(src), "--reference-parts", given, "--result", str(dest)]) == 0
    new = json.loads(dest.read_text())
    got = new["reports"]["v"]
    assert [r["standalone"] and r["standalone"]["valid_loss"] for r in got["per_arch"]] == [1.0, 3.0, 2.0, None]
    assert got["per_arch"][1]["seed2"] == score(3.1) and got["per_arch"][3]["sweep"][0]["job"] == "g3"
    # archs 0-2 only (arch 3 not trained yet): inherited 1 < 2 < 3 against 1, 3, 2: one of 3 pairs swapped
    assert got["summary"]["valid_loss"]["inherited"]["n"] == 3
    assert got["summary"]["valid_loss"]["inherited"]["kendall_tau"] == pytest.approx(1 / 3)
    assert got["summary"]["test_loss"]["gap"]["mean"] == pytest.approx(((1 - 1.5) + (2 - 3.5) + (3 - 2.5)) / 3)
    assert new["reference_parts"] == {"folders": [str(tmp_path / "p1"), str(tmp_path / "p2")],
                                      "shards": ["1/2", "2/2"], "steps": 10, "tokenizer": "t", "jobs_planned": 5,
                                      "jobs_measured": 4, "archs_measured": 3, "archs_partly_measured": 0}
    assert new["rescored"]["changed"] == []  # every standalone value is another: not listed one by one
    assert "--reference-parts" in new["rescored"]["command"]
    # the source's own fields describe its reference: kept aside; its settings are the parts' now
    assert new["source"] == {"settings": {"old": 1}} and got["settings"]["steps"] == 10
    assert list(new["comparisons"]) == ["v vs params"] and new["comparisons_dropped"] == ["v vs w"]
    assert new["comparisons"]["v vs params"]["n"] == 3  # redone on the archs the parts scored
    # a later seed of v, checked against another reference, read against the parts with the first
    rows1 = [{**r, "inherited": {"valid_loss": i, "test_loss": i}, "standalone": {"valid_loss": 7.0, "test_loss": 7.0}}
             for r, i in zip(rows, [1.0, 3.0, 2.0, 4.0])]
    src1 = tmp_path / "r1.json"
    src1.write_text(json.dumps({"settings": {"other": 2}, "reports": {"v_seed1": {"settings": {"seed": 0, "steps": 5},
                                                                                  "tokenizer": "t",
                                                                                  "per_arch": rows1}}}))
    both = tmp_path / "both.json"
    assert fidelity.main(["--rescore", f"{src},{src1}", "--reference-parts", given, "--result", str(both)]) == 0
    two = json.loads(both.read_text())
    seed1 = two["reports"]["v_seed1"]
    assert [r["standalone"] and r["standalone"]["valid_loss"] for r in seed1["per_arch"]] == [1.0, 3.0, 2.0, None]
    assert seed1["summary"]["valid_loss"]["inherited"]["kendall_tau"] == pytest.approx(1.0)  # 1, 3, 2 against 1, 3, 2
    assert two["reports"]["v"]["summary"] == got["summary"]
    assert two["comparisons"]["v vs params"]["seeds_a"] == 2
    assert two["source"]["merged"] == [{"from": "r1.json", "settings": {"other": 2}}]
    with pytest.raises(SystemExit, match="other standalone runs"):  # without the parts: two references
        fidelity.main(["--rescore", f"{src},{src1}", "--result", str(tmp_path / "bad.json")])

    def refused(args, msg):
        with pytest.raises(SystemExit, match=msg) as e:
            fidelity.main(["--rescore", str(src), *args, "--result", str(tmp_path / "bad.json")])
        assert e.value.code == 2 and not (tmp_path / "bad.json").exists()
        capsys.readouterr()

    def part(name, shard="1/2", scores=None, tokenizer="t", plan_archs=archs):
        (tmp_path / name).mkdir()
        (tmp_path / name / "plan.json").write_text(json.dumps(_part_plan(plan_archs, shard)))
        (tmp_path / name / "measured.json").write_text(json.dumps({"standalone": scores or {}, "tokenizer": tokenizer}))
        return str(tmp_path / name)
    refused(["--reference-parts", f"{tmp_path / 'p1'},{part('again')}"], "both part 1/2")
    refused(["--reference-parts", f"{tmp_path / 'p1'},{part('third', '2/3')}"], "other splits")
    refused(["--reference-parts", f"{tmp_path / 'p1'},{part('clash', '2/2', {'g0': score(5.0)})}"], "other scores")
    refused(["--reference-parts", f"{tmp_path / 'p1'},{part('tok', '2/2', tokenizer='u')}"], "other tokenizers")
    refused(["--reference-parts", f"{tmp_path / 'p1'},{part('moved', '2/2', plan_archs=archs[::-1])}"],
            "planned otherwise")
    refused(["--reference-parts", part("whole", None)], "not a part")
    refused(["--reference-parts", part("beyond", "3/2")], "is not K/N")
    refused(["--reference-parts", str(tmp_path / "nowhere")], "plan.json does not exist")
    for name, plan, measured in (("mlist", {}, []), ("plist", [], {"standalone": {}}),
                                 ("slist", None, {"standalone": []}), ("nojobs", "drop jobs", {"standalone": {}})):
        folder = tmp_path / name
        folder.mkdir()
        good = _part_plan(archs, "2/2")
        plan = good if plan is None else ({k: v for k, v in good.items() if k != "jobs"} if plan == "drop jobs"
                                          else plan)
        (folder / "plan.json").write_text(json.dumps(plan))
        (folder / "measured.json").write_text(json.dumps(measured))
        refused(["--reference-parts", f"{tmp_path / 'p1'},{folder}"], "lacks what a fidelity check writes")
    other_tokens = tmp_path / "tok.json"  # a check scored with another tokenizer than the parts
    other_tokens.write_text(json.dumps({"reports": {"v": {"settings": {"seed": 0}, "tokenizer": "u",
                                                          "per_arch": rows}}}))
    with pytest.raises(SystemExit, match="scored with tokenizer u, the parts with t") as e:
        fidelity.main(["--rescore", str(other_tokens), "--reference-parts", given, "--result",
                       str(tmp_path / "bad.json")])
    assert e.value.code == 2 and not (tmp_path / "bad.json").exists()
    # a prefix (--eval-tokens) is cut into batches of --max-tokens: other batches, other tokens
    def prefix_part(name, shard, batch, scores):
        plan = _part_plan(archs, shard)
        plan["settings"]["eval_tokens"] = 100
        (tmp_path / name).mkdir()
        (tmp_path / name / "plan.json").write_text(json.dumps(plan))
        (tmp_path / name / "measured.json").write_text(json.dumps({"standalone": scores, "tokenizer": "t",
                                                                   "max_tokens": batch}))
        return str(tmp_path / name)
    e1, e2 = prefix_part("e1", "1/2", 4096, {"g0": score(1.0)}), prefix_part("e2", "2/2", 4096, {"g2": score(2.0)})
    e3 = prefix_part("e3", "2/2", 512, {"g2": score(2.0)})
    prefixed = tmp_path / "prefix.json"
    for batch in (4096, 512):
        prefixed.write_text(json.dumps({"reports": {"v": {"settings": {"seed": 0, "eval_tokens": 100},
                                                          "tokenizer": "t", "max_tokens": batch, "per_arch": rows}}}))
        argv = ["--rescore", str(prefixed), "--reference-parts", f"{e1},{e2}", "--result", str(tmp_path / "p.json")]
        if batch == 4096:
            assert fidelity.main(argv) == 0
        else:
            with pytest.raises(SystemExit, match="in batches of 512, the parts in 4096") as e:
                fidelity.main(argv)
            assert e.value.code == 2
    capsys.readouterr()
    refused_parts = ["--rescore", str(prefixed), "--reference-parts", f"{e1},{e3}", "--result", str(tmp_path / "b.json")]
    with pytest.raises(SystemExit, match="batches of 512, 4096: other tokens") as e:
        fidelity.main(refused_parts)
    assert e.value.code == 2 and not (tmp_path / "b.json").exists()
    scored_otherwise = tmp_path / "seq.json"  # checks scored on other token windows than the parts
    scored_otherwise.write_text(json.dumps({"reports": {"v": {"settings": {"seed": 0, "seq_len": 99},
                                                              "per_arch": rows}}}))
    with pytest.raises(SystemExit, match="scored with seq_len 99") as e:
        fidelity.main(["--rescore", str(scored_otherwise), "--reference-parts", given, "--result",
                       str(tmp_path / "bad.json")])
    for bad in ({"reports": {}}, [], {"reports": {"v": {"per_arch": [{"arch": 1}]}}}):
        (tmp_path / "badsrc.json").write_text(json.dumps(bad))
        with pytest.raises(SystemExit, match="holds no reports with per-arch rows") as e:
            fidelity.main(["--rescore", str(tmp_path / "badsrc.json"), "--result", str(tmp_path / "bad.json")])
        assert e.value.code == 2 and not (tmp_path / "bad.json").exists()
    fewer = tmp_path / "fewer.json"  # a check of other archs than the parts'
    fewer.write_text(json.dumps({"reports": {"v": {"settings": {"seed": 0}, "per_arch": rows[:3]}}}))
    with pytest.raises(SystemExit, match="other archs") as e:
        fidelity.main(["--rescore", str(fewer), "--reference-parts", given, "--result", str(tmp_path / "bad.json")])
    assert e.value.code == 2 and not (tmp_path / "bad.json").exists()
    for args in (["--reference-parts", given, "--result", str(dest)],
                 ["--rescore", str(src), "--reference-parts", ","]):
        with pytest.raises(SystemExit) as e:
            fidelity.main(args)
        assert e.value.code == 2 and "--reference-parts" in capsys.readouterr().err


def test_an_arch_whose_sweep_the_parts_have_scored_only_in_part_is_left_out(tmp_path):
    import numpy as np
    from cosearch.space import SearchSpace
    space = SearchSpace.load("tiny_lm")
    archs = [space.sample(np.random.default_rng(s)).to_dict() for s in range(4)]
    rows = [{"arch": a, "inherited": {"valid_loss": i}, "standalone": None}
            for a, i in zip(archs, [1.0, 2.0, 3.0, 4.0])]
    src = tmp_path / "r.json"
    src.write_text(json.dumps({"reports": {"v": {"per_arch": rows}}}))

    def score(x):
        return {"valid_loss": x, "step": 10}
    # two dropouts per arch: arch 0 has both points, arch 1 only h1 (g1 is in part 2, not trained yet)
    for name, shard, scores in (("p1", "1/2", {"g0": score(2.0), "h0": score(1.0), "h1": score(5.0),
                                               "g2": score(3.0), "h2": score(3.5), "g3": score(4.0),
                                               "h3": score(4.5)}),):
        (tmp_path / name).mkdir()
        (tmp_path / name / "plan.json").write_text(json.dumps(_part_plan(archs, shard, dropouts=(0.1, 0.2))))
        (tmp_path / name / "measured.json").write_text(json.dumps({"standalone": scores, "tokenizer": "t"}))
    dest = tmp_path / "new.json"
    assert fidelity.main(["--rescore", str(src), "--reference-parts", str(tmp_path / "p1"), "--result", str(dest)]) == 0
    new = json.loads(dest.read_text())
    got = new["reports"]["v"]["per_arch"]
    # the best point by validation loss where the whole sweep is scored; none for arch 1
    assert [r["standalone"] and r["standalone"]["valid_loss"] for r in got] == [1.0, None, 3.0, 4.0]
    assert (new["reference_parts"]["archs_measured"], new["reference_parts"]["archs_partly_measured"]) == (3, 1)
    assert new["reference_parts"]["jobs_measured"] == 7


def test_references_planned_from_runs_of_other_dropouts_are_the_points_of_a_sweep(tmp_path, capsys):
    import numpy as np
    from cosearch.space import SearchSpace
    space = SearchSpace.load("tiny_lm")
    archs = [space.sample(np.random.default_rng(s)).to_dict() for s in range(4)]
    rows = [{"arch": a, "inherited": {"valid_loss": i}, "standalone": None}
            for a, i in zip(archs, [1.0, 2.0, 3.0, 4.0])]
    src = tmp_path / "r.json"
    src.write_text(json.dumps({"reports": {"v": {"settings": {"seed": 0}, "per_arch": rows}}}))

    def score(x):
        return {"valid_loss": x, "step": 10}

    def part(name, shard, scores, **plan):
        (tmp_path / name).mkdir()
        (tmp_path / name / "plan.json").write_text(json.dumps(_part_plan(archs, shard, **plan)))
        (tmp_path / name / "measured.json").write_text(json.dumps({"standalone": scores, "tokenizer": "t"}))
        return str(tmp_path / name)
    # the run's own dropout 0.1 (runs g*, seed noise n1) in two parts; dropout 0.3 (runs h*, no noise) in one
    base = [part("a1", "1/2", {"g0": score(2.0), "g1": score(1.0), "n1": score(1.1)}),
            part("a2", "2/2", {"g2": score(3.0), "g3": score(4.0)})]
    point = part("b1", "1/1", {f"h{i}": score(x) for i, x in enumerate([1.5, 3.0, 2.5, 4.5])},
                 dropouts=(0.3,), names="h", noise=False)
    dest = tmp_path / "new.json"
    assert fidelity.main(["--rescore", str(src), "--reference-parts", ",".join([*base, point]),
                          "--result", str(dest)]) == 0
    new = json.loads(dest.read_text())
    got = new["reports"]["v"]["per_arch"]
    # each arch's sweep: the run's own dropout first; its standalone is the lower validation loss
    assert [[p["dropout"] for p in r["sweep"]] for r in got] == [[0.1, 0.3]] * 4
    assert [r["standalone"]["valid_loss"] for r in got] == [1.5, 1.0, 2.5, 4.0]
    assert [r["untuned"]["valid_loss"] for r in got] == [2.0, 1.0, 3.0, 4.0]
    assert got[1]["seed2"] == score(1.1)
    assert new["reports"]["v"]["settings"]["dropouts"] == [0.3]
    assert new["reference_parts"]["sweep_dropouts"] == [0.1, 0.3] and new["reference_parts"]["jobs_planned"] == 9
    # inherited 1 < 2 < 3 < 4 against the tuned 1.5, 1.0, 2.5, 4.0: one of six pairs swapped
    assert new["reports"]["v"]["summary"]["valid_loss"]["inherited"]["kendall_tau"] == pytest.approx(4 / 6)

    def refused(folders, msg):
        with pytest.raises(SystemExit, match=msg) as e:
            fidelity.main(["--rescore", str(src), "--reference-parts", ",".join(folders), "--result",
                           str(tmp_path / "bad.json")])
        assert e.value.code == 2 and not (tmp_path / "bad.json").exists()
        capsys.readouterr()
    # another dropout and other steps: not a sweep point of this reference
    refused([*base, part("c1", "1/1", {}, dropouts=(0.3,), names="h", noise=False, steps=20)],
            "beyond the run's dropout")
    # the run's own dropout again, planned otherwise: not a part of it
    refused([*base, part("d1", "1/1", {}, names="k")], "planned otherwise than")
    # a point that is the first reference's own sweep point
    refused([part("e1", "1/1", {}, dropouts=(0.1, 0.3)), point], "already")


def test_the_seed_of_a_result_is_its_runs_or_its_gathered_checks():
    assert fidelity.check_seed({"settings": {"arch_seed": 3}, "reports": {"v": {"settings": {"seed": 7}}}}) == 3
    assert fidelity.check_seed({"reports": {"v": {"settings": {"seed": 7}}, "w": {"settings": {"seed": 0}}}}) == 7
    assert fidelity.check_seed({"reports": {"v": {}}}) == 0
