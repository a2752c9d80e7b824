"""One call from a data path to encoded splits, a tokenizer and batch iterators."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from ..errors import UserError
from ..threads import usable_cores
from .lm_text import LM_VALID_FRACTION, TextSource, lm_sources, sample_lines, split_lm_text
from .readers import list_splits, read_parallel, resolve_split
from .token_cache import encoded
from .tokenizer import TOKENIZER_MODELS, Tokenizer, TokenizerSettings, train_or_load_streamed, train_or_load_tokenizer

#: the tasks and the model family each one trains
TASK_FAMILY = {"translation": "encoder_decoder", "lm": "decoder_only"}
TASKS = tuple(TASK_FAMILY)
#: Canonical split names and what users may call them.
_SPLIT_NAMES = {"train": "train", "valid": "valid", "val": "valid", "dev": "valid", "test": "test"}
#: lines of LM text a bpe tokenizer learns from: a uniform, seeded sample (``sample_lines``),
#: so that a corpus of hundreds of MB trains it in seconds (about 15 MB of C code). unigram
#: keeps the sample size runs were made with before (their tokenizer.model must not change).
LM_BPE_LINES = 500_000

Pairs = list[tuple[list[int], list[int]]]


@dataclass
class TaskData:
    """Encoded splits of one task plus the tokenizer that made them.

    ``train``/``valid``/``test`` are lists of ``(src_ids, tgt_ids)`` (translation) or
    1-D unsigned token arrays (lm: memory-mapped from the token cache); ``test`` may be ``None``. ``text`` holds the raw
    ``(src, tgt)`` sentence pairs of valid/test, aligned with the encoded ones (BLEU
    references). ``max_len`` is the longest train sentence (translation, in tokens
    with bos/eos) or the LM block length.
    """

    task: str
    tokenizer: Tokenizer
    train: Pairs | np.ndarray
    valid: Pairs | np.ndarray
    test: Pairs | np.ndarray | None
    max_len: int
    src: str = "en"
    tgt: str = "de"
    text: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> Pairs | np.ndarray:
        """Encoded split by name (``valid`` also answers to ``val`` and ``dev``)."""
        canon = _SPLIT_NAMES.get(name)
        if canon is None:
            raise UserError(f"unknown split {name!r}; use train, valid or test")
        data = getattr(self, canon)
        if data is None:
            raise UserError(f"this {self.task} data has no {canon} split")
        return data

    def batches(self, split: str, max_tokens: int | None = None, batch_size: int | None = None,
                seed: int = 0, shuffle: bool | None = None, repeat: bool | None = None,
                block: int | None = None, num_shards: int = 1, shard_index: int = 0):
        """A resumable batch iterator over ``split``.

        Translation takes ``max_tokens``; lm takes ``batch_size`` (and ``block``,
        default ``max_len``). ``shuffle`` defaults to True for train only; ``repeat``
        defaults to ``shuffle`` (train: endless; valid/test: one pass).
        """
        from .batches import LMBatches, TranslationBatches  # torch only when batching

        data = self.split(split)
        if shuffle is None:
            shuffle = _SPLIT_NAMES[split] == "train"
        if self.task == "translation":
            if max_tokens is None:
                raise TypeError("translation batches need max_tokens")
            return TranslationBatches(data, max_tokens, seed, shuffle=shuffle, repeat=repeat,
                                      num_shards=num_shards, shard_index=shard_index)
        if batch_size is None:
            raise TypeError("lm batches need batch_size")
        return LMBatches(data, block or self.max_len, batch_size, seed, shuffle=shuffle,
                         repeat=repeat, num_shards=num_shards, shard_index=shard_index)


def build_task_data(task: Literal["translation", "lm"], data: str | Path | None, vocab_size: int,
                    workdir: str | Path, src: str = "en", tgt: str = "de", max_len: int = 256,
                    cache_dir: str | Path | None = None, tokenizer: str = "unigram",
                    progress: bool = False) -> TaskData:
    """Read ``data``, train or load the tokenizer, and encode every split.

    translation: ``data`` is a folder of ``{split}.{src}``/``{split}.{tgt}`` files (plain
    or .gz) with splits train, valid (or val/dev) and optionally test (or the first
    ``test*`` split, e.g. Multi30k's test_2016_flickr); train pairs with an empty side or
    longer than ``max_len`` tokens (with bos/eos) are dropped. lm: ``data`` is a folder of
    split files (train[.txt][.gz|.xz], valid, test), a text file or a folder of them
    (``None``: the embedded :func:`default_corpus`); without a valid file the last 5% of
    train (cut at a line end) is valid (``cosearch.data.lm_text``), and ``max_len`` is the
    block length. The tokenizer (``tokenizer``: unigram or bpe; translation always unigram)
    and, for lm, the encoded splits are cached under ``cache_dir`` (default
    ``workdir/tokenizers``); ``progress`` shows a bar while a split is encoded.
    """
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    if max_len < 2:
        raise UserError(f"max_len={max_len} is too small; use e.g. 256")
    cache = Path(cache_dir) if cache_dir is not None else Path(workdir) / "tokenizers"
    if tokenizer not in TOKENIZER_MODELS:
        raise UserError(f"tokenizer {tokenizer!r} is unknown; use one of {', '.join(TOKENIZER_MODELS)}")
    if task == "lm":
        return _build_lm(data, vocab_size, cache, max_len, tokenizer, progress)
    if data is None:
        raise UserError("the translation task needs --data: a folder with train.SRC/train.TGT "
                        "and valid.SRC/valid.TGT files (plain or .gz)")
    return _build_translation(Path(data), vocab_size, cache, src, tgt, max_len)


def _build_translation(data: Path, vocab_size: int, cache: Path, src: str, tgt: str,
                       max_len: int) -> TaskData:
    train_text = read_parallel(data, src, tgt, "train")
    valid_name = resolve_split(data, "valid", src, tgt)
    if valid_name is None:
        raise UserError(f"no validation split (valid, val or dev).{src}/.{tgt} in {data}; "
                        f"splits present: {', '.join(list_splits(data, src, tgt)) or 'none'}")
    test_name = resolve_split(data, "test", src, tgt)
    text = {"valid": read_parallel(data, src, tgt, valid_name)}
    if test_name is not None:
        text["test"] = read_parallel(data, src, tgt, test_name)

    tok = train_or_load_tokenizer([s for pair in train_text for s in pair], vocab_size, cache)
    train_all = _encode_pairs(tok, train_text)
    # bos/eos take one place on each side.
    train = [(s, t) for s, t in train_all if s and t and max(len(s), len(t)) + 1 <= max_len]
    if not train:
        raise UserError(f"every train pair in {data} is empty or longer than max_len={max_len} "
                        "tokens; raise max_len")
    enc = {k: _encode_pairs(tok, v) for k, v in text.items()}
    info = {"data": str(data), "splits": {"train": "train", "valid": valid_name, "test": test_name},
            "train_pairs_read": len(train_all), "train_pairs_dropped": len(train_all) - len(train),
            "vocab_size": tok.vocab_size}
    return TaskData("translation", tok, train, enc["valid"], enc.get("test"), max_len,
                    src=src, tgt=tgt, text=text, info=info)


def _encode_pairs(tok: Tokenizer, pairs: Sequence[tuple[str, str]]) -> Pairs:
    srcs = tok.encode_batch([s for s, _ in pairs])
    tgts = tok.encode_batch([t for _, t in pairs])
    return list(zip(srcs, tgts))


def training_lines(source: TextSource, k: int):
    """``lines()`` for the tokenizer trainer: a seeded sample of ``k`` non-blank lines of
    ``source`` (all of them when fewer), read only when a tokenizer is trained, then kept."""
    memo: list[list[str]] = []

    def lines():
        if not memo:
            memo.append(sample_lines(source, k))
        return iter(memo[0])
    return lines


def encode_threads() -> int:
    """Threads for encoding: ``OMP_NUM_THREADS`` when set (the CLI sets it on a busy
    machine), else every usable core."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return usable_cores()


def _build_lm(data: str | Path | None, vocab_size: int, cache: Path, max_len: int,
              tokenizer: str = "unigram", progress: bool = False) -> TaskData:
    sources = lm_sources(data)
    settings = TokenizerSettings(vocab_size=int(vocab_size), keep_whitespace=True, model=tokenizer)
    if tokenizer == "bpe":
        settings = replace(settings, max_sentences=LM_BPE_LINES)
    t0 = time.perf_counter()
    tok = train_or_load_streamed(training_lines(sources.train, settings.max_sentences), sources.train.digest(),
                                 settings, cache)
    t1 = time.perf_counter()
    threads = encode_threads()
    ids = {name: encoded(tok, src, cache, threads=threads, progress=progress)
           for name, src in (("train", sources.train), ("valid", sources.valid), ("test", sources.test))
           if src is not None}
    # this call's seconds (a cache hit takes well under one)
    seconds = {"tokenizer": round(t1 - t0, 2), "encode": round(time.perf_counter() - t1, 2), "threads": threads}
    info = {**sources.info, "tokenizer": tokenizer, "vocab_size": tok.vocab_size,
            **{f"{k}_tokens": int(v.size) for k, v in ids.items()}, "seconds": seconds}
    return TaskData("lm", tok, ids["train"], ids["valid"], ids.get("test"), max_len, src="", tgt="", info=info)
