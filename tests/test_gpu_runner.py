"""benchmarks/gpu_runner.py: a plan's jobs run as Ray tasks, in order, and are packed."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_runner.py"
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_the_smoke_plan_trains_then_evaluates_and_a_rerun_skips_it(tmp_path):
    root, out = tmp_path / "root", tmp_path / "smoke"
    cmd = [sys.executable, str(RUNNER), "run", "smoke", "--root", str(root), "--set", f"out={out}", "--set", "steps=2"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    status = json.loads((root / "status.json").read_text())
    assert [(j["name"], j["returncode"]) for j in status["jobs"]] == [("train_tiny", 0), ("eval_tiny", 0)]
    assert "loss" in json.loads((out / "eval_smallest.json").read_text())  # eval ran after training
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    again = json.loads((root / "status.json").read_text())
    assert [j["skipped"] for j in again["jobs"]] == [True, True]
    subprocess.run([sys.executable, str(RUNNER), "wait", "--root", str(root), "--for", "1",
                    "--pack", str(tmp_path / "r.tgz")], check=True, capture_output=True, timeout=60)
    with tarfile.open(tmp_path / "r.tgz") as tar:
        names = tar.getnames()
    assert "root/status.json" in names and "root/eval_tiny/log.txt" in names
    assert not any(n.endswith(".pt") for n in names)


def test_an_optional_measurement_that_fails_does_not_skip_the_jobs_after_it(tmp_path):
    sys.path.insert(0, str(RUNNER.parent))
    from gpu_plans import _optional

    from cosearch.jobs import Job, run_jobs
    failing = _optional(Job("measure", ("sh", "-c", "exit 3"), done=str(tmp_path / "r" / "m.json")))
    after = Job("next", ("sh", "-c", f"touch {tmp_path / 'next'}"), done=str(tmp_path / "next"), after=("measure",))
    res = {r.name: r for r in run_jobs([failing, after], tmp_path / "root", parallel=1, progress=False)}
    assert res["next"].ok and not res["next"].skipped and (tmp_path / "next").exists()
    assert (tmp_path / "r" / "m.json.attempted").exists() and not (tmp_path / "r" / "m.json").exists()
    plain = Job("measure2", ("sh", "-c", "exit 3"), done=str(tmp_path / "m2.json"))  # the contrast
    res = run_jobs([plain, Job("next2", ("true",), done="x", after=("measure2",))], tmp_path / "root2",
                   parallel=1, progress=False)
    assert [r.returncode for r in res] == [3, -1]  # the job after a plain failure never ran


def test_the_multi30k_plan_runs_the_chosen_parts_one_after_the_other():
    """Timed jobs need the GPU alone and the fidelity check's runs once filled the H200 beside
    the hypervolume's workers: each part waits for the one before it."""
    sys.path.insert(0, str(RUNNER.parent))
    import gpu_plans

    def order(parts):
        return [(j.name, j.after) for j in gpu_plans.multi30k(data="/d", parts=parts)]

    sup = "m30k_supernet"
    assert order("search,fidelity") == [
        (sup, ()), ("host_cost_m30k", (sup,)), ("search_throughput_m30k", (sup, "host_cost_m30k")),
        ("search_hv_m30k", (sup, "search_throughput_m30k")), ("fidelity_m30k", ("search_hv_m30k",))]
    assert order("hv,fidelity") == [(sup, ()), ("search_hv_m30k", (sup,)), ("fidelity_m30k", ("search_hv_m30k",))]
    assert order("fidelity") == [("fidelity_m30k", ())]  # no supernet of its own to train
    with pytest.raises(SystemExit, match="parts=hv,bogus"):
        gpu_plans.multi30k(data="/d", parts="hv,bogus")


def test_the_multi30k_plan_adds_the_code_lm_search_and_another_merge_without_timing_beside_them():
    """The code_lm supernet trains beside the multi30k one (half the GPU each) and its search
    beside the multi30k search; the timed parts wait for both supernets, the check for both
    searches; ``tp_forward`` reaches the throughput commands through the environment."""
    sys.path.insert(0, str(RUNNER.parent))
    import gpu_plans

    jobs = gpu_plans.multi30k(data="/d", parts="search,fidelity", code_lm_data="/lc", code_lm_steps="50",
                              tp_forward="65536:16384")
    by = {j.name: j for j in jobs}
    sups = ("m30k_supernet", "code_lm_supernet")
    assert [(j.name, j.after) for j in jobs] == [
        ("m30k_supernet", ()), ("code_lm_data", ()), ("code_lm_supernet", ("code_lm_data",)),
        ("host_cost_m30k", sups), ("search_throughput_m30k", (*sups, "host_cost_m30k")),
        ("search_hv_code_lm", (*sups, "search_throughput_m30k")),
        ("search_hv_m30k", (*sups, "search_throughput_m30k")),
        ("fidelity_m30k", ("search_hv_code_lm", "search_hv_m30k"))]
    assert (by["m30k_supernet"].gpu, by["code_lm_supernet"].gpu, by["code_lm_data"].gpu) == (0.5, 0.5, 0.0)
    assert "--steps 50" in " ".join(by["code_lm_supernet"].argv)
    import os
    assert dict(by["code_lm_data"].env) == {"OMP_NUM_THREADS": str(os.cpu_count())}  # not Ray's one thread
    assert dict(by["search_throughput_m30k"].env) == {"COSEARCH_FORWARD_TOKENS": "65536",
                                                      "COSEARCH_FORWARD_COST": "16384"}
    host = " ".join(by["host_cost_m30k"].argv)
    assert "--forward-tokens 65536 --forward-cost 16384 --label tf32_t65536_c16384 --compare tf32" in host
    lm_hv = " ".join(by["search_hv_code_lm"].argv)
    assert "--run /tmp/gpu/m30k/code_lm/supernet" in lm_hv and "--max-batches 2" in lm_hv
    assert dict(by["search_hv_code_lm"].env) == {"COSEARCH_DATA_CACHE": "/tmp/gpu/m30k/code_lm/cache"}
    plain = {j.name: j for j in gpu_plans.multi30k(data="/d")}
    assert plain["m30k_supernet"].gpu == 1.0 and plain["search_throughput_m30k"].env == ()
    fid = " ".join(plain["fidelity_m30k"].argv)
    assert "--step-scales 1 " in fid and "--compare" not in fid
    swept = {j.name: j for j in gpu_plans.multi30k(data="/d", fid_step_scales="1,3", fid_compare="layer_d0:layer")}
    fid = " ".join(swept["fidelity_m30k"].argv)
    assert "--step-scales 1,3 " in fid and "--compare layer_d0:layer " in fid
    import fidelity  # the check's own parser takes the plan's arguments
    assert fidelity.main(list(swept["fidelity_m30k"].argv[2:]) + ["--dry-run"]) == 0
    for bad in ("65536", "0:-5", "a:b"):
        with pytest.raises(SystemExit, match=f"tp_forward={bad}: give TOKENS:COST"):
            gpu_plans.multi30k(data="/d", tp_forward=bad)
    # the code_lm stages never block the multi30k jobs after them: done once attempted
    assert by["code_lm_supernet"].done.endswith(".attempted") and "; touch " in by["code_lm_supernet"].argv[-1]
    assert by["code_lm_data"].done.endswith(".attempted")
    # no hypervolume part, no code_lm supernet to train
    names = [j.name for j in gpu_plans.multi30k(data="/d", parts="host", code_lm_data="/lc")]
    assert names == ["m30k_supernet", "host_cost_m30k"]
