"""A corpus encoded once: token ids in a flat binary file beside the tokenizer, read back
with ``numpy.memmap``.

The file ``CACHE/tokens-<key>.u16`` (``.u32`` for vocabularies over 65,536) is keyed by a
hash of the tokenizer and of the text's content, so the same data with the same tokenizer
is encoded once (later runs and ``cosearch eval`` map the file), and any change to either
encodes again. The text is streamed chunk by chunk and each chunk is encoded on several
threads (sentencepiece's batch encoder, which releases the GIL, so the next chunk is read
and decompressed meanwhile), so a corpus of hundreds of MB never sits in memory as text or
as a Python list, and the ids are written as they come (atomically: a killed encoding
leaves no file behind).
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, TypeVar

import numpy as np

from ..atomic import atomic_path
from .lm_text import TextSource
from .tokenizer import Tokenizer

#: text per encoder call: the chunk is cut (at line ends) into pieces of about this size so
#: that every thread gets work
_PIECE_CHARS = 1 << 16


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def cache_path(tok: Tokenizer, source: TextSource, cache_dir: str | Path) -> Path:
    """Where the ids of ``source`` encoded by ``tok`` are kept."""
    h = hashlib.sha256(tok.to_bytes())
    h.update(source.digest().encode())
    dtype = token_dtype(tok.vocab_size)
    return Path(cache_dir) / f"tokens-{h.hexdigest()[:20]}.u{dtype.itemsize * 8}"


def _pieces(chunk: str) -> list[str]:
    """``chunk`` cut at line ends into pieces of about ``_PIECE_CHARS``. A newline is a
    token of its own, so encoding the pieces gives the ids of encoding the chunk."""
    out, pos = [], 0
    while pos < len(chunk):
        end = chunk.find("\n", min(len(chunk), pos + _PIECE_CHARS))
        end = len(chunk) if end < 0 else end + 1
        out.append(chunk[pos:end])
        pos = end
    return out


T = TypeVar("T")


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """``items``, with the next one produced in a worker thread while the caller works on
    this one (its errors are raised here, in order)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(next, items, None)
        while (item := nxt.result()) is not None:
            nxt = pool.submit(next, items, None)
            yield item


def encode_chunks(tok: Tokenizer, chunks: Iterator[str], threads: int | None = None) -> Iterator[np.ndarray]:
    """The ids of each chunk, as one array per chunk (dtype :func:`token_dtype`)."""
    dtype = token_dtype(tok.vocab_size)
    for chunk in prefetched(iter(chunks)):
        ids = tok.encode_batch(_pieces(chunk), threads=threads)
        n = sum(map(len, ids))
        out = np.empty(n, dtype=dtype)
        pos = 0
        for row in ids:
            out[pos:pos + len(row)] = row
            pos += len(row)
        yield out


def encoded(tok: Tokenizer, source: TextSource, cache_dir: str | Path, threads: int | None = None,
            progress: bool = False) -> np.ndarray:
    """The ids of ``source`` (read-only, memory-mapped), encoding it first (on ``threads``
    threads) when the cache has no file for this tokenizer and text."""
    path = cache_path(tok, source, cache_dir)
    if not path.is_file():
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(desc=f"tokenize {source.label}", unit="B", unit_scale=True, dynamic_ncols=True)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                for ids in encode_chunks(tok, _tap(source.chunks(), bar), threads):
                    f.write(ids.tobytes())
        finally:
            if bar is not None:
                bar.close()
    dtype = token_dtype(tok.vocab_size)
    if os.path.getsize(path) == 0:  # mmap cannot map an empty file
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def _tap(chunks: Iterator[str], bar) -> Iterator[str]:
    for c in chunks:
        if bar is not None:
            bar.update(len(c))
        yield c
