"""Tasks and data: readers, default corpus, tokenizer cache, resumable batchers."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import cosearch.data.tokenizer as tokenizer_mod
from cosearch.data import (LMBatches, Tokenizer, TranslationBatches, build_task_data,
                           default_corpus, list_splits, read_parallel, read_text,
                           resolve_split, split_lm_text, train_or_load_tokenizer)
from cosearch.errors import UserError

SHARED = Path(os.environ.get("COSEARCH_SHARED_DATA",
                             Path(__file__).resolve().parents[1].parent / "shared" / "data"))

_WORDS = ("a man woman dog child runs walks sits on the in red blue green street park "
          "ball water with and near big small old young").split()
_WORTE = ("ein mann frau hund kind läuft geht sitzt auf der im rot blau grün straße park "
          "ball wasser mit und bei groß klein alt jung").split()


def _sentences(n: int, words=_WORDS, seed: int = 0, lo: int = 3, hi: int = 12) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=rng.integers(lo, hi))) + " ." for _ in range(n)]


def _write(path: Path, lines: list[str]) -> None:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _corpus(folder: Path, n_train: int = 300, gz: bool = False, valid: str = "val",
            test: str | None = "test_2016_flickr") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for i, split in enumerate(s for s in ("train", valid, test) if s):
        n = n_train if split == "train" else 40
        _write(folder / f"{split}.en{ext}", _sentences(n, _WORDS, seed=i))
        _write(folder / f"{split}.de{ext}", _sentences(n, _WORTE, seed=i))
    return folder


@pytest.fixture(scope="module")
def small_tok(tmp_path_factory) -> Tokenizer:
    texts = _sentences(300, _WORDS) + _sentences(300, _WORTE)
    return train_or_load_tokenizer(texts, 200, tmp_path_factory.mktemp("tok"))


# ----------------------------------------------------------------------------- readers
@pytest.mark.parametrize("gz", [False, True])
def test_read_parallel_plain_and_gz(tmp_path, gz):
    ext = ".gz" if gz else ""
    _write(tmp_path / f"train.en{ext}", ["a man .", "  two dogs\u2028run .  ", "x"])
    _write(tmp_path / f"train.de{ext}", ["ein mann .", "zwei hunde\r", "y"])
    pairs = read_parallel(tmp_path, "en", "de", "train")
    # U+2028 is not a line break for a corpus; \r\n is; ends are stripped.
    assert pairs == [("a man .", "ein mann ."), ("two dogs\u2028run .", "zwei hunde"), ("x", "y")]


def test_split_aliases(tmp_path):
    _corpus(tmp_path, n_train=5)
    assert list_splits(tmp_path) == ["test_2016_flickr", "train", "val"]
    assert resolve_split(tmp_path, "valid") == "val"
    assert resolve_split(tmp_path, "test") == "test_2016_flickr"
    assert resolve_split(tmp_path, "nope") is None
    assert read_parallel(tmp_path, split="valid") == read_parallel(tmp_path, split="val")


def test_missing_file_lists_splits(tmp_path):
    _corpus(tmp_path, n_train=5)
    with pytest.raises(UserError, match=r"no dev2.en or dev2.en.gz .*test_2016_flickr, train, val"):
        read_parallel(tmp_path, split="dev2")
    (tmp_path / "train.de").unlink()
    with pytest.raises(UserError, match=r"no train.de or train.de.gz"):
        read_parallel(tmp_path, split="train")
    with pytest.raises(UserError, match="does not exist"):
        read_parallel(tmp_path / "absent")


def test_mismatched_line_counts_name_both(tmp_path):
    _write(tmp_path / "train.en", ["a", "b", "c"])
    _write(tmp_path / "train.de.gz", ["a", "b"])
    with pytest.raises(UserError) as e:
        read_parallel(tmp_path)
    msg = str(e.value)
    assert "train.en has 3 lines" in msg and "train.de.gz has 2" in msg and "\n" not in msg


def test_empty_data(tmp_path):
    (tmp_path / "train.en").write_bytes(b"")
    (tmp_path / "train.de").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        read_parallel(tmp_path)


def test_bad_encoding_and_corrupt_gzip(tmp_path):
    (tmp_path / "train.en").write_bytes("ok\nstraße\n".encode("latin-1"))
    _write(tmp_path / "train.de", ["ok", "strasse"])
    with pytest.raises(UserError, match=r"train.en is not UTF-8 \(bad byte at line 2\)"):
        read_parallel(tmp_path)
    (tmp_path / "train.en").unlink()
    (tmp_path / "train.en.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(UserError, match="cannot read .*train.en.gz"):
        read_parallel(tmp_path)


def test_plain_and_gz_both_present_is_an_error(tmp_path):
    _corpus(tmp_path, n_train=5, test=None)
    _write(tmp_path / "train.en.gz", ["a"])
    with pytest.raises(UserError, match="remove one"):
        read_parallel(tmp_path)


def test_read_text_file_and_folder(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("second")
    (tmp_path / "d" / "a.txt").write_text("first\n")
    _write(tmp_path / "d" / "sub" / "c.txt.gz", ["third"])
    (tmp_path / "d" / ".hidden").write_text("never")
    assert read_text(tmp_path / "d") == "first\nsecond\nthird\n"
    assert read_text(tmp_path / "d" / "a.txt") == "first\n"
    with pytest.raises(UserError, match="does not exist"):
        read_text(tmp_path / "nope.txt")
    (tmp_path / "blank.txt").write_text("  \n\n")
    with pytest.raises(UserError, match="holds no text"):
        read_text(tmp_path / "blank.txt")
    (tmp_path / "d" / "bad.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="bad.txt is not UTF-8"):
        read_text(tmp_path / "d")


def test_default_corpus_is_deterministic_python_source():
    a, b = default_corpus(max_bytes=300_000), default_corpus(max_bytes=300_000)
    assert a == b
    size = len(a.encode("utf-8"))
    assert 200_000 < size <= 300_000
    assert a.count("def ") > 100 and a.count("class ") > 10
    assert default_corpus(max_bytes=100_000) == a[: len(default_corpus(max_bytes=100_000))]


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_ids_and_round_trip(small_tok):
    tok = small_tok
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert 30 < tok.vocab_size <= 200
    text = "a young dog runs in the park ."
    ids = tok.encode(text)
    assert ids and all(isinstance(i, int) and 4 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode([tok.bos_id] + ids + [tok.eos_id, tok.pad_id, tok.pad_id]) == text
    assert tok.decode(tok.encode("ein alter mann läuft .")) == "ein alter mann läuft ."
    assert tok.encode_batch([text, "a dog ."]) == [ids, tok.encode("a dog .")]


def test_tokenizer_keep_whitespace_round_trips_code(tmp_path):
    code = "def f(x):\n    return x + 1\n\n\nclass A:\n\tpass  # two  spaces\n"
    tok = train_or_load_tokenizer([code * 20], 300, tmp_path, keep_whitespace=True)
    assert tok.keeps_whitespace
    assert tok.decode(tok.encode(code)) == code


def test_tokenizer_cache(tmp_path, monkeypatch):
    texts = _sentences(200)
    tok1 = train_or_load_tokenizer(texts, 150, tmp_path)
    files = sorted(tmp_path.glob("tokenizer-*.model"))
    assert len(files) == 1

    def no_training(*a, **k):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(tokenizer_mod, "train_tokenizer", no_training)
    tok2 = train_or_load_tokenizer(iter(texts), 150, tmp_path)  # any iterable
    assert tok2.to_bytes() == tok1.to_bytes()
    monkeypatch.undo()
    train_or_load_tokenizer(texts[:-1] + ["one changed line ."], 150, tmp_path)
    train_or_load_tokenizer(texts, 120, tmp_path)
    assert len(list(tmp_path.glob("tokenizer-*.model"))) == 3  # data or vocab -> new key
    assert not list(tmp_path.glob(".*tmp"))  # no half-written files


@pytest.mark.parametrize("model", ["unigram", "bpe"])
def test_a_tokenizer_is_the_same_on_machines_with_other_core_counts(monkeypatch, model):
    # sentencepiece's result depends on its trainer's thread count: sized from the machine,
    # a 2-core laptop and a 16-core server trained other tokenizers from the same data
    texts = _sentences(3000, seed=3)
    made = set()
    for cores in (1, 2, 16):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        if hasattr(os, "sched_getaffinity"):  # the cores a process may use, another way to size threads
            monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cores=cores: set(range(cores)))
        settings = tokenizer_mod.TokenizerSettings(300, model=model)
        assert settings.trainer_kwargs()["num_threads"] == 8
        made.add(tokenizer_mod.train_tokenizer(texts, settings).to_bytes())
    assert len(made) == 1


def test_tokenizer_small_corpus_limits_vocab(tmp_path):
    tok = train_or_load_tokenizer(["hello world"], 500, tmp_path)
    assert tok.vocab_size < 500
    assert tok.decode(tok.encode("hello world")) == "hello world"
    with pytest.raises(UserError, match="no text"):
        train_or_load_tokenizer(["", "  "], 100, tmp_path / "x")
    with pytest.raises(UserError, match="too small"):
        train_or_load_tokenizer([chr(0x4E00 + i) * 3 for i in range(300)], 100, tmp_path / "y")


def test_tokenizer_save_load(tmp_path, small_tok):
    path = small_tok.save(tmp_path / "export")
    assert path == tmp_path / "export" / "tokenizer.model" and path.is_file()
    for src in (tmp_path / "export", path):
        tok = Tokenizer.load(src)
        assert tok.vocab_size == small_tok.vocab_size
        assert tok.encode("the big ball .") == small_tok.encode("the big ball .")
    assert Tokenizer.from_bytes(small_tok.to_bytes()).encode("a") == small_tok.encode("a")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a sentencepiece model"):
        Tokenizer.load(tmp_path / "junk.model")
    with pytest.raises(UserError, match="tokenizer .*missing does not exist"):
        Tokenizer.load(tmp_path / "missing")


# ----------------------------------------------------------------------------- batches
def _pairs(n: int = 200, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = np.random.default_rng(seed)
    return [(list(rng.integers(4, 50, rng.integers(1, 30))), list(rng.integers(4, 50, rng.integers(1, 30))))
            for _ in range(n)]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def test_translation_batches_shape_padding_and_budget():
    pairs = _pairs()
    it = TranslationBatches(pairs, max_tokens=120, seed=3)
    seen = []
    for _ in range(len(it)):
        b = next(it)
        B, S = b["src"].shape
        T = b["tgt_in"].shape[1]
        assert b["tgt_out"].shape == (B, T) and b["index"].shape == (B,)
        assert B * max(S, T) <= 120
        assert b["ntokens"] == int((b["tgt_out"] != 0).sum())
        assert b["src_ntokens"] == int((b["src"] != 0).sum())
        for row, k in enumerate(b["index"].tolist()):
            s, t = pairs[k]
            assert b["src"][row].tolist() == s + [3] + [0] * (S - len(s) - 1)
            assert b["tgt_in"][row].tolist() == [2] + t + [0] * (T - len(t) - 1)
            assert b["tgt_out"][row].tolist() == t + [3] + [0] * (T - len(t) - 1)
        seen += b["index"].tolist()
    assert sorted(seen) == list(range(len(pairs)))  # every pair once per epoch
    assert it.epoch == 0


def test_translation_overlong_pair_is_alone():
    pairs = [([5] * 50, [6] * 10)] + _pairs(20)
    it = TranslationBatches(pairs, max_tokens=40, seed=0, shuffle=False)
    batches = list(it)
    alone = [b for b in batches if 0 in b["index"].tolist()]
    assert len(alone) == 1 and alone[0]["src"].shape == (1, 51)
    assert sum(len(b["index"]) for b in batches) == 21


def test_translation_batches_deterministic_and_shuffled():
    pairs = _pairs()

    def epoch(seed, n_epoch=0):
        it = TranslationBatches(pairs, max_tokens=150, seed=seed)
        it.load_state({**it.state(), "epoch": n_epoch})
        return [b["index"].tolist() for b in (next(it) for _ in range(len(it)))]

    assert epoch(1) == epoch(1)
    assert epoch(1) != epoch(2)
    assert epoch(1, 0) != epoch(1, 1)
    # Eval order: sorted by length, shortest first, one pass, then the next epoch.
    ev = TranslationBatches(pairs, max_tokens=150, seed=0, shuffle=False)
    first, second = list(ev), list(ev)
    sizes = [max(len(pairs[k][0]), len(pairs[k][1])) for b in first for k in b["index"].tolist()]
    assert sizes == sorted(sizes) and len(first) == len(second) > 1
    assert ev.epoch == 2


@pytest.mark.parametrize("kind", ["translation", "lm"])
def test_batches_resume_exactly(kind):
    def make():
        if kind == "translation":
            return TranslationBatches(_pairs(120), max_tokens=200, seed=7)
        return LMBatches(np.arange(5000) % 97, block=16, batch_size=4, seed=7)

    ref = make()
    n = len(ref)
    stream = [next(ref) for _ in range(2 * n + 3)]  # crosses two epoch boundaries
    for k in (0, 3, n, n + 1):
        it = make()
        for _ in range(k):
            next(it)
        state = it.state()
        resumed = make()
        resumed.load_state(dict(state))
        assert all(_same(next(resumed), want) for want in stream[k:])


def test_load_state_checks_settings():
    it = TranslationBatches(_pairs(50), max_tokens=200, seed=1)
    next(it)
    with pytest.raises(UserError, match="seed"):
        TranslationBatches(_pairs(50), max_tokens=200, seed=2).load_state(it.state())
    with pytest.raises(UserError, match="resume"):
        TranslationBatches(_pairs(51), max_tokens=200, seed=1).load_state(it.state())
    with pytest.raises(UserError, match="kind"):
        LMBatches(np.arange(100), 8, 2, seed=1).load_state(it.state())


def test_shards_are_disjoint_and_equal():
    pairs = _pairs(150)
    shards = [TranslationBatches(pairs, max_tokens=100, seed=5, num_shards=3, shard_index=i)
              for i in range(3)]
    assert len({len(s) for s in shards}) == 1
    idx = [[k for b in (next(s) for _ in range(len(s))) for k in b["index"].tolist()] for s in shards]
    assert not set(idx[0]) & set(idx[1]) and not set(idx[1]) & set(idx[2])


def test_lm_batches_blocks():
    ids = np.arange(1000, dtype=np.int64)
    it = LMBatches(ids, block=10, batch_size=4, seed=0)
    b = next(it)
    assert b["input"].shape == b["target"].shape == (4, 10) and b["ntokens"] == 40
    assert torch.equal(b["target"], b["input"] + 1)  # contiguous stream shifted by one
    assert len(it) == 999 // 40
    ev = list(LMBatches(ids, block=10, batch_size=4, seed=0, shuffle=False))
    starts = [int(x) for b in ev for x in b["input"][:, 0]]
    assert starts == list(range(0, 990, 10))
    assert int(ev[-1]["target"][-1, -1]) == 990
    with pytest.raises(UserError, match="fewer than one block"):
        LMBatches(np.arange(10), block=10, batch_size=2, seed=0)


# ----------------------------------------------------------------------------- tasks
def test_build_translation(tmp_path):
    data = _corpus(tmp_path / "d", gz=True)
    _write(tmp_path / "d" / "train.en.gz", _sentences(299) + [" ".join(["dog"] * 80) + " ."])
    td = build_task_data("translation", data, 200, tmp_path / "work", max_len=40)
    tok, raw = td.tokenizer, read_parallel(data, split="train")
    too_long = [max(len(tok.encode(s)), len(tok.encode(t))) + 1 > 40 for s, t in raw]
    assert too_long[-1] and 1 <= sum(too_long) < 30
    assert td.info["train_pairs_read"] == 300 and td.info["train_pairs_dropped"] == sum(too_long)
    assert td.train == [(tok.encode(s), tok.encode(t)) for (s, t), x in zip(raw, too_long) if not x]
    assert len(td.valid) == 40 and len(td.test) == 40
    assert td.info["splits"] == {"train": "train", "valid": "val", "test": "test_2016_flickr"}
    assert td.tokenizer.decode(td.test[3][1]) == td.text["test"][3][1]
    assert td.split("val") is td.valid
    b = next(td.batches("train", max_tokens=256, seed=0))
    assert b["src"].shape[0] * max(b["src"].shape[1], b["tgt_in"].shape[1]) <= 256
    assert sum(len(x["index"]) for x in td.batches("valid", max_tokens=256)) == 40
    again = build_task_data("translation", data, 200, tmp_path / "work", max_len=40)
    assert again.tokenizer.to_bytes() == td.tokenizer.to_bytes()
    assert len(list((tmp_path / "work" / "tokenizers").glob("*.model"))) == 1


def test_build_translation_errors(tmp_path):
    _corpus(tmp_path / "d", valid="", test=None)
    with pytest.raises(UserError, match="no validation split"):
        build_task_data("translation", tmp_path / "d", 200, tmp_path / "w")
    with pytest.raises(UserError, match="needs --data"):
        build_task_data("translation", None, 200, tmp_path / "w")
    with pytest.raises(UserError, match="unknown task"):
        build_task_data("summarise", tmp_path / "d", 200, tmp_path / "w")


def test_build_lm(tmp_path):
    text = "\n".join(_sentences(400)) + "\n"
    (tmp_path / "t.txt").write_text(text)
    td = build_task_data("lm", tmp_path / "t.txt", 200, tmp_path / "w", max_len=32)
    train_text, valid_text = split_lm_text(text)
    assert train_text + valid_text == text and train_text.endswith("\n")
    assert 0.04 < len(valid_text) / len(text) < 0.07
    assert td.test is None and td.train.dtype == np.uint16  # memory-mapped from the token cache
    assert td.tokenizer.decode(td.valid.tolist()) == valid_text
    b = next(td.batches("train", batch_size=3, seed=1))
    assert b["input"].shape == (3, 32)
    with pytest.raises(UserError, match="no test split"):
        td.split("test")


# ----------------------------------------------------------------------------- real data
@pytest.mark.skipif(not (SHARED / "multi30k").is_dir(), reason="shared Multi30k data absent")
def test_reads_real_multi30k():
    d = SHARED / "multi30k"
    assert list_splits(d) == ["test_2016_flickr", "train", "val"]
    train = read_parallel(d, "en", "de", "train")
    valid = read_parallel(d, "en", "de", "valid")
    test = read_parallel(d, "en", "de", resolve_split(d, "test"))
    assert (len(train), len(valid), len(test)) == (29000, 1014, 1000)
    assert all(s and t for s, t in train)
    assert train[0][0].startswith("Two young, White males")
