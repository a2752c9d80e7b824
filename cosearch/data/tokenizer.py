"""Subword tokenizer: a sentencepiece model (unigram or BPE), trained once and cached.

Why unigram by default: it is sentencepiece's default and best-tested path, its
vocabulary size is a *soft* limit (``hard_vocab_limit=False``), so a tiny corpus yields a
smaller vocabulary instead of an error, and it allows subword sampling later. ``bpe`` (for
code and large LM corpora) is sentencepiece's BPE with byte fallback: a character it never
saw becomes its UTF-8 bytes instead of ``<unk>``, so every text round-trips and bits per
byte are exact; it also trains about ten times faster on a large sample.

The whole tokenizer is one self-contained ``tokenizer.model`` file (special ids, the
normaliser and whitespace handling live in the model proto), so an exported model
ships just that file.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

import sentencepiece as spm

from ..atomic import atomic_write_bytes
from ..errors import UserError
from ..inputs import read_bytes

MODEL_FILE = "tokenizer.model"
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
#: Bump when the training settings below change, so old caches are not reused.
_CACHE_VERSION = 1
#: tokenizer kinds (``TokenizerSettings.model``)
TOKENIZER_MODELS = ("unigram", "bpe")
#: sentencepiece's word-boundary mark, a space in the text
_SPACE_MARK = "\u2581"


class Tokenizer:
    """Text <-> token ids. ``pad_id`` is 0; ``bos_id``/``eos_id`` are never added by
    :meth:`encode` (the batchers add them where a model needs them)."""

    def __init__(self, model_proto: bytes):
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
        self.pad_id, self.unk_id = self._sp.pad_id(), self._sp.unk_id()
        self.bos_id, self.eos_id = self._sp.bos_id(), self._sp.eos_id()
        self.vocab_size = self._sp.get_piece_size()
        newline = self._sp.piece_to_id("\n")
        #: Whether text keeps its exact whitespace and newlines (LM on code/prose).
        self.keeps_whitespace = newline != self.unk_id

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no bos/eos)."""
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str], threads: int | None = None) -> list[list[int]]:
        """Token ids of many texts at once, on ``threads`` threads (default: sentencepiece's)."""
        if not texts:
            return []
        return self._sp.encode(list(texts), num_threads=threads)

    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes of text each id stands for (int64, one per id): 0 for pad, bos,
        eos and ``<unk>`` (which stands for unknown text), 1 for a byte-fallback piece. With
        ``keeps_whitespace`` the bytes of ``encode(text)`` sum to ``len(text.encode())``."""
        sp = self._sp
        out = np.zeros(self.vocab_size, dtype=np.int64)
        for i in range(self.vocab_size):
            if sp.is_byte(i):
                out[i] = 1
            elif not (sp.is_control(i) or sp.is_unknown(i)):
                out[i] = len(sp.id_to_piece(i).replace(_SPACE_MARK, " ").encode("utf-8"))
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Detokenised text; pad, bos and eos ids are dropped."""
        skip = {self.pad_id, self.bos_id, self.eos_id}
        return self._sp.decode([int(i) for i in ids if int(i) not in skip])

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def to_bytes(self) -> bytes:
        """The model file's bytes (to embed in a checkpoint)."""
        return self._proto

    @classmethod
    def from_bytes(cls, data: bytes) -> "Tokenizer":
        return cls(data)

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/tokenizer.model`` atomically; returns its path."""
        path = Path(directory) / MODEL_FILE
        atomic_write_bytes(path, self._proto)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        """Load from a ``tokenizer.model`` file or a folder holding one."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        data = read_bytes(path, "tokenizer", max_bytes=2 ** 30)  # a FIFO would block for ever
        try:
            return cls(data)
        except RuntimeError:
            raise UserError(f"{path} is not a sentencepiece model; re-create it by "
                            "training again (delete the file)") from None

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, keeps_whitespace={self.keeps_whitespace})"


#: sentencepiece trainer threads on every machine (see TokenizerSettings.trainer_kwargs)
TRAINER_THREADS = 8


@dataclass(frozen=True)
class TokenizerSettings:
    """Everything besides the data that decides the trained model (part of the cache key)."""

    vocab_size: int
    keep_whitespace: bool = False
    character_coverage: float = 1.0
    #: sentences (lines) sampled from the training text (sentencepiece's reservoir)
    max_sentences: int = 2_000_000
    #: ``unigram`` or ``bpe`` (BPE with byte fallback)
    model: str = "unigram"

    def trainer_kwargs(self) -> dict:
        kw = dict(model_type=self.model, vocab_size=self.vocab_size, hard_vocab_limit=False,
                  pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                  character_coverage=self.character_coverage,
                  input_sentence_size=self.max_sentences, shuffle_input_sentence=True,
                  # the trained model depends on the trainer's thread count (BPE's merges and
                  # unigram's pieces alike: 1, 2 and 8 threads gave three Multi30k tokenizers),
                  # so a fixed count gives every machine the same tokenizer from the same data
                  num_threads=TRAINER_THREADS, minloglevel=2)
        if self.model == "bpe":
            kw.update(byte_fallback=True)
        if self.keep_whitespace:
            # Code and prose LM: exact round trip of spaces, tabs and newlines.
            kw.update(normalization_rule_name="identity", remove_extra_whitespaces=False,
                      add_dummy_prefix=False, allow_whitespace_only_pieces=True,
                      split_by_whitespace=True, user_defined_symbols=["\n"])
        return kw


def _settings_hash(settings: TokenizerSettings) -> "hashlib._Hash":
    h = hashlib.sha256()
    h.update(json.dumps({"v": _CACHE_VERSION, "sentencepiece": spm.__version__,
                         **settings.__dict__}, sort_keys=True).encode())
    return h


def cache_key(texts: Sequence[str], settings: TokenizerSettings) -> str:
    """A hash of the training texts and the settings."""
    h = _settings_hash(settings)
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))  # length prefix: no two lists collide
        h.update(b)
    return h.hexdigest()[:20]


def _training_lines(texts: Sequence[str]) -> list[str]:
    # sentencepiece trains on lines; a text with newlines counts as several sentences.
    return [line for t in texts for line in t.split("\n") if line.strip()]


def train_tokenizer(texts: Sequence[str], settings: TokenizerSettings) -> Tokenizer:
    """Train a tokenizer on ``texts`` (no cache)."""
    lines = _training_lines(texts)
    if not lines:
        raise UserError("no text to train the tokenizer on; the training data is empty")
    return train_tokenizer_lines(lambda: iter(lines), settings)


def train_tokenizer_lines(lines: Callable[[], Iterator[str]], settings: TokenizerSettings) -> Tokenizer:
    """Train a tokenizer on the lines ``lines()`` yields (called again for a retry), e.g.
    streamed from a corpus too large to hold: sentencepiece keeps a uniform sample of
    ``settings.max_sentences`` of them (no cache)."""
    try:
        return Tokenizer(_train(lines(), settings.trainer_kwargs()))
    except RuntimeError as e:
        if "required_chars" not in str(e):
            raise UserError(f"tokenizer training failed: {_first_line(e)}") from None
    # More distinct characters than vocab_size (e.g. CJK): leave the rarest to <unk> (bpe: to bytes).
    try:
        return Tokenizer(_train(lines(), {**settings.trainer_kwargs(), "character_coverage": 0.9995}))
    except RuntimeError as e:
        m = re.search(r"required_chars\. \d+ vs (\d+)", str(e))
        need = f" (the data needs {m.group(1)} characters)" if m else f" ({_first_line(e)})"
        raise UserError(f"tokenizer vocab_size={settings.vocab_size} is too small{need}; "
                        "use a larger vocab_size") from None


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _train(lines: Iterator[str], kwargs: dict) -> bytes:
    spm.set_random_generator_seed(1234)  # sentence sampling is seeded: same data, same model
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=lines, model_writer=buf, **kwargs)
    return buf.getvalue()


def train_or_load_tokenizer(texts: Iterable[str], vocab_size: int, cache_dir: str | Path,
                            keep_whitespace: bool = False) -> Tokenizer:
    """A sentencepiece unigram tokenizer for ``texts``, cached in ``cache_dir``.

    The cache file ``cache_dir/tokenizer-<key>.model`` is keyed by a hash of the texts
    and the settings, so a second call with the same data loads it and different data
    trains a new one. ``vocab_size`` is an upper bound: a small corpus gets fewer pieces.
    ``keep_whitespace=True`` keeps spaces and newlines exactly (for LM text and code);
    the default normalises them like a translation corpus (NFKC, single spaces).
    """
    if vocab_size < 8:
        raise UserError(f"vocab_size {vocab_size} is too small; use at least a few hundred")
    texts = list(texts)
    settings = TokenizerSettings(vocab_size=int(vocab_size), keep_whitespace=keep_whitespace)
    return _cached(Path(cache_dir) / f"tokenizer-{cache_key(texts, settings)}.model",
                   lambda: train_tokenizer(texts, settings))


def _cached(path: Path, make: Callable[[], Tokenizer]) -> Tokenizer:
    """The tokenizer in ``path``, or ``make()``'s, saved there (atomically) first."""
    if path.is_file():
        return Tokenizer.load(path)
    tok = make()
    atomic_write_bytes(path, tok.to_bytes())
    return tok


def train_or_load_streamed(lines: Callable[[], Iterator[str]], digest: str, settings: TokenizerSettings,
                           cache_dir: str | Path) -> Tokenizer:
    """Like :func:`train_or_load_tokenizer` for text streamed by ``lines()``, cached under a
    key made of the settings and ``digest`` (a hash of the text's content)."""
    if settings.vocab_size < 8:
        raise UserError(f"vocab_size {settings.vocab_size} is too small; use at least a few hundred")
    if settings.model not in TOKENIZER_MODELS:
        raise UserError(f"tokenizer {settings.model!r} is unknown; use one of {', '.join(TOKENIZER_MODELS)}")
    h = _settings_hash(settings)
    h.update(b"stream:" + digest.encode())
    return _cached(Path(cache_dir) / f"tokenizer-{h.hexdigest()[:20]}.model",
                   lambda: train_tokenizer_lines(lines, settings))
