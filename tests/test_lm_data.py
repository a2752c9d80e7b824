"""LM data with real splits (issue 22): split files (.xz/.gz/plain), the held-out 5% when
there is no valid file, the token cache, bits per byte, and the code_lm space preset."""
from __future__ import annotations

import gzip
import lzma
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import cosearch.data.token_cache as token_cache
from cosearch.cli import main
from cosearch.data import build_task_data
from cosearch.data.readers import iter_text_chunks
from cosearch.space import SearchSpace
from cosearch.training.evaluate import bits_per_byte, loss_sums

from train_fixtures import lm_space, one_thread  # noqa: F401

SHARED = Path(os.environ.get("COSEARCH_SHARED_DATA",
                             Path(__file__).resolve().parents[1].parent / "shared" / "data"))

_NAMES = "buf len dev ctx req page node lock flags addr size count ret err".split()


def c_code(n_funcs: int, seed: int = 0) -> str:
    """C-like text with tabs, runs of spaces, comments and a few non-ASCII characters."""
    rng = random.Random(seed)
    out = []
    for i in range(n_funcs):
        a, b = rng.choice(_NAMES), rng.choice(_NAMES)
        out.append(f"// file: drivers/x/f{i}.c\nstatic int f{i}(struct {a} *{b})\n{{\n"
                   f"\tif ({b}->{a}  == {rng.randint(0, 99)})\n\t\treturn -EINVAL;  /* {rng.choice(['ok', 'µs', 'naïve'])} */\n"
                   f"\treturn {b}->{rng.choice(_NAMES)} + {i};\n}}\n\n")
    return "".join(out)


def write(path: Path, text: str) -> Path:
    data = text.encode("utf-8")
    if path.name.endswith(".xz"):
        path.write_bytes(lzma.compress(data))
    elif path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("code")
    texts = {"train": c_code(400, 0), "valid": c_code(30, 1), "test": c_code(30, 2)}
    write(d / "train.txt.xz", texts["train"])
    write(d / "valid.txt", texts["valid"])
    write(d / "test.gz", texts["test"])
    return d, texts


# ----------------------------------------------------------------------------- split reader
def test_stream_chunks_join_to_the_text(tmp_path):
    text = "\ufeffline one\r\nline two\n" + c_code(50) + "no newline at the end"
    for name in ("t.txt", "t.txt.gz", "t.txt.xz"):
        chunks = list(iter_text_chunks(write(tmp_path / name, text), chunk_bytes=64))
        assert len(chunks) > 10
        assert "".join(chunks) == text.removeprefix("\ufeff").replace("\r\n", "\n")
        assert all(c.endswith("\n") for c in chunks[:-1])


def test_split_files_read_exactly(code_dir, tmp_path):
    d, texts = code_dir
    td = build_task_data("lm", d, 400, tmp_path / "w", max_len=16, tokenizer="bpe")
    assert td.info["files"] == {"train": "train.txt.xz", "valid": "valid.txt", "test": "test.gz"}
    assert td.info["valid"] == "file"
    for split in ("train", "valid", "test"):
        ids = td.split(split)
        assert ids.dtype == np.uint16 and isinstance(ids, np.memmap)
        # byte fallback and exact whitespace: every split decodes back to its text
        assert td.tokenizer.decode(ids.tolist()) == texts[split]


def test_missing_valid_holds_out_the_end_of_train(code_dir, tmp_path):
    d, texts = code_dir
    d2 = tmp_path / "d"
    d2.mkdir()
    (d2 / "train.txt.xz").write_bytes((d / "train.txt.xz").read_bytes())
    td = build_task_data("lm", d2, 400, tmp_path / "w", max_len=16, tokenizer="bpe")
    text = texts["train"]
    head, tail = td.tokenizer.decode(td.train.tolist()), td.tokenizer.decode(td.valid.tolist())
    assert head + tail == text and head.endswith("\n")  # valid starts at a line
    # the first line start at or after 95% of the text
    assert int(0.95 * len(text)) <= len(head) and "\n" not in text[int(0.95 * len(text)):len(head) - 1]
    assert td.test is None and td.info["valid"] == "last 5% of train"


def _train_cli(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--space", "tiny_lm", "--task", "lm", "--data", str(data), "--out", str(out),
                 "--steps", "1", "--no-progress", "--tokenizer", "bpe", *extra])


@pytest.mark.parametrize("bad", ["empty", "blank", "binary", "latin1", "two_train", "no_train", "corrupt_xz"])
def test_bad_split_files_are_one_line_and_exit_2(code_dir, tmp_path, capsys, monkeypatch, bad):
    d, texts = code_dir

    def no_work(*a, **k):
        raise AssertionError("a tokenizer was trained before every split file was checked")
    monkeypatch.setattr("cosearch.data.tasks.train_or_load_streamed", no_work)
    data = tmp_path / "data"
    data.mkdir()
    write(data / "train.txt.xz", texts["train"])
    write(data / "valid.txt", texts["valid"])
    want = {"empty": "valid.txt holds no text", "blank": "valid.txt holds no text",
            "binary": "test.txt looks binary", "latin1": "valid.txt is not UTF-8 (bad byte at line 2)",
            "two_train": "2 train files", "no_train": "no train file",
            "corrupt_xz": "cannot read"}[bad]
    if bad == "empty":
        write(data / "valid.txt", "")
    elif bad == "blank":
        write(data / "valid.txt", "  \n\n\t\n")
    elif bad == "binary":
        (data / "test.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" * 50)
    elif bad == "latin1":
        (data / "valid.txt").write_bytes("int a;\n/* straße */\n".encode("latin-1"))
    elif bad == "two_train":
        write(data / "train.txt", texts["train"])
    elif bad == "no_train":
        (data / "train.txt.xz").unlink()
    elif bad == "corrupt_xz":
        (data / "train.txt.xz").write_bytes(lzma.compress(texts["train"].encode())[:200])
    out = tmp_path / "run"
    assert _train_cli(data, out) == 2
    err = capsys.readouterr().err
    assert want in err and err.count("\n") == 1, err
    assert not out.exists()  # nothing half-made


def test_binary_past_the_start_is_caught_while_streaming(tmp_path):
    path = write(tmp_path / "train.txt", "int a;\n" * 20000 + "x\x00y\n")
    with pytest.raises(Exception, match=r"train.txt looks binary \(a NUL byte at line 20001\)"):
        list(iter_text_chunks(path, chunk_bytes=4096))


# ----------------------------------------------------------------------------- token cache
def test_chunked_encoding_equals_whole_text_encoding(code_dir, tmp_path, monkeypatch):
    d, texts = code_dir
    td = build_task_data("lm", d, 400, tmp_path / "w", max_len=16, tokenizer="bpe")
    monkeypatch.setattr(token_cache, "_PIECE_CHARS", 37)  # many cuts inside every chunk
    [ids] = list(token_cache.encode_chunks(td.tokenizer, iter([texts["train"]])))
    assert ids.tolist() == td.tokenizer.encode(texts["train"])


def test_token_cache_is_reused_and_follows_the_content(code_dir, tmp_path, monkeypatch):
    d, texts = code_dir
    data = tmp_path / "data"
    data.mkdir()
    for f in d.iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    work = tmp_path / "w"
    first = build_task_data("lm", data, 400, work, max_len=16, tokenizer="bpe")
    files = sorted((work / "tokenizers").glob("tokens-*.u16"))
    assert len(files) == 3 and first.info["train_tokens"] == os.path.getsize(first.train.filename) // 2

    def no_encoding(*a, **k):
        raise AssertionError("encoded again although the cache holds this data")
    monkeypatch.setattr(token_cache, "encode_chunks", no_encoding)
    again = build_task_data("lm", data, 400, work, max_len=16, tokenizer="bpe")
    assert np.array_equal(again.valid, first.valid) and again.train.filename == first.train.filename
    monkeypatch.undo()

    # new valid text: valid is encoded again, train (and its tokenizer) are reused
    write(data / "valid.txt", texts["valid"].replace("return", "goto out"))
    changed = build_task_data("lm", data, 400, work, max_len=16, tokenizer="bpe")
    assert changed.train.filename == first.train.filename
    assert changed.valid.filename != first.valid.filename
    assert changed.tokenizer.decode(changed.valid.tolist()) == texts["valid"].replace("return", "goto out")
    assert len(list((work / "tokenizers").glob("tokens-*.u16"))) == 4
    # another tokenizer (vocabulary) never reads the old ids
    other = build_task_data("lm", data, 500, work, max_len=16, tokenizer="bpe")
    assert other.train.filename != first.train.filename


# ----------------------------------------------------------------------------- bits per byte
def test_bits_per_byte_by_hand():
    class Uniform(torch.nn.Module):  # equal logits over 4 ids: ln 4 nats per token
        def forward(self, x):
            return torch.zeros(*x.shape, 4)
    batches = [{"input": torch.tensor([[1, 1, 2]]), "target": torch.tensor([[1, 2, 3]])},
               {"input": torch.tensor([[0, 3, 3]]), "target": torch.tensor([[3, 0, 2]])}]  # 0 = pad
    # the pad id's 5 bytes must not count: padding is no text
    s = loss_sums(Uniform(), batches, 0, 4, torch.device("cpu"), token_bytes=torch.tensor([5, 1, 2, 3]), rows=True)
    assert s.tokens == 5 and s.bytes == 1 + 2 + 3 + 3 + 2
    assert s.nats == pytest.approx(5 * math.log(4))
    assert s.row_bytes == [6, 5] and s.row_nats == pytest.approx([3 * math.log(4), 2 * math.log(4)])
    # 5 tokens x 2 bits over 11 bytes
    assert bits_per_byte(s.nats, s.bytes) == pytest.approx(10 / 11)


def test_token_bytes_sum_to_the_text_bytes(code_dir, tmp_path):
    d, texts = code_dir
    tok = build_task_data("lm", d, 400, tmp_path / "w", max_len=16, tokenizer="bpe").tokenizer
    table = tok.token_bytes()
    text = "\tint  x;  // µs 中文 \U0001F600\n\n   }\n" + texts["test"]
    ids = tok.encode(text)
    assert any(tok.id_to_piece(i).startswith("<0x") for i in ids)  # byte fallback is exercised
    assert int(table[ids].sum()) == len(text.encode("utf-8"))
    assert table[tok.pad_id] == table[tok.bos_id] == table[tok.eos_id] == table[tok.unk_id] == 0


def test_eval_reports_bits_per_byte_of_the_evaluated_text(code_dir, tmp_path, capsys, one_thread):
    d, texts = code_dir
    space = tmp_path / "s.yaml"
    import yaml
    space.write_text(yaml.safe_dump(dict(lm_space(), vocab_size=400)))
    run = tmp_path / "run"
    assert main(["train", "--space", str(space), "--task", "lm", "--data", str(d), "--out", str(run),
                 "--steps", "2", "--max-len", "16", "--max-tokens", "64", "--no-progress",
                 "--tokenizer", "bpe"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--split", "test", "--max-tokens", "64", "--json"]) == 0
    import json
    r = json.loads(capsys.readouterr().out)
    from cosearch.training.train import load_task_data
    from cosearch.training.rundir import read_config
    td = load_task_data(read_config(run), run)
    ids = np.asarray(td.test, dtype=np.int64)
    n_blocks = len(range(0, len(ids) - 16, 16))
    targets = ids[1:1 + 16 * n_blocks]  # every block predicts its 16 next tokens
    nbytes = int(td.tokenizer.token_bytes()[targets].sum())
    assert r["tokens"] == len(targets) and r["bytes"] == nbytes
    assert r["bits_per_byte"] == pytest.approx(r["loss"] * r["tokens"] / (math.log(2) * nbytes), rel=1e-12)


def test_bpe_tokenizer_is_for_lm_only(tmp_path, capsys):
    from train_fixtures import write_word_translation
    data = write_word_translation(tmp_path / "mt", n_train=20, n_eval=5)
    assert main(["train", "--space", "multi30k", "--task", "translation", "--data", str(data), "--out",
                 str(tmp_path / "r"), "--steps", "1", "--tokenizer", "bpe", "--no-progress"]) == 2
    assert "--tokenizer bpe is for --task lm" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the space
def test_code_lm_preset():
    space = SearchSpace.load("code_lm")
    s = space.spec
    assert (s.family, s.vocab_size, s.max_positions, s.quantization.embedding_bits) == ("decoder_only", 8192, 512, 8)
    assert s.quantization.weight_bits == [1.58, 2, 3, 4, 8, 16] and s.quantization.act_bits == [8, 16]
    assert (s.decoder.layers[0], s.decoder.layers[-1], s.decoder.embed_dim[0], s.decoder.embed_dim[-1]) == (4, 12, 256, 768)
    big, small = space.largest(), space.smallest()
    assert {la.weight_bits for la in small.decoder} == {1.58} and {la.weight_bits for la in big.decoder} == {16}

    def params(e, layers, ffn, attn):  # by hand: table, per layer q/k/v/out + fc1/fc2 with biases, norms
        per = 3 * (e * attn + attn) + (attn * e + e) + (e * ffn + ffn) + (ffn * e + e) + 2 * 2 * e
        return 8192 * e + layers * per + 2 * e
    assert space.param_count(big) == params(768, 12, 3072, 768) == 91_347_456
    assert space.param_count(small) == params(256, 4, 512, 256)
    assert space.param_count(big) / space.param_count(small) > 20


def test_tokenizer_sample_is_seeded_uniform_and_in_text_order(tmp_path):
    from cosearch.data.lm_text import TextSource, sample_lines
    text = "".join(f"line {i}\n" + ("\n" if i % 7 == 0 else "") for i in range(3000))
    src = TextSource("train", path=write(tmp_path / "train.txt.xz", text))
    a = sample_lines(src, 300)
    assert a == sample_lines(src, 300)  # the same sample every time (sentencepiece's own was not)
    nums = [int(x.split()[1]) for x in a]
    assert nums == sorted(nums) and len(set(nums)) == len(nums)
    assert 230 <= len(a) <= 300  # blank lines drawn (1 in 8) are dropped
    assert min(nums) < 300 and max(nums) > 2700  # drawn from the whole text
    assert sample_lines(src, 10_000) == [f"line {i}" for i in range(3000)]


def test_finetune_on_a_split_folder_reads_its_train_file_only(code_dir, tmp_path):
    from types import SimpleNamespace

    from cosearch.deploy.finetune import _batches
    d, texts = code_dir
    tok = build_task_data("lm", d, 400, tmp_path / "w", max_len=16, tokenizer="bpe").tokenizer
    exp = SimpleNamespace(task="lm", space=SearchSpace.from_dict(dict(lm_space(), vocab_size=400)), path=d)
    batches, held = _batches(exp, tok, d, 256, 0, "en", "de")
    assert batches.ids.tolist() == tok.encode(texts["train"])  # valid and test stay unseen
    assert "valid and test files" in held
