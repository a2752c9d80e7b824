"""Where an LM's train / valid / test text comes from, read in chunks.

``--task lm --data PATH``:

* a folder holding a ``train`` file (``train``, ``train.txt``, each plain, ``.gz`` or
  ``.xz``): the split files. ``valid`` (or ``val`` / ``dev``) and ``test`` are optional;
  without a valid file the last 5% of train (from a line start) is validation. A split
  file is streamed, never held whole (the held-out 5% case reads train once into memory);
* any other folder: every file in it (sorted), one text; a single file: that text. The
  last 5% is validation, and there is no test split;
* None: the embedded standard-library corpus (:func:`default_corpus`).

A :class:`TextSource` yields the text as chunks that end at line ends and has a content
digest, which keys the token cache (``cosearch.data.token_cache``).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from .corpus import default_corpus
from .readers import SPLIT_ALIASES, READ_ERRORS, not_utf8_error, iter_text_chunks, open_binary, read_text

#: Share of an LM text held out (from its end) for validation when there is no valid file.
LM_VALID_FRACTION = 0.05
#: ``train``, ``valid.txt``, ``test.txt.xz`` ...: the names of LM split files
_SPLIT_FILE = re.compile(r"^(?P<split>[a-z]+)(?:\.txt)?(?:\.gz|\.xz)?$")
_CANON = {"train": "train", **{a: "valid" for a in SPLIT_ALIASES["valid"]}, "test": "test"}
#: characters of in-memory text per chunk
_CHUNK_CHARS = 1 << 22


@dataclass(frozen=True)
class TextSource:
    """Characters ``[start, stop)`` of a split file (``path``) or of an in-memory ``text``.

    ``chunks()`` yields it in pieces that end at a line end (except maybe the last);
    ``digest()`` is a hash of exactly that content (the file's bytes, or the text), so it
    changes whenever the text does.
    """

    label: str
    path: Path | None = None
    text: str | None = field(default=None, repr=False)
    start: int = 0
    stop: int | None = None

    def chunks(self) -> Iterator[str]:
        if self.path is not None:
            yield from iter_text_chunks(self.path)
            return
        stop = len(self.text) if self.stop is None else self.stop
        pos = self.start
        while pos < stop:
            end = min(stop, pos + _CHUNK_CHARS)
            if end < stop:
                nl = self.text.find("\n", end, stop)
                end = stop if nl < 0 else nl + 1
            yield self.text[pos:end]
            pos = end

    @cached_property
    def _digest(self) -> str:
        h = hashlib.sha256()
        if self.path is not None:
            h.update(b"file:")
            try:
                with open(self.path, "rb") as f:  # the file's own bytes: no need to decompress
                    while block := f.read(1 << 24):
                        h.update(block)
            except OSError as e:
                raise UserError(f"cannot read {self.path}: {e.strerror or e}") from None
        else:
            h.update(f"text:{self.start}:{self.stop}:".encode())
            h.update(self.text.encode("utf-8", "surrogatepass"))
        return h.hexdigest()[:24]

    def digest(self) -> str:
        return self._digest


@dataclass(frozen=True)
class LMSources:
    """The text of each split (``test`` may be None) and a description for the run's info."""

    train: TextSource
    valid: TextSource
    test: TextSource | None
    info: dict


def sample_lines(source: TextSource, k: int, seed: int = 0) -> list[str]:
    """About ``k`` of the non-blank lines of ``source`` drawn uniformly (all of them when it
    has no more than ``k`` lines), in text order; the same on every machine. One pass counts
    the lines, a second keeps those at ``k`` positions drawn from a seeded generator (blank
    ones are then dropped, so a few fewer may come back). sentencepiece's own sampling
    (``input_sentence_size``) is not seeded: the same data gave other tokenizers."""
    import numpy as np
    total = sum(chunk.count("\n") + 1 for chunk in source.chunks())  # items of chunk.split("\n")
    keep = None if total <= k else np.sort(np.random.default_rng(seed).choice(total, size=k, replace=False))
    out, first = [], 0
    for chunk in source.chunks():
        lines = chunk.split("\n")
        if keep is None:
            out += [x for x in lines if x.strip()]
        else:
            lo, hi = np.searchsorted(keep, [first, first + len(lines)])
            out += [x for x in (lines[j] for j in keep[lo:hi] - first) if x.strip()]
        first += len(lines)
    return out


def split_lm_text(text: str, valid_fraction: float = LM_VALID_FRACTION) -> tuple[str, str]:
    """(train, valid): valid is the last ``valid_fraction`` of ``text``, starting at a line."""
    cut = valid_cut(text, valid_fraction)
    return text[:cut], text[cut:]


def valid_cut(text: str, valid_fraction: float = LM_VALID_FRACTION) -> int:
    """Where the held-out validation text starts: at ``1 - valid_fraction`` of ``text``,
    moved on to the next line start (if there is one before the end)."""
    cut = int(len(text) * (1 - valid_fraction))
    newline = text.find("\n", cut)
    if 0 <= newline < len(text) - 1:
        cut = newline + 1
    return cut


def split_files(folder: Path) -> dict[str, Path]:
    """The LM split files of ``folder`` by canonical split (aliases valid/val/dev), checked:
    two files for one split, or a split file that is a folder, raise ``UserError``."""
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        m = _SPLIT_FILE.match(p.name)
        if m and m.group("split") in _CANON:
            found.setdefault(_CANON[m.group("split")], []).append(p)
    out = {}
    for split, paths in found.items():
        if len(paths) > 1:
            raise UserError(f"{folder} has {len(paths)} {split} files ({', '.join(p.name for p in paths)}); "
                            "keep one")
        if not paths[0].is_file():
            raise UserError(f"{paths[0]} is not a file; a {split} split must be a text file "
                            "(plain, .gz or .xz)")
        out[split] = paths[0]
    return out


def check_split_file(path: Path, split: str) -> None:
    """Fail fast, before any work: ``path`` must open, and start with UTF-8 text that is not
    blank (the rest is checked as it streams)."""
    try:
        with open_binary(path) as f:
            head = f.read(1 << 16)
    except READ_ERRORS as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if b"\x00" in head:
        raise UserError(f"{path} looks binary (a NUL byte near its start); the {split} split must be UTF-8 text")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut at the end of the head
            raise not_utf8_error(path, head[: e.start].count(b"\n") + 1) from None
        text = head[: e.start].decode("utf-8")
    if not text.strip() and len(head) < (1 << 16):
        raise UserError(f"{path} holds no text; the {split} split must be a non-empty UTF-8 text file")


def lm_sources(data: str | Path | None) -> LMSources:
    """The train / valid / test text of ``data`` (see the module docstring)."""
    if data is None:
        return _held_out(default_corpus(), "default_corpus", {"data": "default_corpus"})
    data = Path(data)
    if not data.exists():
        raise UserError(f"{data} does not exist; pass a text file, a folder of text files or a "
                        "folder with train[.txt][.gz|.xz] (and valid, test) files")
    files = split_files(data) if data.is_dir() else {}
    if "train" not in files:
        if files:
            raise UserError(f"{data} has {', '.join(p.name for p in files.values())} but no train file; "
                            "add train.txt (plain, .gz or .xz)")
        return _held_out(read_text(data), str(data), {"data": str(data)})
    for split, path in files.items():
        check_split_file(path, split)
    info = {"data": str(data), "files": {k: p.name for k, p in files.items()}}
    test = TextSource("test", path=files["test"]) if "test" in files else None
    if "valid" in files:
        return LMSources(TextSource("train", path=files["train"]), TextSource("valid", path=files["valid"]),
                         test, {**info, "valid": "file"})
    text = read_text(files["train"])  # no valid file: hold out the end of train
    held = _held_out(text, str(files["train"]), info)
    return LMSources(held.train, held.valid, test, held.info)


def _held_out(text: str, what: str, info: dict) -> LMSources:
    cut = valid_cut(text)
    if not text[cut:].strip():
        raise UserError(f"{what} is too short to hold out {LM_VALID_FRACTION:.0%} for validation; give more "
                        "text or a valid file")
    return LMSources(TextSource("train", text=text, stop=cut), TextSource("valid", text=text, start=cut),
                     None, {**info, "valid": f"last {LM_VALID_FRACTION:.0%} of train"})
