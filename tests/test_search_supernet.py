"""Co-search on a real (tiny, briefly trained) supernet: quality is its validation loss."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from cosearch.errors import UserError
from cosearch.search import search
from cosearch.search.quality import MeasureSettings, SupernetQuality
from cosearch.space import Arch
from cosearch.training.train import train

from train_fixtures import lm_space, write_lm_text

pytestmark = pytest.mark.xdist_group("search_supernet")


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lm")
    data = write_lm_text(root / "text.txt")
    train(lm_space(), "lm", data, root / "run", steps=4, max_tokens=256, ckpt_every=4, log_every=2,
          progress=False)
    return root / "run"


def test_search_measures_inherited_weight_loss_and_caches(lm_run, tmp_path):
    kw = dict(out=tmp_path / "s", trials=8, sampler="random", batch=4, max_batches=2, progress=False,
              plots=False, objectives="quality,latency,size")
    r = search(lm_run, "zcu102", **kw)
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert len(df) == 8 and set(df["source"]) == {"measured"}
    assert r.measured == df["digest"].nunique()
    # the matmul precision of the measurements is recorded (TF32 only when measuring on CUDA)
    record = json.loads((tmp_path / "s" / "search.json").read_text())
    assert record["quality_matmul"] == "fp32"
    assert record["quality_forward_tokens"] == 4096  # on CPU each batch is one forward
    assert record["quality_forward_cost"] == 4096
    assert all(math.isfinite(v) and v > 0 for v in df["quality"])
    # the stored quality is the loss the supernet gives that arch on the same subset
    q = SupernetQuality(lm_run, MeasureSettings(max_batches=2))
    a = Arch.from_json(df["arch"].iloc[2])
    assert df["quality"].iloc[2] == pytest.approx(q.measure(a)["loss"], rel=1e-5)
    # resuming with a larger total measures only new archs; the same total measures none
    r2 = search(lm_run, "zcu102", **dict(kw, trials=10))
    assert r2.trials == 10 and r2.measured <= 2
    assert search(lm_run, "zcu102", **dict(kw, trials=10)).measured == 0


def test_bleu_needs_a_translation_run(lm_run, tmp_path):
    with pytest.raises(UserError, match="bleu needs a translation run"):
        search(lm_run, "zcu102", out=tmp_path / "b", trials=2, objectives="bleu,latency", progress=False,
               plots=False, max_batches=1)


def test_a_space_that_contradicts_the_run_is_refused_up_front(lm_run, tmp_path, capsys):
    with pytest.raises(UserError, match="is not the space .* was trained on"):
        search(lm_run, "zcu102", space="tiny_lm", out=tmp_path / "x", trials=2, progress=False, plots=False)
    from cosearch.cli import main
    rc = main(["search", "--run", str(lm_run), "--space", "multi30k", "--hw", "zcu102", "--trials", "2",
               "--out", str(tmp_path / "y"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--space" in err[0]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_gpu_without_cuda_is_one_line_before_anything_is_written(lm_run, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from cosearch.cli import main
    rc = main(["search", "--run", str(lm_run), "--gpu", "--workers", "2", "--hw", "zcu102", "--trials", "2",
               "--out", str(tmp_path / "g"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "drop --gpu" in err[0]
    assert not (tmp_path / "g").exists()


def test_search_with_finetune_steps_measures_each_arch_after_its_own_training(lm_run, tmp_path):
    from cosearch.training.finetune import Finetune, finetuned
    from cosearch.training.train import train_config_from_dict
    kw = dict(out=tmp_path / "f", trials=4, sampler="random", batch=4, max_batches=2, progress=False, plots=False,
              objectives="quality,size", repeats=1)
    search(lm_run, "zcu102", **kw, finetune_steps=3)
    df = pd.read_csv(tmp_path / "f" / "trials.csv")
    q = SupernetQuality(lm_run, MeasureSettings(max_batches=2))
    cfg = train_config_from_dict(q.run.config["train"])
    tok = q.td.tokenizer
    for i in (0, 3):
        a = Arch.from_json(df["arch"].iloc[i])
        model = finetuned(q.run.net, a, q.td, cfg, Finetune(3), q.device).eval()
        sums, counts = q.ev.batch_losses(model, q.batches, tok.pad_id, tok.vocab_size, q.device)
        assert df["quality"].iloc[i] == pytest.approx(float(sums.sum() / counts.sum()), rel=1e-5)
        assert df["quality"].iloc[i] != pytest.approx(q.measure(a)["loss"], rel=1e-5)  # not the inherited loss
    # its scores are another quality source: resuming the study without the finetune is refused
    with pytest.raises(UserError, match="made with quality='supernet:valid:2:finetune3:cpu', but this command "
                                        "gives quality='supernet:valid:2'"):
        search(lm_run, "zcu102", **dict(kw, trials=6))
    # the export of a pick is the model the search measured: the arch after its finetune
    from cosearch.export import export, load_exported
    best = df.sort_values("quality").iloc[0]
    a = Arch.from_json(best["arch"])
    out = export(tmp_path / "e", search=tmp_path / "f", pick="best-quality")
    got = load_exported(out).state_dict()
    want = finetuned(q.run.net, a, q.td, cfg, Finetune(3), q.device).state_dict()
    assert set(want) <= set(got) and all(torch.equal(got[k], want[k]) for k in want)
    assert json.loads((out / "config.json").read_text())["source"]["finetune_steps"] == 3


def test_a_finetuned_arch_is_trained_once_for_all_its_measurements(lm_run, monkeypatch):
    from cosearch.training import finetune
    calls = []
    real = finetune.finetuned
    monkeypatch.setattr(finetune, "finetuned", lambda *a, **k: calls.append(1) or real(*a, **k))
    q = SupernetQuality(lm_run, MeasureSettings(max_batches=1, max_tokens=64, repeats=2, finetune_steps=2))
    a = q.run.space.smallest()
    first = q.measure(a)
    assert q.repeats == 2 and q.measure(a, repeat=1) != first and len(calls) == 1


def test_finetune_steps_need_a_quality_objective(lm_run, tmp_path):
    with pytest.raises(UserError, match="--finetune-steps changes how quality is measured, and --objectives "
                                        "latency,size measures none"):
        search(lm_run, "zcu102", out=tmp_path / "x", trials=2, objectives="latency,size", finetune_steps=2,
               progress=False, plots=False)
    assert not (tmp_path / "x").exists()


def test_finetune_steps_need_a_supernet(tmp_path):
    with pytest.raises(UserError, match="--finetune-steps trains archs of a supernet"):
        search(None, "zcu102", space="tiny_lm", quality="synthetic", out=tmp_path / "x", trials=2,
               finetune_steps=2, progress=False, plots=False)
    with pytest.raises(UserError, match="--finetune-steps -1 is invalid; give a whole number from 0 to 100000"):
        search(None, "zcu102", space="tiny_lm", quality="synthetic", out=tmp_path / "x", trials=2,
               finetune_steps=-1, progress=False, plots=False)
