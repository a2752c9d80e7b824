"""Atomic file writes: a temporary file in the same folder, then ``os.replace``, so a
killed process never leaves a half-written file behind.

A write that the machine refuses (read-only or full disk, no permission, file-size
limit) becomes a one-line ``UserError`` naming the path; the temporary file is removed
and the file that was there before is untouched.
"""
from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError

#: errno values that mean "this place cannot be written", not a bug in cosearch.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_WRITE = {errno.EROFS, errno.EACCES, errno.EPERM}
WRITE_ERRNOS = frozenset(_NO_ROOM | _NO_WRITE)


def write_error_message(path: str | Path | None, e: OSError) -> str:
    """One line for a refused write: the path (when known), the system's reason and the fix."""
    where = Path(e.filename) if path is None and e.filename else path
    if where is not None:  # an atomic write's temporary file or folder: name the folder it is in
        where = next((p.parent for p in [Path(where), *Path(where).parents]
                      if p.name.startswith(".") and p.name.endswith(".tmp")), where)
    reason = e.strerror or str(e)
    if e.errno in _NO_ROOM:
        fix = "free disk space (or raise the file-size limit) and rerun the same command"
    else:
        fix = "choose a writable folder (e.g. another --out) or fix its permissions"
    return f"cannot write {where if where is not None else 'to the disk'}: {reason}; {fix}"


def is_write_refusal(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in WRITE_ERRNOS


#: How libraries that do not raise OSError report a refused write (SQLite through
#: SQLAlchemy and Optuna, safetensors' Rust writer, torch's file writer).
_REFUSAL_TEXT = {"database or disk is full": errno.ENOSPC, "no space left on device": errno.ENOSPC,
                 "os error 28": errno.ENOSPC, "disk quota exceeded": errno.EDQUOT,
                 "attempt to write a readonly database": errno.EROFS, "read-only file system": errno.EROFS}


def write_refusal_in(e: BaseException) -> OSError | None:
    """The refused write behind ``e`` (itself, or its cause or context, however wrapped),
    as an ``OSError``; None when ``e`` is not about a disk that refused a write."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if is_write_refusal(e):
            return e
        text = str(e).lower()
        for words, code in _REFUSAL_TEXT.items():
            if words in text:
                return OSError(code, os.strerror(code))
        e = e.__cause__ or e.__context__
    return None


def make_dir(path: str | Path) -> Path:
    """``mkdir -p`` that turns a refusal into a ``UserError`` naming the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if is_write_refusal(e):
            raise UserError(write_error_message(path, e)) from None
        raise
    return path


def check_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and make sure a file can be created in it (``UserError`` if not)."""
    path = make_dir(path)
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe.", suffix=".tmp")
    except OSError as e:
        if is_write_refusal(e):
            raise UserError(write_error_message(path, e)) from None
        raise
    os.close(fd)
    os.unlink(probe)
    return path


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open``/``mkdir`` would give: 0666 (files) or 0777 (folders) less
    the umask (mkstemp/mkdtemp use 0600/0700, which other users cannot read)."""
    try:  # Linux: read it without changing it (os.umask is process-wide, racy with threads)
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0)
        os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    make_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        if is_write_refusal(e):
            raise UserError(write_error_message(path, e)) from None
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if is_write_refusal(e):
            raise UserError(write_error_message(path, e)) from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
