"""Reading user text: parallel corpora (``{split}.{lang}[.gz]``) and plain text.

Every mistake a user can make here (missing file, wrong encoding, misaligned corpora)
raises a one-line ``UserError`` that names the file and the fix. Plain files and ``.gz``
and ``.xz`` files are read alike; :func:`iter_text_chunks` streams a large one.
"""
from __future__ import annotations

import codecs
import gzip
import lzma
import os
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import UserError
from ..inputs import regular_file

#: Other names users give the same split; the first existing file wins.
SPLIT_ALIASES = {
    "valid": ("valid", "val", "dev"),
    "val": ("val", "valid", "dev"),
    "dev": ("dev", "val", "valid"),
}


#: What a truncated or damaged compressed file raises (gzip: BadGzipFile, an OSError, or
#: EOFError; xz: LZMAError or EOFError).
READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)


def open_binary(path: Path) -> BinaryIO:
    """``path`` opened for reading bytes, decompressed when it ends in ``.gz`` or ``.xz``."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.name.endswith(".xz"):
        return lzma.open(path, "rb")
    return open(path, "rb")


def _read_bytes(path: Path) -> bytes:
    regular_file(path, "data file")  # a FIFO would block, /dev/zero never end
    try:
        with open_binary(path) as f:
            return f.read()
    except READ_ERRORS as e:
        raise UserError(f"cannot read {path}: {e}") from None


def not_utf8_error(path: Path, line: int) -> UserError:
    return UserError(f"{path} is not UTF-8 (bad byte at line {line}); convert it, e.g. iconv -t utf-8")


def read_file_text(path: str | Path) -> str:
    """The whole UTF-8 text of ``path`` (plain, ``.gz`` or ``.xz``), with ``\\r\\n`` made ``\\n``."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise not_utf8_error(path, data[: e.start].count(b"\n") + 1) from None
    return text.replace("\r\n", "\n").removeprefix("\ufeff")


def iter_text_chunks(path: str | Path, chunk_bytes: int = 1 << 24) -> Iterator[str]:
    """The text of ``path`` (plain, ``.gz`` or ``.xz``) as chunks of about ``chunk_bytes``
    that end at a line end (the last one may not): what :func:`read_file_text` returns,
    joined, without ever holding the whole file.

    A file that is not UTF-8, holds a NUL byte (binary: an object file, an image) or is
    damaged raises a one-line ``UserError`` naming it and the line.
    """
    path = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    carry, line, first = "", 1, True
    try:
        with open_binary(path) as f:
            while True:
                raw = f.read(chunk_bytes)
                try:
                    text = carry + decoder.decode(raw, final=not raw)
                except UnicodeDecodeError as e:
                    raise not_utf8_error(path, line + carry.count("\n") + raw[: e.start].count(b"\n")) from None
                if first:
                    text, first = text.removeprefix("\ufeff"), False
                cut = len(text) if not raw else text.rfind("\n") + 1
                out, carry = text[:cut], text[cut:]
                if "\x00" in out:
                    at = line + out[: out.index("\x00")].count("\n")
                    raise UserError(f"{path} looks binary (a NUL byte at line {at}); pass UTF-8 text files")
                if out:
                    line += out.count("\n")
                    # a \r\n never spans two chunks: every chunk but the last ends with \n
                    yield out.replace("\r\n", "\n")
                if not raw:
                    return
    except READ_ERRORS as e:
        raise UserError(f"cannot read {path}: {e}") from None


def read_lines(path: str | Path) -> list[str]:
    """Lines of a text file, stripped; only ``\\n`` separates lines.

    ``str.splitlines`` would also split on U+2028, U+0085 and friends, which occur in
    real corpora and would silently misalign source and target.
    """
    lines = [s.strip() for s in read_file_text(path).split("\n")]
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return lines


def _existing(data_dir: Path, name: str) -> Path | None:
    plain, gz = data_dir / name, data_dir / f"{name}.gz"
    if plain.is_file() and gz.is_file():
        raise UserError(f"both {plain} and {gz} exist; remove one")
    # lexists, not is_file: a FIFO or a device there is reported as what it is when read
    return plain if os.path.lexists(plain) else gz if os.path.lexists(gz) else None


def list_splits(data_dir: str | Path, src: str = "en", tgt: str = "de") -> list[str]:
    """Split names that have both ``{split}.{src}`` and ``{split}.{tgt}`` (plain or gz)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return []
    splits = set()
    for p in data_dir.iterdir():
        name = p.name.removesuffix(".gz")
        if name.endswith(f".{src}"):
            split = name[: -len(src) - 1]
            if _existing(data_dir, f"{split}.{tgt}") is not None:
                splits.add(split)
    return sorted(splits)


def resolve_split(data_dir: str | Path, split: str, src: str = "en", tgt: str = "de") -> str | None:
    """The split name present in ``data_dir`` for ``split`` (aliases: valid/val/dev;
    ``test`` falls back to the first ``test*`` split, e.g. Multi30k's test_2016_flickr)."""
    present = list_splits(data_dir, src, tgt)
    for name in SPLIT_ALIASES.get(split, (split,)):
        if name in present:
            return name
    if split == "test":
        tests = [s for s in present if s.startswith("test")]
        return tests[0] if tests else None
    return None


def read_parallel(data_dir: str | Path, src: str = "en", tgt: str = "de",
                  split: str = "train") -> list[tuple[str, str]]:
    """Aligned sentence pairs from ``{split}.{src}`` / ``{split}.{tgt}`` (plain or .gz).

    ``split`` accepts the aliases of :func:`resolve_split`. Raises ``UserError`` when the
    folder or a file is missing, unreadable, not UTF-8, empty, or the line counts differ.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"data folder {data_dir} does not exist; pass a folder holding "
                        f"{split}.{src} and {split}.{tgt} (plain or .gz)")
    name = resolve_split(data_dir, split, src, tgt) or split
    paths = []
    for lang in (src, tgt):
        p = _existing(data_dir, f"{name}.{lang}")
        if p is None:
            present = list_splits(data_dir, src, tgt)
            have = ", ".join(present) if present else "none"
            raise UserError(f"no {name}.{lang} or {name}.{lang}.gz in {data_dir}; "
                            f"splits with both .{src} and .{tgt} there: {have}")
        paths.append(p)
    src_lines, tgt_lines = read_lines(paths[0]), read_lines(paths[1])
    if len(src_lines) != len(tgt_lines):
        raise UserError(f"{paths[0]} has {len(src_lines)} lines but {paths[1]} has "
                        f"{len(tgt_lines)}; source and target must be aligned line by line")
    if not src_lines:
        raise UserError(f"{paths[0]} and {paths[1]} are empty; give at least one sentence pair")
    return list(zip(src_lines, tgt_lines))


def _text_files(folder: Path) -> list[Path]:
    """Regular, non-hidden files under ``folder``, sorted by relative path."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in names if not n.startswith(".")]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def read_text(path: str | Path) -> str:
    """The text of a file (plain or .gz) or of every file under a folder.

    Folder files are read in sorted relative-path order (hidden ones skipped) and each
    ends with a newline, so the result is the same on every machine.
    """
    path = Path(path)
    if path.is_dir():
        parts = [read_file_text(p) for p in _text_files(path)]
        text = "".join(t if t.endswith("\n") or not t else t + "\n" for t in parts)
    elif os.path.lexists(path):
        text = read_file_text(path)  # a FIFO, a device or a link loop is named as such
    else:
        raise UserError(f"{path} does not exist; pass a text file or a folder of text files")
    if not text.strip():
        raise UserError(f"{path} holds no text; pass a non-empty UTF-8 text file or folder")
    return text
