"""Evaluation of trained runs: loss/ppl, beam search with the KV cache, BLEU, arch files."""
from __future__ import annotations

import json
import math

import pytest
import torch

from cosearch.cli import main
from cosearch.errors import UserError
from cosearch.training.evaluate import beam_search, evaluate, eval_loss, greedy_decode, load_run, resolve_arch
from cosearch.space import SearchSpace
from cosearch.model.supernet import Supernet
from cosearch.training.train import load_task_data, train

from train_fixtures import lm_space, mt_space, one_thread, write_lm_text, write_word_translation  # noqa: F401


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mt")
    data = write_word_translation(root / "data")
    train(mt_space(), "translation", data, root / "run", steps=30, max_tokens=256, lr=3e-3,
          log_every=10, ckpt_every=30, progress=False)
    return root / "run"


def test_beam_one_is_greedy_and_beams_are_consistent(one_thread):
    torch.manual_seed(0)
    space = SearchSpace.from_dict(mt_space())
    net = Supernet(space).eval()
    for arch in (space.largest(), space.smallest(), space.sample(3)):
        model = net.extract(arch).eval()
        src = torch.randint(4, 64, (5, 7))
        src[1, -3:] = 0
        g = greedy_decode(model, src, bos=2, eos=3, max_len=12, vocab=64)
        assert beam_search(model, src, 1, bos=2, eos=3, max_len=12, vocab=64) == g
        b4 = beam_search(model, src, 4, bos=2, eos=3, max_len=12, vocab=64, len_penalty=0.0)
        assert len(b4) == 5 and all(len(s) <= 12 and 3 not in s for s in b4)
        # batching and padding do not change a sentence's translation
        for i in (0, 1):
            one = src[i:i + 1, : int((src[i] != 0).sum())]
            assert beam_search(model, one, 4, bos=2, eos=3, max_len=12, vocab=64, len_penalty=0.0) == [b4[i]]


def test_translation_eval_keys_and_inheritance(mt_run, tmp_path, one_thread):
    r = evaluate(mt_run, "largest", "valid", beam=3, hypotheses_out=tmp_path / "hyp.txt")
    assert {"loss", "ppl", "bleu"} <= set(r) and r["ppl"] == pytest.approx(math.exp(r["loss"]))
    assert 0 <= r["bleu"] <= 100 and r["step"] == 30
    assert len((tmp_path / "hyp.txt").read_text().splitlines()) == 30
    # the extracted model's loss equals the supernet's own on that arch
    run = load_run(mt_run)
    td = load_task_data(run.config, mt_run)
    arch = run.space.smallest()
    run.net.set_arch(arch)
    ref, _ = eval_loss(lambda *x: run.net(*x, arch=arch), td.batches("valid", max_tokens=4096, shuffle=False,
                       repeat=False), 0, td.tokenizer.vocab_size, torch.device("cpu"))
    small = evaluate(mt_run, "smallest", "valid", bleu_score=False)
    assert small["loss"] == pytest.approx(ref, abs=1e-5) and "bleu" not in small
    # trained: better than a uniform guess over the vocabulary
    assert r["loss"] < math.log(td.tokenizer.vocab_size)
    assert run.checkpoint.endswith("step_00000030.pt")
    with pytest.raises(UserError, match="does not exist"):
        evaluate(mt_run, "largest", checkpoint=mt_run / "checkpoints" / "step_00000007.pt")


def test_eval_cli_json_and_arch_files(mt_run, tmp_path, capsys, one_thread):
    space = load_run(mt_run).space
    f = tmp_path / "arch.json"
    f.write_text(space.smallest().to_json())
    assert main(["eval", "--run", str(mt_run), "--arch", str(f), "--split", "test", "--json",
                 "--beam", "2", "--max-sentences", "5"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert {"loss", "ppl", "bleu"} <= set(out) and out["split"] == "test"
    assert "translate test" in cap.err  # the decoding progress bar
    assert main(["eval", "--run", str(mt_run), "--arch", str(f), "--split", "test", "--json",
                 "--beam", "2", "--max-sentences", "5", "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out) == out and "translate" not in cap.err
    assert resolve_arch(space, str(f)) == space.smallest()
    f.write_text(json.dumps({"arch": space.largest().to_dict(), "objectives": [1, 2]}))
    assert resolve_arch(space, str(f)) == space.largest()
    bad = dict(space.largest().to_dict(), decoder_embed_dim=999)
    f.write_text(json.dumps(bad))
    assert main(["eval", "--run", str(mt_run), "--arch", str(f)]) == 2
    assert "decoder_embed_dim = 999" in capsys.readouterr().err
    f.write_text("{not json")
    with pytest.raises(UserError, match="not an arch JSON"):
        resolve_arch(space, str(f))
    with pytest.raises(UserError, match="largest, smallest"):
        resolve_arch(space, "biggest")
    assert main(["eval", "--run", str(tmp_path)]) == 2
    assert "not a cosearch run" in capsys.readouterr().err


def test_lm_eval(tmp_path, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    train(lm_space(), "lm", data, tmp_path / "r", steps=2, max_tokens=128, progress=False)
    r = evaluate(tmp_path / "r", "smallest")
    assert set(r) >= {"loss", "ppl"} and "bleu" not in r
    assert r["ppl"] == pytest.approx(math.exp(r["loss"])) and r["tokens"] > 0
