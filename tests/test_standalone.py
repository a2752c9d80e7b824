"""Standalone training of one sub-network (``train --arch``, ``retrain``), weight averaging."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from cosearch.training.checkpoint import latest_checkpoint, load_checkpoint
from cosearch.cli import main
from cosearch.errors import UserError
from cosearch.training.evaluate import evaluate, load_run
from cosearch.deploy.retrain import retrain
from cosearch.training.sandwich import standalone, staged_arch
from cosearch.space import Arch, SearchSpace
from cosearch.model.supernet import Supernet
from cosearch.training.train import TrainConfig, averaged_state, float_state, train, update_average

from train_fixtures import lm_space, one_thread, write_lm_text  # noqa: F401

FAST = dict(max_tokens=64, max_len=16, log_every=1, ckpt_every=2, progress=False)


def test_standalone_model_has_exactly_the_arch_weights_and_its_function():
    space = SearchSpace.from_dict(lm_space())
    arch = space.with_bits(space.sample(3), 4, 8)
    torch.manual_seed(0)
    net = Supernet(space, arch=arch).eval()
    weights = sum(p.numel() for n, p in net.named_parameters() if ".wq." not in n and ".aq." not in n)
    assert weights == space.param_count(arch)  # no unused rows, no experts, no router
    assert not net.router_parameters()
    x = torch.randint(3, space.vocab_size, (2, 9))
    with torch.no_grad():
        assert torch.equal(net(x), net.extract(arch).eval()(x))
        net(x, arch=space.with_bits(arch, 16, 16))  # other bits: fine (the bit stages use them)
    other = space.largest() if space.param_count(space.largest()) != space.param_count(arch) else space.smallest()
    with pytest.raises(UserError, match="standalone"):
        net.set_arch(other)


def test_standalone_bits_follow_the_supernet_stages():
    space = SearchSpace.from_dict(lm_space())  # weight bits 2, 4, 8, 16
    arch = space.with_bits(space.largest(), 2, 8)
    bits = lambda step: {(la.weight_bits, la.act_bits) for m in standalone(space, arch, step, 100, (0.2, 0.5))
                         for la in m.arch.decoder}
    assert bits(1) == {(16, 16)}  # float first
    assert bits(30) == {(4, 8)}  # 2 bits not yet enabled: the next enabled width
    assert bits(60) == {(2, 8)}
    assert [m.role for m in standalone(space, arch, 60, 100)] == ["standalone"]
    assert staged_arch(arch, (2, 4, 8, 16), (8, 16)) == arch


def test_cli_train_arch_then_eval(tmp_path, capsys, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    run = tmp_path / "sa"
    argv = ["train", "--space", "tiny_lm", "--task", "lm", "--data", str(data), "--out", str(run), "--arch",
            "smallest", "--steps", "3", "--max-tokens", "64", "--max-len", "16", "--no-progress", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["finished"]
    space = SearchSpace.load("tiny_lm")
    cfg = json.loads((run / "config.json").read_text())
    assert Arch.from_dict(cfg["arch"]) == space.smallest()
    assert Arch.from_json((run / "arch.json").read_text()) == space.smallest()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {k for k in metrics[-1] if k.startswith("loss_")} == {"loss_standalone"}
    assert main(["eval", "--run", str(run), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert Arch.from_dict(r["arch"]) == space.smallest() and r["loss"] > 0
    assert main(["eval", "--run", str(run), "--arch", "largest"]) == 2  # another size: refused
    assert "standalone" in capsys.readouterr().err
    out = tmp_path / "export"
    assert main(["export", str(run), "--arch", str(run / "arch.json"), "--out", str(out)]) == 0
    assert f"{space.param_count(space.smallest()):,} parameters" in capsys.readouterr().out


def test_retrain_trains_the_searched_arch_with_the_run_recipe(tmp_path, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    space = SearchSpace.from_dict(lm_space())
    # a supernet lever (worst-of-pool sampling) does not follow the arch into its retraining
    train(space, "lm", data, tmp_path / "sn", steps=2, lr=2e-3, sample_pool=2, **FAST)
    # nor deep random members (a retraining of a --deep-random supernet was refused once)
    train(space, "lm", data, tmp_path / "deep", steps=2, deep_random=1, **FAST)
    (tmp_path / "s_deep").mkdir()
    pd.DataFrame([{"number": 0, "arch": space.smallest().to_json(), "loss": 5.0}]).to_csv(
        tmp_path / "s_deep" / "trials.csv", index=False)
    (tmp_path / "s_deep" / "search.json").write_text(json.dumps({"run": str(tmp_path / "deep")}))
    assert retrain(tmp_path / "s_deep", tmp_path / "re_deep", pick="best-quality", steps=2).finished
    assert json.loads((tmp_path / "re_deep" / "config.json").read_text())["train"]["deep_random"] == 0
    arch = space.with_bits(space.sample(1), 4, 8)
    search = tmp_path / "search"
    search.mkdir()
    pd.DataFrame([{"number": 0, "arch": space.smallest().to_json(), "loss": 5.0},
                  {"number": 1, "arch": arch.to_json(), "loss": 4.0}]).to_csv(search / "trials.csv", index=False)
    (search / "search.json").write_text(json.dumps({"run": str(tmp_path / "sn")}))
    s = retrain(search, tmp_path / "re", pick="best-quality", steps=3)
    assert s.finished and s.steps == 3
    cfg = json.loads((tmp_path / "re" / "config.json").read_text())
    assert Arch.from_dict(cfg["arch"]) == arch and cfg["train"]["lr"] == 2e-3  # the run's recipe
    assert cfg["train"]["sample_pool"] == 1 and cfg["train"]["router_balance"] == 0
    assert load_run(tmp_path / "re").arch == arch
    assert main(["retrain", str(search), "--trial", "0", "--out", str(tmp_path / "re0"), "--steps", "2",
                 "--no-progress"]) == 0
    assert Arch.from_dict(evaluate(tmp_path / "re0")["arch"]) == space.smallest()
    with pytest.raises(UserError, match="standalone run"):
        retrain(search, tmp_path / "x", trial=1, run=tmp_path / "re")


def test_share_embeddings_false_is_refused(tmp_path):
    d = dict(lm_space(), family="encoder_decoder", share_embeddings=False,
             encoder=lm_space()["decoder"], decoder=dict(lm_space()["decoder"], cross_layers=[1]))
    space = SearchSpace.from_dict(d)
    with pytest.raises(UserError, match="share_embeddings"):
        Supernet(space)
    with pytest.raises(UserError, match="share_embeddings"):
        train(space, "lm", write_lm_text(tmp_path / "t.txt"), tmp_path / "r", steps=1, **FAST)
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- weight averaging
def test_update_average_is_an_ema_from_its_start():
    net = torch.nn.Linear(2, 1, bias=False)
    weights = float_state(net)  # taken once: it follows the in-place updates below
    cfg = TrainConfig(steps=10, ema_start=0.5, ema_decay=0.75)
    assert update_average(None, weights, 5, cfg) is None  # not yet
    with torch.no_grad():
        net.weight.fill_(1.0)
    avg = update_average(None, weights, 6, cfg)
    with torch.no_grad():
        net.weight.fill_(3.0)
    avg = update_average(avg, weights, 7, cfg)
    assert torch.equal(avg["weight"], torch.full((1, 2), 1.5))  # 1 + 0.25 * (3 - 1)
    assert update_average(None, weights, 9, TrainConfig(steps=10, ema_start=None)) is None
    state = {"model": {"weight": torch.zeros(1, 2), "n": torch.tensor(1)}, "ema": avg}
    assert torch.equal(averaged_state(state)["weight"], avg["weight"]) and averaged_state(state)["n"] == 1


def test_average_survives_resume_and_is_what_eval_loads(tmp_path, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    kw = dict(FAST, steps=6, ema_start=0.3, ema_decay=0.5, seed=2)
    train(lm_space(), "lm", data, tmp_path / "a", **kw)
    train(lm_space(), "lm", data, tmp_path / "b", stop_at=5, **kw)  # last checkpoint: step 4, average on
    assert load_checkpoint(latest_checkpoint(tmp_path / "b"))["ema"] is not None
    train(lm_space(), "lm", data, tmp_path / "b", **kw)
    sa, sb = (load_checkpoint(latest_checkpoint(tmp_path / r)) for r in ("a", "b"))
    assert all(torch.equal(sa["ema"][k], sb["ema"][k]) for k in sa["ema"])
    loaded = load_run(tmp_path / "a").net.state_dict()
    k = "model.decoder_layers.0.ffn.fc1.weight"
    assert torch.equal(loaded[k], sa["ema"][k]) and not torch.equal(sa["ema"][k], sa["model"][k])
    raw = load_run(tmp_path / "a", raw_weights=True).net.state_dict()
    assert torch.equal(raw[k], sa["model"][k])
    a = evaluate(tmp_path / "a", split="valid", max_sentences=4)
    r = evaluate(tmp_path / "a", split="valid", max_sentences=4, raw_weights=True)
    assert a["loss"] != r["loss"]
