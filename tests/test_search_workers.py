"""K measuring workers (what --gpu --workers K runs): started once, all used, each measuring
on its own device; a search through the CLI with K = 2 on a real (tiny) supernet ends with
exactly --trials trials, each with the loss the supernet gives it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState

from cosearch.search.quality import MeasureSettings, SupernetQuality, SupernetSpec
from cosearch.search.workers import ProcessPool
from cosearch.space import Arch

from train_fixtures import lm_space, write_lm_text

pytestmark = pytest.mark.xdist_group("search_workers")


class PidSource:
    """A quality source that says which process measured (and notes each build in ``folder``)."""

    name = "pid"

    def __init__(self, folder: str):
        Path(folder, f"built-{os.getpid()}").touch()

    def __call__(self, archs):
        import time
        time.sleep(0.02 * len(archs))  # long enough that the other worker takes the next batch
        return {"loss": [float(os.getpid())] * len(archs)}


class PidFactory:
    def __init__(self, folder: str):
        self.folder = folder

    def __call__(self):
        return PidSource(self.folder)


def test_k_workers_start_once_and_all_measure(tmp_path):
    pool = ProcessPool(PidFactory(str(tmp_path)), 3)
    try:
        built = sorted(p.name for p in tmp_path.iterdir())
        assert len(built) == 3  # every worker built its source before the first batch ...
        handles = [pool.submit(["a", "b"]) for _ in range(12)]
        pids = set()
        while handles:
            done, results = pool.wait(handles)
            handles = [h for h in handles if h not in done]
            pids |= {int(r["loss"][0]) for r in results}
        assert {f"built-{p}" for p in pids} == set(built)  # ... and all of them measured
        assert sorted(p.name for p in tmp_path.iterdir()) == built  # none started again
    finally:
        pool.close()


class Broken:
    def __call__(self):
        from cosearch.errors import UserError
        raise UserError("run folder X has no checkpoint yet")


def test_a_worker_that_cannot_build_its_source_fails_before_any_trial():
    from cosearch.errors import UserError
    with pytest.raises(UserError, match="no checkpoint yet"):
        ProcessPool(Broken(), 2, start_timeout=60)


def test_each_worker_measures_on_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    spec = SupernetSpec("RUN", MeasureSettings(device="cuda"))
    assert [spec.for_worker(i).settings.device for i in range(5)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert SupernetSpec("RUN", MeasureSettings(device="cpu")).for_worker(3).settings.device == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert spec.for_worker(3).settings.device == "cuda"


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    from cosearch.training.train import train
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lm")
    train(lm_space(), "lm", write_lm_text(root / "text.txt"), root / "run", steps=4, max_tokens=256, ckpt_every=4,
          log_every=2, progress=False)
    return root / "run"


@pytest.mark.slow
def test_two_workers_through_the_cli_complete_exactly_n(lm_run, tmp_path, monkeypatch):
    # the --gpu path (worker processes, one supernet each) on CPU: Ray is the CPU default
    from cosearch.cli import main
    from cosearch.search import study
    monkeypatch.setattr(study, "_ray_installed", lambda: False)
    out, n = tmp_path / "s", 30
    rc = main(["search", "--run", str(lm_run), "--hw", "zcu102", "--trials", str(n), "--workers", "2",
               "--sampler", "nsga2", "--population", "6", "--batch", "4", "--max-batches", "2", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    st = optuna.load_study(study_name="cosearch", storage=f"sqlite:///{out / 'study.db'}")
    assert len(st.get_trials(states=(TrialState.COMPLETE,))) == n
    assert not st.get_trials(states=(TrialState.RUNNING,))
    df = pd.read_csv(out / "trials.csv")
    assert len(df) == df["digest"].nunique() == n and set(df["source"]) == {"measured"}
    timing = json.loads((out / "summary.json").read_text())["timing"]
    assert timing["workers"] == 2 and timing["measured"] == n and timing["loop_s"] > 0
    q = SupernetQuality(lm_run, MeasureSettings(max_batches=2))  # the worker's number is the supernet's
    for i in (0, 7, n - 1):
        assert df["quality"].iloc[i] == pytest.approx(q.measure(Arch.from_json(df["arch"].iloc[i]))["loss"], rel=1e-5)


def test_the_supernet_measures_again_on_the_next_batches(lm_run):
    # measurement r uses batch block r; its standard error comes from the spread over batches
    from cosearch.training import evaluate as ev
    q = SupernetQuality(lm_run, MeasureSettings(max_batches=2, max_tokens=32, repeats=2))
    assert q.repeats == 2 and len(q.batch_sets[0]) == len(q.batch_sets[1]) == 2
    arch = q.run.space.smallest()
    tok = q.td.tokenizer
    model = q.model(arch)
    for r in (0, 1):
        per = [ev.eval_loss(model, [b], tok.pad_id, tok.vocab_size, q.device) for b in q.batch_sets[r]]
        got = q([arch], repeat=r)
        loss, n = [x for x, _ in per], [t for _, t in per]
        mean = (loss[0] * n[0] + loss[1] * n[1]) / (n[0] + n[1])
        assert got["loss"][0] == pytest.approx(mean, rel=1e-6)
        w = [t / sum(n) for t in n]  # weighted spread of 2 batches, bias-corrected (x 2/1)
        var = sum(wi * (li - mean) ** 2 for wi, li in zip(w, loss)) * 2
        assert got["loss_se"][0] == pytest.approx((var * sum(wi * wi for wi in w)) ** 0.5, rel=1e-6)
    assert q([arch], repeat=1)["loss"][0] != q([arch])["loss"][0]  # other batches
    whole = ev.eval_loss(model, q.batch_sets[0], tok.pad_id, tok.vocab_size, q.device)[0]
    assert q([arch])["loss"][0] == pytest.approx(whole, rel=1e-6)  # the standard measurement is unchanged
    with pytest.raises(ValueError, match="has no measurement 2"):
        from cosearch.search.quality import call_source
        call_source(q, [arch], 2)
