"""Supernet training: sandwich sampling, schedules, resume to identical weights, run folders."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch

from cosearch.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from cosearch.cli import main
from cosearch.errors import UserError
from cosearch.training.rundir import read_metrics
from cosearch.training.sandwich import enabled_bits, member_loss, sandwich
from cosearch.space import SearchSpace
from cosearch.training.train import TrainConfig, lr_at, train

from train_fixtures import lm_space, mt_space, one_thread, write_lm_text, write_word_translation  # noqa: F401

FAST = dict(max_tokens=128, log_every=1, ckpt_every=2, progress=False)


# --------------------------------------------------------------------------- sandwich
def test_sandwich_is_a_function_of_seed_and_step():
    space = SearchSpace.from_dict(lm_space())
    a = sandwich(space, seed=3, step=40, steps=50, n_random=3)
    assert a == sandwich(space, seed=3, step=40, steps=50, n_random=3)
    assert [m.role for m in a] == ["largest", "smallest", "random", "random", "random"]
    assert a[0].arch == space.largest()
    others = {tuple(m.arch for m in sandwich(space, seed=3, step=s, steps=50, n_random=3)[2:]) for s in range(30, 50)}
    assert len(others) > 15  # different steps draw different sub-networks
    assert sandwich(space, seed=4, step=40, steps=50, n_random=3)[2:] != a[2:]


def test_staged_bits():
    space = SearchSpace.from_dict(lm_space())
    assert enabled_bits(space, 1, 100, (0.2, 0.5)) == ((16,), (16,))
    assert enabled_bits(space, 21, 100, (0.2, 0.5)) == ((4, 8, 16), (8, 16))
    assert enabled_bits(space, 51, 100, (0.2, 0.5)) == ((2, 4, 8, 16), (8, 16))
    assert enabled_bits(space, 1, 100, None) == ((2, 4, 8, 16), (8, 16))
    for step, allowed in ((5, {16}), (30, {4, 8, 16}), (90, {2, 4, 8, 16})):
        members = sandwich(space, 0, step, 100, n_random=4)
        bits = {la.weight_bits for m in members for la in m.arch.decoder}
        assert bits <= allowed
        assert {la.weight_bits for la in members[1].arch.decoder} == {min(allowed)}  # smallest: lowest bits
        assert {la.weight_bits for la in members[0].arch.decoder} == {16}  # teacher: float


def test_member_loss_mixes_task_and_distillation():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 5, 11), torch.randint(1, 11, (2, 5))
    target[0, -2:] = 0
    loss, ce, kd = member_loss(logits, target, 0, 0.1, None, 0.5)
    assert kd is None and torch.equal(loss, ce)
    teacher = torch.log_softmax(logits, -1)
    loss, ce, kd = member_loss(logits, target, 0, 0.1, teacher, 0.5)
    assert float(kd) == pytest.approx(0.0, abs=1e-6)  # a student equal to its teacher
    assert float(loss) == pytest.approx(0.5 * float(ce))
    _, _, kd2 = member_loss(logits, target, 0, 0.0, torch.log_softmax(torch.randn(2, 5, 11), -1), 1.0)
    assert float(kd2) > 0.01


def test_lr_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert lr_at(5, cfg) == pytest.approx(0.5)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(100, cfg) == pytest.approx(0.1)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 100))
    inv = TrainConfig(steps=100, lr=1.0, warmup=4, schedule="inverse_sqrt")
    assert lr_at(16, inv) == pytest.approx(0.5)


def test_bad_settings_are_user_errors(tmp_path):
    data = write_lm_text(tmp_path / "t.txt")
    with pytest.raises(UserError, match="distill"):
        train(lm_space(), "lm", data, tmp_path / "r", steps=2, distill=2.0, progress=False)
    with pytest.raises(UserError, match="steps=1000000001 is invalid; it must be between 1 and 1,000,000,000"):
        train(lm_space(), "lm", data, tmp_path / "r", steps=10 ** 9 + 1, progress=False)  # a typo, not a run
    assert not (tmp_path / "r").exists()
    with pytest.raises(UserError, match="unknown training setting"):
        train(lm_space(), "lm", data, tmp_path / "r", steps=2, learning_rate=1.0, progress=False)
    with pytest.raises(UserError, match="does not exist"):
        train(lm_space(), "lm", tmp_path / "missing.txt", tmp_path / "r", steps=2, progress=False)
    assert not (tmp_path / "r").exists()  # nothing half-made left behind


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_roundtrip_and_damage(tmp_path):
    p = save_checkpoint(tmp_path / "checkpoints" / "step_00000003.pt", {"step": 3, "model": {"w": torch.arange(4.0)}})
    assert latest_checkpoint(tmp_path) == p and [s for s, _ in list_checkpoints(tmp_path)] == [3]
    assert torch.equal(load_checkpoint(p)["model"]["w"], torch.arange(4.0))
    assert not list(p.parent.glob(".*tmp"))
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(UserError, match="not a readable cosearch checkpoint"):
        load_checkpoint(p)
    # weights_only: a pickled object that is not plain data is refused
    torch.save({"step": 1, "model": {}, "evil": UserError("x")}, tmp_path / "x.pt")
    with pytest.raises(UserError, match="not a readable"):
        load_checkpoint(tmp_path / "x.pt")


def test_checkpoint_device_errors_do_not_blame_the_file(tmp_path, monkeypatch):
    """A GPU out of memory (seen when other jobs filled an H200) or a device that cannot take the
    tensors is not a damaged file: the message must not tell the user to delete a good checkpoint."""
    p = save_checkpoint(tmp_path / "checkpoints" / "step_00000003.pt", {"step": 3, "model": {"w": torch.arange(4.0)}})
    real_load = torch.load

    def failing_on_device(path, map_location=None, **kw):
        if str(map_location) != "cpu":
            raise error
        return real_load(path, map_location=map_location, **kw)

    monkeypatch.setattr(torch, "load", failing_on_device)
    error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB.")
    with pytest.raises(UserError) as e:
        load_checkpoint(p, map_location="cuda")
    assert "GPU memory" in str(e.value) and "delete" not in str(e.value)
    error = RuntimeError("Attempting to deserialize object on a CUDA device")
    with pytest.raises(UserError) as e:
        load_checkpoint(p, map_location="cuda")
    assert "is intact" in str(e.value) and "delete" not in str(e.value)
    p.write_bytes(p.read_bytes()[:50])  # a damaged file on the device path still says so
    with pytest.raises(UserError, match="not a readable cosearch checkpoint"):
        load_checkpoint(p, map_location="cuda")


def test_low_activation_bits_train_to_a_summary_and_a_digest_of_every_byte(tmp_path, one_thread):
    # below 8 bits each activation width has a learned clip: a 0-d parameter
    space = lm_space()
    space["quantization"] = dict(weight_bits=[4, 8], act_bits=[4, 8])
    res = train(space, "lm", write_lm_text(tmp_path / "t.txt"), tmp_path / "r", **dict(FAST, steps=2))
    assert res.finished and (tmp_path / "r" / "summary.json").exists()
    state = load_checkpoint(latest_checkpoint(tmp_path / "r"))["model"]
    clips = [k for k, t in state.items() if t.ndim == 0 and "log_clip.b4" in k]
    assert clips
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    assert res.state_digest == h.hexdigest()


# --------------------------------------------------------------------------- resume
def test_resume_after_kill_gives_identical_weights(tmp_path, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    kw = dict(FAST, steps=6, bit_stages=(0.3, 0.6), seed=1)  # crosses both bit stages, dropout on
    a = train(lm_space(), "lm", data, tmp_path / "a", **kw)
    killed = train(lm_space(), "lm", data, tmp_path / "b", stop_at=3, **kw)  # last checkpoint: step 2
    assert not killed.finished and killed.step == 3
    assert not (tmp_path / "b" / "summary.json").exists()
    b = train(lm_space(), "lm", data, tmp_path / "b", **kw)
    assert b.start_step == 2 and b.finished and a.finished
    sa = load_checkpoint(latest_checkpoint(tmp_path / "a"))["model"]
    sb = load_checkpoint(latest_checkpoint(tmp_path / "b"))["model"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.state_digest == b.state_digest
    ma, mb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [m["step"] for m in mb] == [1, 2, 3, 4, 5, 6]  # the killed run's step 3 is logged once
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("tokens_per_s", "elapsed")} for m in ms]
    assert strip(ma) == strip(mb)
    assert len(list_checkpoints(tmp_path / "b")) == 2  # keep_checkpoints
    # running a finished run again trains nothing and changes nothing
    again = train(lm_space(), "lm", data, tmp_path / "b", **kw)
    assert again.start_step == 6 and again.state_digest == a.state_digest


def test_other_settings_on_an_existing_run_are_refused(tmp_path, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    train(lm_space(), "lm", data, tmp_path / "r", steps=1, **{k: v for k, v in FAST.items()})
    with pytest.raises(UserError, match=r"steps=1.*steps=2"):
        train(lm_space(), "lm", data, tmp_path / "r", steps=2, **FAST)
    with pytest.raises(UserError, match=r"lr="):
        train(lm_space(), "lm", data, tmp_path / "r", steps=1, lr=0.5, **FAST)
    with pytest.raises(UserError, match=r"space="):
        train(lm_space(mode="none", experts=1), "lm", data, tmp_path / "r", steps=1, **FAST)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(UserError, match="not a cosearch run"):
        train(lm_space(), "lm", data, tmp_path / "other", steps=1, **FAST)
    write_lm_text(data, seed=5)  # the data changed under the run
    with pytest.raises(UserError, match="data changed"):
        train(lm_space(), "lm", data, tmp_path / "r", steps=1, **FAST)


def test_a_run_whose_preset_changed_since_says_how_to_resume_and_that_way_resumes(tmp_path, one_thread):
    """The presets dropped MoS: a run begun with the old one is refused with the way back
    (its own space, written to a file), and following it resumes the run."""
    data = write_lm_text(tmp_path / "t.txt")
    run = tmp_path / "r"
    train(lm_space(mode="layer", experts=2), "lm", data, run, steps=1, **FAST)
    with pytest.raises(UserError, match=r"space changed since the run began.*\"space\" entry of .*config\.json"):
        train(lm_space(mode="none", experts=1), "lm", data, run, steps=1, **FAST)
    own = tmp_path / "own_space.yaml"
    own.write_text(json.dumps(json.loads((run / "config.json").read_text())["space"]))  # JSON is YAML
    assert train(own, "lm", data, run, steps=1, **FAST).step == 1


def test_a_run_from_before_a_setting_existed_still_resumes(tmp_path, one_thread):
    """config.json written before ema_start/ema_decay existed: their defaults stand in."""
    data = write_lm_text(tmp_path / "t.txt")
    train(lm_space(), "lm", data, tmp_path / "r", steps=1, **FAST)
    cfg_path = tmp_path / "r" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for k in ("ema_start", "ema_decay"):
        del cfg["train"][k]
    cfg_path.write_text(json.dumps(cfg))
    assert train(lm_space(), "lm", data, tmp_path / "r", steps=1, **FAST).step == 1
    with pytest.raises(UserError, match=r"ema_start=None.*ema_start=0.5"):
        train(lm_space(), "lm", data, tmp_path / "r", steps=1, ema_start=0.5, **FAST)


# --------------------------------------------------------------------------- learning
def test_translation_training_lowers_the_loss(tmp_path, one_thread):
    data = write_word_translation(tmp_path / "mt")
    s = train(mt_space(), "translation", data, tmp_path / "run", steps=40, max_tokens=256, lr=3e-3,
              log_every=5, ckpt_every=40, progress=False)
    m = read_metrics(tmp_path / "run")
    assert [r["step"] for r in m] == list(range(5, 45, 5))
    for role in ("largest", "smallest", "random"):
        assert m[-1][f"loss_{role}"] < m[0][f"loss_{role}"] - 0.5, role
    assert s.finished and s.tokens_per_s > 0 and set(s.losses) >= {"largest", "smallest", "random"}
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["task"] == "translation" and cfg["train"]["steps"] == 40 and cfg["space"]["name"] == "tiny_test_mt"
    assert (tmp_path / "run" / "tokenizer.model").is_file()


def test_cli_train(tmp_path, capsys, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    argv = ["train", "--space", "tiny_lm", "--task", "lm", "--data", str(data), "--out", str(tmp_path / "r"),
            "--steps", "2", "--max-tokens", "64", "--max-len", "16", "--no-progress", "--json", "--n-random", "0"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step"] == 2 and out["finished"]
    argv[argv.index("--steps") + 1] = "3"
    assert main(argv) == 2  # other --steps on the same run
    assert "steps=2" in capsys.readouterr().err


def test_cli_time_limit_checkpoints_stops_and_resumes(tmp_path, capsys, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    argv = ["train", "--space", "tiny_lm", "--task", "lm", "--data", str(data), "--out", str(tmp_path / "r"),
            "--steps", "3", "--max-tokens", "64", "--max-len", "16", "--no-progress", "--json", "--n-random", "0",
            "--time-limit", "1e-9"]  # past after the first step
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step"] == 1 and not out["finished"]
    assert [step for step, _ in list_checkpoints(tmp_path / "r")] == [1]
    argv[-1] = "600"
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["start_step"] == 1 and out["step"] == 3 and out["finished"]
    argv[-1] = "0"
    assert main(argv) == 2
    assert "--time-limit" in capsys.readouterr().err


def test_in_process_training_never_imports_ray(tmp_path):
    data = write_lm_text(tmp_path / "t.txt")
    code = ("import sys, torch; torch.set_num_threads(1); from cosearch.training.train import train; "
            f"train({lm_space()!r}, 'lm', {str(data)!r}, {str(tmp_path / 'r')!r}, steps=1, max_tokens=64, "
            "progress=False); assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
