"""Export from run and search folders, and running exports: translate, generate, finetune."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

import cosearch
from cosearch.training.checkpoint import checkpoint_path, save_checkpoint
from cosearch.cli import main
from cosearch.data.tokenizer import TokenizerSettings, train_tokenizer
from cosearch.errors import UserError
from cosearch.export import export, open_exported
from cosearch.deploy.finetune import attach_fixed_quantizers, finetune
from cosearch.deploy.generate import generate_text, next_token, sample_tokens, translate_lines
from cosearch.training.rundir import write_config

sys.path.insert(0, str(Path(__file__).parent))
from test_export import inputs, random_supernet, tiny_space  # noqa: E402

EN = ["a dog runs in the park", "two men play football", "a woman reads a book",
      "the cat sleeps on the sofa", "children play in the snow", "a man rides a bike"] * 4
DE = ["ein hund rennt im park", "zwei maenner spielen fussball", "eine frau liest ein buch",
      "die katze schlaeft auf dem sofa", "kinder spielen im schnee", "ein mann faehrt rad"] * 4


def make_run(root: Path, family: str) -> tuple[Path, object]:
    """A run folder as `cosearch train` writes it: config, tokenizer, one checkpoint."""
    space = tiny_space(family, vocab=64)
    run = root / f"run_{family}"
    task = "translation" if family == "encoder_decoder" else "lm"
    write_config(run, {"space": space.to_dict(), "space_source": "<test>", "task": task, "data": None,
                       "seed": 0, "train": {"src": "en", "tgt": "de"}})
    tok = train_tokenizer(EN + DE, TokenizerSettings(vocab_size=60, keep_whitespace=family == "decoder_only"))
    assert tok.vocab_size <= space.vocab_size
    tok.save(run)
    net = random_supernet(space, seed=1)
    save_checkpoint(checkpoint_path(run, 7), {"step": 7, "model": net.state_dict()})
    return run, net


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = root / "data"
    data.mkdir()
    (data / "train.en").write_text("\n".join(EN) + "\n")
    (data / "train.de").write_text("\n".join(DE) + "\n")
    (data / "lm.txt").write_text("\n".join(EN + DE) + "\n")
    out = {"data": data}
    for family in ("encoder_decoder", "decoder_only"):
        run, net = make_run(root, family)
        arch = net.space.with_bits(net.space.sample(2), weight_bits=4)
        (root / f"{family}.json").write_text(arch.to_json())
        exp = root / f"exp_{family}"
        rc = main(["export", str(run), "--arch", str(root / f"{family}.json"), "--out", str(exp),
                   "--hardware", "zcu102"])
        assert rc == 0
        out[family] = (run, net, arch, exp)
    return out


def test_cli_export_from_a_run_folder(runs):
    run, net, arch, exp = runs["encoder_decoder"]
    assert {p.name for p in exp.iterdir()} == {".cosearch", "config.json", "model.safetensors", "tokenizer.model",
                                             "schedule.csv"}
    cfg = json.loads((exp / "config.json").read_text())
    assert cfg["task"] == "translation" and cfg["tokenizer"] == "tokenizer.model"
    assert cfg["source"]["step"] == 7 and cfg["languages"] == {"src": "en", "tgt": "de"}
    assert (exp / "tokenizer.model").read_bytes() == (run / "tokenizer.model").read_bytes()
    model = cosearch.load_exported(exp)
    x = inputs(net.space, seed=4)
    with torch.no_grad():
        assert torch.allclose(net(*x, arch=arch), model(*x), atol=1e-5, rtol=0)


def test_cli_export_mistakes_exit_2(runs, tmp_path, capsys):
    run, net, arch, exp = runs["decoder_only"]
    assert main(["export", str(run), "--trial", "3", "--out", str(tmp_path / "a")]) == 2
    assert "--arch" in capsys.readouterr().err
    assert main(["export", str(run), "--arch", str(tmp_path / "missing.json"), "--out", str(tmp_path / "b")]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(["export", str(run), "--arch", "{\"decoder\": 3}", "--out", str(tmp_path / "c")]) == 2
    assert main(["export", str(tmp_path / "nope"), "--arch", "x.json", "--out", str(tmp_path / "d")]) == 2
    assert main(["export", str(run), "--arch", arch.to_json(), "--out", str(exp)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(run), "--arch", arch.to_json(), "--out", str(tmp_path / "e"), "--integer"]) == 2
    assert "--integer chooses how the ONNX graphs compute; give it with --onnx" in capsys.readouterr().err
    from cosearch.export.folder import write_export
    with pytest.raises(UserError, match="give it with --onnx"):  # the API checks it too
        write_export(tmp_path / "f", net.extract(arch), net.space, arch,
                     onnx_integer=True)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert not (tmp_path / "e").exists() and not (tmp_path / "f").exists()


# --------------------------------------------------------------------------- search folders
def _fake_search(root: Path, run: Path, archs) -> Path:
    """trials.csv / search.json with the columns `cosearch search` writes (a subset)."""
    import pandas as pd
    d = root / "search"
    d.mkdir()
    rows = [{"number": i, "feasible": feas, "source": "measured", "quality": loss, "latency_ms": lat,
             "loss": loss, "bleu": float("nan"), "hw_params": "{}", "arch": a.to_json()}
            for i, (a, loss, lat, feas) in enumerate(archs)]
    rows.append({**rows[0], "number": len(rows), "source": "predicted", "loss": -1.0, "quality": -1.0})
    pd.DataFrame(rows).to_csv(d / "trials.csv", index=False)
    (d / "search.json").write_text(json.dumps({"run": str(run), "hw": "zcu102", "scenario": "prefill"}))
    return d


def test_export_from_a_search_folder(runs, tmp_path):
    run, net, _, _ = runs["decoder_only"]
    sp = net.space
    a0, a1, a2, a3 = (sp.sample(i) for i in range(4))
    search = _fake_search(tmp_path, run, [(a0, 3.0, 1.0, True), (a1, 2.0, 5.0, True),
                                          (a2, 1.0, 0.5, False), (a3, 2.5, 0.8, True)])
    out = export(tmp_path / "t2", search=search, trial=2)
    cfg = json.loads((out / "config.json").read_text())
    assert cosearch.Arch.from_dict(cfg["arch"]) == a2 and cfg["source"]["trial"] == 2
    assert cfg["search_metrics"]["loss"] == 1.0 and cfg["hardware"]["name"] == "zcu102"
    assert main(["export", str(search), "--pick", "best-quality", "--out", str(tmp_path / "best")]) == 0
    assert open_exported(tmp_path / "best").arch == a1  # a2 is infeasible
    assert main(["export", str(search), "--pick", "best-quality", "--latency-max", "2",
                 "--out", str(tmp_path / "fast")]) == 0
    assert open_exported(tmp_path / "fast").arch == a3
    with pytest.raises(UserError, match="no trial 9"):
        export(tmp_path / "x", search=search, trial=9)
    with pytest.raises(UserError, match="no feasible trial"):
        export(tmp_path / "x", search=search, pick="best-quality", latency_max=0.1)


# --------------------------------------------------------------------------- translate / generate
def test_translate_file_and_stdin(runs, tmp_path, capsys, monkeypatch):
    _, _, _, exp = runs["encoder_decoder"]
    src = tmp_path / "in.en"
    src.write_text("a dog runs\n\ntwo men play football\n")
    assert main(["translate", str(exp), "--input", str(src), "--beam", "3"]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""  # three lines, empty kept
    monkeypatch.setattr(sys, "stdin", io.StringIO("a dog runs\n\ntwo men play football\n"))
    assert main(["translate", str(exp), "--beam", "3"]) == 0
    assert capsys.readouterr().out.split("\n") == lines


def test_translate_equals_evaluation_decoding(runs):
    from cosearch.training.evaluate import beam_search
    run, net, arch, exp = runs["encoder_decoder"]
    e = open_exported(exp)
    tok = e.tokenizer()
    got = list(translate_lines(e, ["a woman reads a book"], beam=2))
    ids = torch.tensor([tok.encode("a woman reads a book") + [tok.eos_id]])
    sub = net.extract(arch).eval()
    ref = beam_search(sub, ids, 2, tok.bos_id, tok.eos_id, int(ids.shape[1] * 1.5 + 10), tok.vocab_size)
    assert got == [tok.decode(ref[0])]


def test_generate_is_seeded_and_kv_cache_matches_full_forward(runs):
    _, _, _, exp = runs["decoder_only"]
    e = open_exported(exp)
    a = generate_text(e, "a dog", max_new_tokens=12, seed=5)
    assert a == generate_text(e, "a dog", max_new_tokens=12, seed=5)
    # greedy with the cache == greedy by re-running the whole sequence (within the window)
    vocab, window = e.tokenizer().vocab_size, e.space.spec.max_positions
    prompt = [5, 9, 11]
    new = sample_tokens(e.model, prompt, 20, vocab, window, temperature=0)
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(20):
            seq.append(int(e.model(torch.tensor([seq]))[0, -1, :vocab].argmax()))
    assert new == seq[len(prompt):]
    # past the window it keeps going on recent context
    assert len(sample_tokens(e.model, prompt, window + 10, vocab, window, temperature=1.0)) == window + 10


def test_generate_cli(runs, capsys):
    _, _, _, exp = runs["decoder_only"]
    assert main(["generate", str(exp), "--prompt", "a dog", "--max-new-tokens", "5", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("a dog")


def test_wrong_family_and_missing_tokenizer(runs, tmp_path, capsys):
    _, net, arch, exp_lm = runs["decoder_only"]
    assert main(["translate", str(exp_lm), "--input", str(exp_lm / "config.json")]) == 2
    assert "cosearch generate" in capsys.readouterr().err
    bare = export(tmp_path / "bare", supernet=net, arch=arch)
    assert main(["generate", str(bare), "--prompt", "x"]) == 2
    assert "no tokenizer" in capsys.readouterr().err
    assert main(["generate", str(exp_lm), "--prompt", "x", "--temperature", "-1"]) == 2


# --------------------------------------------------------------------------- finetune
def test_fixed_scale_requantization_starts_at_the_export(runs):
    _, _, _, exp = runs["encoder_decoder"]
    model = cosearch.load_exported(exp)
    x = inputs(open_exported(exp).space, seed=1)
    with torch.no_grad():
        ref = model(*x)
        got = attach_fixed_quantizers(model)(*x)
    assert torch.equal(ref, got)


@pytest.mark.parametrize("family", ["encoder_decoder", "decoder_only"])
def test_finetune_writes_a_valid_export_and_learns(runs, tmp_path, family):
    _, _, _, exp = runs[family]
    data = runs["data"] if family == "encoder_decoder" else runs["data"] / "lm.txt"
    with pytest.raises(UserError, match="--steps"):  # no silent copy of the export
        finetune(exp, data, steps=0, out=tmp_path / "zero", progress=False)
    assert not (tmp_path / "zero").exists()
    out = finetune(exp, data, steps=25, lr=3e-3, out=tmp_path / "ft", progress=False, max_tokens=256)
    before, after = open_exported(exp), open_exported(out)
    assert after.arch == before.arch
    hist = after.config["finetuned"][-1]
    assert hist["steps"] == 25 and hist["last_loss"] < hist["first_loss"]
    sb, sa = before.model.state_dict(), after.model.state_dict()
    scales = [k for k in sb if k.endswith("weight_scale")]
    assert scales and all(torch.equal(sb[k], sa[k]) for k in scales)  # stored scales fixed
    assert any(not torch.equal(sb[k], sa[k]) for k in sb if k.endswith(".weight"))
    assert (out / "tokenizer.model").is_file() and (out / "schedule.csv").is_file()


@pytest.mark.parametrize("family", ["encoder_decoder", "decoder_only"])
def test_finetune_killed_then_rerun_ends_at_the_same_weights(runs, tmp_path, family):
    """As train: a fine-tune stopped after step 5 (last checkpoint: step 4; dropout on)
    and run again ends bit-identical to one that was never stopped."""
    _, _, _, exp = runs[family]
    data = runs["data"] if family == "encoder_decoder" else runs["data"] / "lm.txt"
    kw = dict(steps=7, lr=3e-3, max_tokens=256, ckpt_every=2, progress=False)
    whole = finetune(exp, data, out=tmp_path / "whole", **kw)
    finetune(exp, data, out=tmp_path / "cut", stop_at=5, **kw)
    work = tmp_path / ".cut.finetune"
    assert not (tmp_path / "cut").exists() and sorted(p.name for p in (work / "checkpoints").iterdir()) == \
        ["step_00000004.pt"]
    with pytest.raises(UserError, match="lr=0.003"):  # other settings do not mix into it
        finetune(exp, data, out=tmp_path / "cut", **{**kw, "lr": 1e-3})
    cut = finetune(exp, data, out=tmp_path / "cut", **kw)
    from safetensors import safe_open  # (the header's key order varies between writes)
    fw, fc = (safe_open(str(d / "model.safetensors"), "pt") for d in (whole, cut))
    assert fw.metadata() == fc.metadata() and sorted(fw.keys()) == sorted(fc.keys())
    assert all(torch.equal(fw.get_tensor(k), fc.get_tensor(k)) for k in fw.keys())
    hw, hc = (json.loads((d / "config.json").read_text())["finetuned"][-1] for d in (whole, cut))
    assert hw["first_loss"] == hc["first_loss"] and hw["last_loss"] == hc["last_loss"]
    assert not work.exists()  # finished: nothing left to resume


def test_finetune_cli_and_mistakes(runs, tmp_path, capsys):
    _, _, _, exp = runs["decoder_only"]
    assert main(["finetune", str(exp), "--data", str(runs["data"] / "lm.txt"), "--steps", "2",
                 "--out", str(tmp_path / "ft")]) == 0
    assert cosearch.load_exported(tmp_path / "ft") is not None
    assert main(["finetune", str(exp), "--data", str(tmp_path / "none.txt"), "--steps", "2",
                 "--out", str(tmp_path / "ft2")]) == 2
    assert "none.txt" in capsys.readouterr().err
    assert not (tmp_path / "ft2").exists()


@pytest.mark.slow  # a real (tiny) search: ~15 s on 2 cores
def test_export_from_a_real_search(runs, tmp_path):
    study = pytest.importorskip("cosearch.search.study")
    run, net, _, _ = runs["decoder_only"]
    import pandas as pd
    study.search(None, "zcu102", out=tmp_path / "s", trials=8, quality="synthetic", space=net.space,
                 progress=False)
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    if "run" not in json.loads((tmp_path / "s" / "search.json").read_text()):
        with pytest.raises(UserError, match="--run"):
            export(tmp_path / "e0", search=tmp_path / "s", trial=0)
    n = int(df["number"].iloc[-1])
    assert main(["export", str(tmp_path / "s"), "--trial", str(n), "--run", str(run),
                 "--out", str(tmp_path / "e")]) == 0
    e = open_exported(tmp_path / "e")
    assert e.arch == cosearch.Arch.from_json(df["arch"].iloc[-1])
    assert e.config["hardware"]["name"] == "zcu102" and e.config["search_metrics"]["number"] == n
    assert e.config["predicted"]["latency_ms"] == pytest.approx(df["latency_ms"].iloc[-1], rel=1e-6)
    assert main(["export", str(tmp_path / "s"), "--pick", "best-quality", "--run", str(run),
                 "--out", str(tmp_path / "b")]) == 0
    best = df[df["feasible"] & (df["source"] == "synthetic")].sort_values("loss").iloc[0]
    assert open_exported(tmp_path / "b").arch == cosearch.Arch.from_json(best["arch"])


def test_export_from_a_chosen_checkpoint(tmp_path):
    run, net7 = make_run(tmp_path, "decoder_only")
    net3 = random_supernet(net7.space, seed=9)
    save_checkpoint(checkpoint_path(run, 3), {"step": 3, "model": net3.state_dict()})
    arch = net7.space.sample(1)
    x = inputs(net7.space)
    for ckpt, net, step in ((None, net7, 7), (checkpoint_path(run, 3), net3, 3)):
        out = export(tmp_path / f"e{step}", run=run, arch=arch, checkpoint=ckpt)
        e = open_exported(out)
        assert e.config["source"]["step"] == step
        with torch.no_grad():
            assert torch.allclose(net(*x, arch=arch), e.model(*x), atol=1e-5, rtol=0)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="bad.pt"):
        export(tmp_path / "x", run=run, arch=arch, checkpoint=tmp_path / "bad.pt")


# --------------------------------------------------------------------------- onnx engine, held-out data, crafted configs
@pytest.fixture(scope="module")
def onnx_exports(runs, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for family in ("encoder_decoder", "decoder_only"):
        run, _, arch, _ = runs[family]
        out[family] = root / family
        assert main(["export", str(run), "--arch", arch.to_json(), "--out", str(out[family]), "--onnx"]) == 0
    return out


@pytest.mark.parametrize("beam", [1, 3])
def test_translate_engine_onnx_equals_torch(onnx_exports, tmp_path, capsys, beam):
    src = tmp_path / "in.en"
    src.write_text("\n".join(EN[:6]) + "\n\na man rides\n")
    outs = []
    for engine in ("torch", "onnx"):
        assert main(["translate", str(onnx_exports["encoder_decoder"]), "--input", str(src), "--beam", str(beam),
                     "--engine", engine, "--no-progress"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and len(outs[0].split("\n")) == 9


def test_generate_engine_onnx_equals_torch(onnx_exports):
    exp = open_exported(onnx_exports["decoder_only"])
    a = generate_text(exp, "a dog", max_new_tokens=40, temperature=0, engine="torch")
    b = generate_text(exp, "a dog", max_new_tokens=40, temperature=0, engine="onnx")
    assert a == b
    # past the window the ONNX cache restarts like the torch one
    vocab, window = exp.tokenizer().vocab_size, exp.space.spec.max_positions
    assert sample_tokens(exp.onnx_model(), [5, 9], window + 5, vocab, window, temperature=0) == \
        sample_tokens(exp.model, [5, 9], window + 5, vocab, window, temperature=0)


def _by_full_forward(model, prompt, steps, vocab, window, stop, temperature=0.0, seed=0):
    """A continuation that re-reads the whole context every step (no cache, no batch, no
    padding), with the sliding rule of ``sample_batch``: a context that fills the window
    restarts from the last half window. Samples with ``next_token`` and its own generator."""
    g = torch.Generator().manual_seed(seed)
    seq, ctx, new = list(prompt), list(prompt), []
    for _ in range(steps):
        with torch.no_grad():
            t = int(next_token(model(torch.tensor([ctx]))[:, -1, :vocab], temperature, None, g)[0])
        if t == stop:
            break
        new.append(t)
        seq.append(t)
        ctx = seq[-(window // 2):] if len(ctx) >= window else ctx + [t]
    return new


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_batched_generation_equals_each_prompt_alone(onnx_exports, engine):
    """Prompts of different lengths in one padded batch (and past the window, where rows
    restart at different steps) give each prompt the tokens it gets alone."""
    exp = open_exported(onnx_exports["decoder_only"])
    tok = exp.tokenizer()
    window = exp.space.spec.max_positions
    prompts = ["a dog", "two men play football in the park and", "", "the cat sleeps on the"]
    ids = [tok.encode(p) if p else tok.encode("\n") for p in prompts]
    net = exp.model if engine == "torch" else exp.onnx_model()
    for steps, temperature in ((12, 0.0), (window + 8, 0.0), (window + 8, 1.0)):
        batch = generate_text(exp, prompts, max_new_tokens=steps, temperature=temperature, top_k=None, seed=4,
                              engine=engine, batch_size=3)
        ref = [tok.decode(_by_full_forward(net, x, steps, tok.vocab_size, window, tok.eos_id, temperature, 4))
               for x in ids]
        assert batch == ref, (steps, temperature)
        if temperature:  # rows ran past the window, so the restarts were exercised
            assert sum(len(tok.encode(t)) + len(x) > window for t, x in zip(batch, ids)) >= 2


def test_generate_cli_batches_prompts(onnx_exports, tmp_path, capsys):
    exp = onnx_exports["decoder_only"]
    (tmp_path / "prompts.txt").write_text("a dog\nthe cat sleeps\n")
    for engine in ("torch", "onnx"):
        assert main(["generate", str(exp), "--input", str(tmp_path / "prompts.txt"), "--max-new-tokens", "6",
                     "--temperature", "0", "--engine", engine]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["prompt"] for r in rows] == ["a dog", "the cat sleeps"]
        assert [r["text"] for r in rows] == [generate_text(exp, p, max_new_tokens=6, temperature=0)
                                             for p in ("a dog", "the cat sleeps")]
    assert main(["generate", str(exp), "--prompt", "a", "--prompt", "b", "--max-new-tokens", "3"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_inputs_longer_than_max_positions_are_one_line(onnx_exports, tmp_path, capsys):
    long = " ".join(["a dog runs in the park"] * 20)
    for engine in ("torch", "onnx"):
        assert main(["generate", str(onnx_exports["decoder_only"]), "--prompt", long, "--engine", engine]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "max_positions 32" in err
        (tmp_path / "in.en").write_text("a dog\n" + long + "\n")
        assert main(["translate", str(onnx_exports["encoder_decoder"]), "--input", str(tmp_path / "in.en"),
                     "--engine", engine]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "line 2" in err and "max_positions 32" in err


@pytest.mark.parametrize("family,command,broken", [("decoder_only", "generate", "model.onnx"),
                                                    ("encoder_decoder", "translate", "decoder_model.onnx")])
def test_damaged_onnx_graph_exits_2_with_one_line(onnx_exports, tmp_path, capsys, family, command, broken):
    d = tmp_path / "copy"
    d.mkdir()
    for p in onnx_exports[family].iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    data = (d / broken).read_bytes()
    (d / broken).write_bytes(data[: len(data) // 3])
    src = tmp_path / "in.txt"
    src.write_text("a dog\n")
    extra = ["--prompt", "a dog"] if command == "generate" else ["--input", str(src)]
    assert main([command, str(d), *extra, "--engine", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and broken in err and "export again" in err


def test_engine_onnx_without_graphs_exits_2(runs, capsys):
    _, _, _, exp = runs["decoder_only"]
    assert main(["generate", str(exp), "--prompt", "a", "--engine", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "--onnx" in err and len(err.strip().splitlines()) == 1


def test_crafted_config_sizes_exit_2_without_allocating(runs, tmp_path, capsys):
    _, _, _, exp = runs["decoder_only"]
    d = tmp_path / "crafted"
    d.mkdir()
    for p in exp.iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    cfg = json.loads((d / "config.json").read_text())
    cfg["space"]["vocab_size"] = 2 ** 22  # the largest sizes a space may name (cosearch.space.SIZE_LIMITS)
    cfg["space"]["decoder"]["embed_dim"] = [2 ** 16]
    cfg["space"]["decoder"]["heads"] = [2]
    cfg["arch"]["decoder_embed_dim"] = 2 ** 16
    for la in cfg["arch"]["decoder"]:
        la["heads"] = 2
    (d / "config.json").write_text(json.dumps(cfg))
    assert main(["generate", str(d), "--prompt", "a"]) == 2  # 2.7x10^11 weights would need 1 TB
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "config.json" in err and "MB of weights" in err


def test_lm_finetune_holds_out_the_validation_tail(runs):
    from cosearch.data.tasks import split_lm_text
    from cosearch.deploy.finetune import _batches
    _, _, _, exp = runs["decoder_only"]
    e = open_exported(exp)
    tok = e.tokenizer()
    text_file = runs["data"] / "lm.txt"
    batches, held = _batches(e, tok, text_file, 256, 0, "en", "de")
    train_text, valid_text = split_lm_text(text_file.read_text())
    assert valid_text and "5%" in held
    assert batches.ids.tolist() == tok.encode(train_text)
