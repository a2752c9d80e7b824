"""``cosearch fidelity --finetune-steps``: each arch trains a few steps of its own from the
supernet's weights (inside a copy of the supernet, quantized at its bits) before it is scored."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cosearch.cli import main
from cosearch.errors import UserError
from cosearch.fidelity.measure import Cache, measure_inherited, score
from cosearch.space import Arch, LayerArch
from cosearch.training import finetune as finetune_mod
from cosearch.training.evaluate import load_run
from cosearch.training.finetune import Finetune, finetuned
from cosearch.training.train import load_task_data, state_digest, train, train_config_from_dict

from train_fixtures import lm_space, one_thread, write_lm_text  # noqa: F401

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 6-step supernet of a tiny LM space with dropout (so the finetune's dropout masks count),
    no MoS; its loaded run, data and recipe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ft")
    data = write_lm_text(root / "t.txt", lines=400)
    space = {**lm_space(mode="none"), "dropout": 0.2}
    train(space, "lm", data, root / "run", steps=6, max_tokens=128, max_len=16, progress=False)
    run = load_run(root / "run")
    yield run, load_task_data(run.config, root / "run"), train_config_from_dict(run.config["train"])
    torch.set_num_threads(before)


def _arch(bits: float) -> Arch:
    layer = LayerArch(ffn_dim=64, heads=4, weight_bits=bits, act_bits=16)
    return Arch(encoder=(), decoder=(layer, layer), encoder_embed_dim=0, decoder_embed_dim=32)


def _state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if v is not None}


def _valid_loss(model, td, cfg) -> float:
    return score(model.eval(), td, {"max_len": cfg.max_len}, CPU, 256, False, 0)["valid_loss"]


def test_zero_steps_is_the_inherited_model(tiny):
    run, td, cfg = tiny
    a = _arch(4)
    got, want = _state(finetuned(run.net, a, td, cfg, Finetune(0), CPU)), _state(run.net.extract(a))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_finetune_lowers_the_archs_loss_and_leaves_the_supernet_as_it_was(tiny):
    run, td, cfg = tiny
    a = _arch(8)
    before = state_digest(run.net)
    inherited = _valid_loss(run.net.extract(a), td, cfg)
    tuned = _valid_loss(finetuned(run.net, a, td, cfg, Finetune(steps=20, lr=3e-3), CPU), td, cfg)
    assert state_digest(run.net) == before  # trained in a copy: the next arch starts from the same weights
    # a 6-step supernet is far from trained: 20 steps of the arch's own move it down clearly
    assert tuned < inherited - 0.05


def test_low_bit_weights_stay_on_their_grid_after_training(tiny):
    """The arch trains with its quantizers on (as ``cosearch train --arch`` does): a 2-bit layer
    comes out as 4 levels times its per-row scale, not as floats the updates moved."""
    run, td, cfg = tiny
    model = finetuned(run.net, _arch(2), td, cfg, Finetune(steps=5, lr=1e-2), CPU)
    layers = [m for m in model.modules() if hasattr(m, "weight_scale") and getattr(m, "weight_bits", 16) == 2]
    assert layers
    for m in layers:
        levels = (m.weight.detach() / m.weight_scale * 1e4).round().unique()
        assert levels.numel() <= 4  # 2 bits: at most 4 levels (times each row's scale)


def test_the_arch_trains_with_its_quantizers_and_dropout_on_at_the_given_rate(tiny, monkeypatch):
    """Every training forward runs the arch itself (its bits: quantizers on, as a standalone run of
    the recipe) in training mode (dropout on); the rate is the one asked for."""
    from cosearch.model.supernet import Supernet
    run, td, cfg = tiny
    a = _arch(2)
    seen, forward = [], Supernet.forward

    def spy(self, *inputs, arch=None, **masks):
        if torch.is_grad_enabled():
            seen.append((arch, self.training, self.arch))
        return forward(self, *inputs, arch=arch, **masks)
    monkeypatch.setattr(Supernet, "forward", spy)
    slow = _state(finetuned(run.net, a, td, cfg, Finetune(steps=3, lr=1e-4), CPU))
    assert len(seen) == 3 and all(x == (a, True, a) for x in seen)
    fast = _state(finetuned(run.net, a, td, cfg, Finetune(steps=3, lr=1e-2), CPU))
    assert any(not torch.equal(slow[k], fast[k]) for k in slow)


def test_the_recipe_takes_a_standalone_runs_tokens_per_step(tiny):
    """A run of N data-parallel workers took max_tokens per worker: its standalone runs (and a
    finetune) take N times that per step."""
    from cosearch.training.finetune import recipe
    run, _, cfg = tiny
    assert recipe(run.config).max_tokens == cfg.max_tokens == 128
    assert recipe({**run.config, "workers": 4}).max_tokens == 512
    assert recipe({**run.config, "workers": 4}).lr == cfg.lr


def test_a_finetune_of_zero_steps_is_recorded_as_none():
    from cosearch.fidelity.plan import FidelitySettings
    assert FidelitySettings(finetune_steps=0) == FidelitySettings()
    assert FidelitySettings(finetune_steps=3).finetune() == Finetune(3)
    assert FidelitySettings(finetune_steps=3, finetune_lr=0.01).finetune() == Finetune(3, 0.01)


def test_the_same_seed_gives_the_same_model_whatever_ran_before(tiny):
    """Every arch of a check sees the same batches and dropout masks: the result is a function
    of the arch and the seed, not of the global random state a previous arch left."""
    run, td, cfg = tiny
    a = _arch(16)
    torch.manual_seed(1)
    first = _state(finetuned(run.net, a, td, cfg, Finetune(steps=3, lr=1e-3), CPU))
    torch.manual_seed(2)
    torch.rand(7)
    again = _state(finetuned(run.net, a, td, cfg, Finetune(steps=3, lr=1e-3), CPU))
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = _state(finetuned(run.net, a, td, cfg, Finetune(steps=3, lr=1e-3, seed=1), CPU))
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_default_rate_is_three_tenths_of_the_runs_and_named_in_the_cache_key(tiny):
    _, _, cfg = tiny
    assert Finetune(steps=5).rate(cfg) == pytest.approx(0.3 * cfg.lr)
    assert Finetune(steps=5, lr=0.02).rate(cfg) == 0.02
    assert Finetune(steps=5).key(cfg) != Finetune(steps=6).key(cfg) != Finetune(steps=6, lr=0.02).key(cfg)
    for bad, msg in ((Finetune(steps=-1), "--finetune-steps -1 is invalid"),
                     (Finetune(steps=1.5), "--finetune-steps 1.5 is invalid"),
                     (Finetune(steps=2, lr=0.0), "--finetune-lr 0.0 is invalid; give a finite number > 0"),
                     (Finetune(steps=2, lr=float("inf")), "--finetune-lr inf is invalid; give a finite number > 0"),
                     (Finetune(steps=2, lr=float("nan")), "--finetune-lr nan is invalid; give a finite number > 0")):
        with pytest.raises(UserError, match=msg):
            bad.check()


def test_finetuned_scores_are_cached_apart_from_inherited_ones(tiny, tmp_path, monkeypatch):
    run, td, cfg = tiny
    archs = [_arch(4), _arch(16)]
    cache = Cache(tmp_path / "m.json")
    plain, _ = measure_inherited(run.run_dir, archs, td, cache, CPU, 256, False)
    tuned, _ = measure_inherited(run.run_dir, archs, td, cache, CPU, 256, False, finetune=Finetune(4, 3e-3))
    assert all(t["valid_loss"] != p["valid_loss"] for t, p in zip(tuned, plain))
    want = [_valid_loss(finetuned(run.net, a, td, cfg, Finetune(4, 3e-3), CPU), td, cfg) for a in archs]
    assert [t["valid_loss"] for t in tuned] == pytest.approx(want, abs=1e-6)

    def fail(*a, **k):
        raise AssertionError("measured again")
    monkeypatch.setattr("cosearch.fidelity.measure.finetuned", fail)  # a rerun reads the cache
    again, _ = measure_inherited(run.run_dir, archs, td, Cache(tmp_path / "m.json"), CPU, 256, False,
                                 finetune=Finetune(4, 3e-3))
    assert again == tuned


LM = ["--task", "lm", "--max-tokens", "64", "--max-len", "16", "--no-progress"]


@pytest.mark.slow
def test_fidelity_finetune_steps_end_to_end(tmp_path, capsys, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    run = tmp_path / "sup"
    assert main(["train", "--space", "tiny_lm", "--data", str(data), "--out", str(run), "--steps", "4", *LM]) == 0
    base = ["fidelity", str(run), "--archs", "3", "--noise-archs", "0", "--steps", "2", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "ft"), "--standalone-from", str(tmp_path / "plain"),
                        "--finetune-steps", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("inherited: each arch scored after 3 steps of its own training from the supernet's "
                          "weights (0.3 x the run's lr)\n")
    rep = json.loads((tmp_path / "ft" / "fidelity.json").read_text())
    assert rep["settings"]["finetune_steps"] == 3 and rep["settings"]["finetune_lr"] is None
    plain = json.loads((tmp_path / "plain" / "measured.json").read_text())
    ft = json.loads((tmp_path / "ft" / "measured.json").read_text())
    assert ft["standalone"] == plain["standalone"]  # the standalone runs do not depend on it
    assert all(a["valid_loss"] != b["valid_loss"] for a, b in zip(ft["inherited"], plain["inherited"]))
    # --finetune-lr reaches the measurement (its scores are cached under that rate)
    assert main(base + ["--out", str(tmp_path / "lr"), "--standalone-from", str(tmp_path / "plain"),
                        "--finetune-steps", "3", "--finetune-lr", "0.004"]) == 0
    assert "(lr 0.004)" in capsys.readouterr().out
    keys = json.loads((tmp_path / "lr" / "measurements.json").read_text())
    assert len(keys) == 3 and all("finetune3-lr0.004-seed0" in k for k in keys)
    lr = json.loads((tmp_path / "lr" / "measured.json").read_text())
    assert all(a["valid_loss"] != b["valid_loss"] for a, b in zip(lr["inherited"], ft["inherited"]))
    # a rerun with other finetune settings is another check: refused in one line
    assert main(base + ["--out", str(tmp_path / "ft"), "--standalone-from", str(tmp_path / "plain"),
                        "--finetune-steps", "4"]) == 2
    assert "holds a fidelity check with another --finetune-steps" in capsys.readouterr().err


@pytest.mark.parametrize("flags, msg", [
    (["--finetune-steps", "-2"], "--finetune-steps -2 is invalid; give a whole number from 0 to 100000"),
    (["--finetune-lr", "0.01"], "--finetune-lr 0.01 sets the rate of --finetune-steps K >= 1; give --finetune-steps"),
    (["--finetune-steps", "0", "--finetune-lr", "0.01"], "--finetune-lr 0.01 sets the rate of --finetune-steps K"),
    (["--finetune-steps", "5", "--finetune-lr", "-1"], "--finetune-lr -1.0 is invalid; give a finite number > 0"),
])
def test_bad_finetune_flags_are_one_line_before_any_work(tmp_path, capsys, flags, msg):
    out = tmp_path / "chk"
    assert main(["fidelity", str(tmp_path / "no-run"), "--out", str(out), *flags, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
