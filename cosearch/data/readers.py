"""Reading user text: parallel corpora (``{split}.{lang}[.gz]``) and plain text.

Every mistake a user can make here (missing file, wrong encoding, misaligned corpora)
raises a one-line ``UserError`` that names the file and the fix.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

from ..errors import UserError
from ..inputs import regular_file

#: Other names users give the same split; the first existing file wins.
SPLIT_ALIASES = {
    "valid": ("valid", "val", "dev"),
    "val": ("val", "valid", "dev"),
    "dev": ("dev", "val", "valid"),
}


def _read_bytes(path: Path) -> bytes:
    regular_file(path, "data file")  # a FIFO would block, /dev/zero never end
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        # gzip raises BadGzipFile (an OSError) or EOFError on a truncated file.
        raise UserError(f"cannot read {path}: {e}") from None


def read_file_text(path: str | Path) -> str:
    """The whole UTF-8 text of ``path`` (plain or ``.gz``), with ``\\r\\n`` made ``\\n``."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{path} is not UTF-8 (bad byte at line {line}); "
                        "convert it, e.g. iconv -t utf-8") from None
    return text.replace("\r\n", "\n").removeprefix("\ufeff")


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
