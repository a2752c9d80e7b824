"""The embedded default corpus: the Python standard library's own source code.

Every machine that runs cosearch has it, so ``cosearch demo`` needs no download. The
file list is sorted and capped, so the text is the same on every run of one Python
version (other versions ship other sources, hence other text).
"""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from ..errors import UserError

#: Folders whose files are tests, vendored packages or generated data, not library code.
_SKIP_DIRS = {"test", "tests", "site-packages", "dist-packages", "idle_test", "__pycache__",
              "lib2to3", "turtledemo", "ensurepip"}


def stdlib_dir() -> Path:
    """Where this interpreter's pure-Python standard library lives."""
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_sources(root: Path) -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]  # prune: site-packages is huge
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def default_corpus(max_bytes: int = 2_000_000) -> str:
    """Standard-library ``.py`` sources, in sorted path order, up to ``max_bytes`` of UTF-8.

    Files that are not UTF-8 are skipped; the last file is cut at a line boundary so the
    text never exceeds ``max_bytes``.
    """
    root = stdlib_dir()
    parts: list[str] = []
    used = 0
    for path in _stdlib_sources(root):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not text.strip():
            continue
        if not text.endswith("\n"):
            text += "\n"
        size = len(text.encode("utf-8"))
        if used + size > max_bytes:
            # Keep whole lines of the last file that fit.
            room, keep = max_bytes - used, []
            for line in text.splitlines(keepends=True):
                room -= len(line.encode("utf-8"))
                if room < 0:
                    break
                keep.append(line)
            parts.append("".join(keep))
            break
        parts.append(text)
        used += size
    corpus = "".join(parts)
    if not corpus.strip():
        raise UserError(f"no Python sources found under {root} for the default corpus; "
                        "pass --data with a text file or folder")
    return corpus
