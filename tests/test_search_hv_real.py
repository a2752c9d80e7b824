"""benchmarks/search_hv_real.py: a failed search stops the ones not started, keeps the
finished ones, and a rerun resumes after them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cosearch.cli import main

from train_fixtures import one_thread, write_lm_text  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_failed_search_stops_the_rest_and_a_rerun_resumes(tmp_path, monkeypatch, one_thread, parallel):
    import search_hv_real as hv
    run = tmp_path / "sup"
    assert main(["train", "--space", "tiny_lm", "--task", "lm", "--data", str(write_lm_text(tmp_path / "t.txt")),
                 "--out", str(run), "--steps", "2", "--max-tokens", "64", "--max-len", "16", "--no-progress"]) == 0
    out = tmp_path / "hv.json"
    argv = ["--run", str(run), "--settings", "random,default", "--seeds", "3", "--trials", "20",
            "--checkpoints", "10,20", "--max-batches", "1", "--heldout-split", "valid", "--heldout-batches", "2",
            "--parallel", str(parallel), "--out", str(out)]
    real, calls = hv.run_cli, []

    def default_fails(a, setting, seed, bound, where):
        calls.append((setting, seed))
        if setting == "default":
            raise SystemExit("default seed 0: exit 2")
        return real(a, setting, seed, bound, where)

    monkeypatch.setattr(hv, "run_cli", default_fails)
    with pytest.raises(SystemExit, match="default seed 0"):
        hv.main(argv)
    # 1 worker: random 0 then default 0; 2: those two at once. Nothing after them ever starts.
    assert calls == [("random", 0), ("default", 0)]
    kept = json.loads(out.read_text())
    assert [(r["setting"], r["seed"]) for r in kept["runs"]] == [("random", 0)] and not kept["complete"]
    assert kept["parallel"] == parallel
    # the rerun keeps random 0 and runs only what is missing
    calls.clear()
    monkeypatch.setattr(hv, "run_cli", lambda *a: calls.append(a[1:3]) or real(*a))
    hv.main(argv[:5] + ["1"] + argv[6:])  # --seeds 1
    assert calls == [("default", 0)]
    done = json.loads(out.read_text())
    assert [(r["setting"], r["seed"]) for r in done["runs"]] == [("random", 0), ("default", 0)] and done["complete"]
    assert done["runs"][0] == kept["runs"][0]
    # results of other settings are never overwritten or dropped
    before = out.read_text()
    with pytest.raises(SystemExit, match="exists and is not a cut run of these settings"):
        hv.main(argv[:7] + ["40"] + argv[8:])  # --trials 40
    with pytest.raises(SystemExit, match="would drop: default seed 0"):
        hv.main(argv[:3] + ["random"] + argv[4:5] + ["1"] + argv[6:])  # --settings random --seeds 1
    assert out.read_text() == before
