"""The one rule for folders cosearch writes: which folder a command may create, resume or
replace, and the lock that keeps two commands out of one folder.

* A folder cosearch creates gets a marker file, ``.cosearch``, naming its kind (``run``,
  ``search``, ``export``, ``demo``, ...). ``--force`` replaces only a folder whose marker
  names the kind being written: never a run, a search, or a folder cosearch did not make.
* An output folder is never an input, nor inside one, nor holds one (``search --run RUN
  --out RUN``, ``export ... --out RUN/checkpoints``, ``--out .`` above the run).
* Every command that writes a folder holds a lock on it while it works: a second command
  on the same folder stops at once with one line instead of mixing its files in. The
  lock is a file next to the folder (``.NAME.cosearch-lock``), so a folder that is built
  elsewhere and renamed into place (an export) is covered too; it is removed on exit.
* Temporary files and folders a killed command left behind (``.NAME.*.tmp``, a
  replaced export moved aside) are cleaned up by the next command that holds the lock,
  and only when their marker says cosearch made them.

:func:`check_out` only reads, so commands call it before any work; :func:`lock_out`,
:func:`mark` and :func:`clean_stale` then claim the folder.
"""
from __future__ import annotations

import errno
import glob
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping

from .atomic import atomic_write_text, make_dir, write_error_message
from .errors import UserError
from .inputs import path_arg, resolved

MARKER = ".cosearch"
LOCK_SUFFIX = ".cosearch-lock"
#: What each kind of folder is, for messages.
KINDS = {
    "run": "a cosearch run (cosearch train / retrain)",
    "search": "a cosearch search (cosearch search)",
    "export": "a cosearch export (cosearch export / finetune)",
    "demo": "a cosearch demo folder (cosearch demo)",
    "finetune-work": "the checkpoints of an unfinished cosearch finetune",
    "fidelity": "a cosearch fidelity check or its standalone jobs (cosearch fidelity)",
}
#: Kinds that ``--force`` may replace as a whole (the others resume instead).
REPLACEABLE = ("export",)

#: Recognises folders of a kind written before markers existed: kind -> test.
Legacy = Callable[[Path], bool]


# --------------------------------------------------------------------------- markers
def mark(folder: str | Path, kind: str) -> None:
    """Record that cosearch made ``folder`` for ``kind`` (creating the folder if needed)."""
    from .version import __version__
    assert kind in KINDS, kind
    atomic_write_text(Path(folder) / MARKER, json.dumps({"kind": kind, "cosearch_version": __version__}) + "\n")


def kind_of(folder: str | Path, legacy: Mapping[str, Legacy] | None = None) -> str | None:
    """The kind in ``folder``'s marker; else the first ``legacy`` test it passes; else None."""
    folder = Path(folder)
    try:
        kind = json.loads((folder / MARKER).read_text()).get("kind")
        if kind in KINDS:
            return kind
    except (OSError, ValueError, AttributeError):
        pass
    for kind, test in (legacy or {}).items():
        try:
            if test(folder):
                return kind
        except (OSError, ValueError):
            continue
    return None


def _is_empty_dir(path: Path) -> bool:
    """Empty, or holding only temporary files of atomic writes (another process may be
    writing the folder's first file this moment)."""
    return path.is_dir() and all(p.name.startswith(".") and p.name.endswith(".tmp") for p in path.iterdir())


# --------------------------------------------------------------------------- the rule
def check_out(out: str | Path | None, kind: str, *, flag: str = "--out",
              inputs: Mapping[str, str | Path | None] | None = None, force: bool = False,
              legacy: Legacy | None = None) -> Path:
    """The output folder ``out`` for ``kind``, checked before any work (reads only).

    ``inputs`` maps each input's flag to its path: ``out`` may be none of them, nor lie
    inside one, nor hold one. An existing ``out`` must be a folder; for a replaceable
    kind it is refused unless ``force`` and its marker (or ``legacy(out)``) says it is
    that kind; for the others an existing non-empty folder must be of that kind (resume)
    or pass ``legacy`` (the caller's own test, e.g. a run from before markers).
    Returns ``out`` as given (a Path).
    """
    out = path_arg(out, flag)
    if out is None:
        raise UserError(f"give {flag}")
    real = resolved(out, flag)
    if real.parent == real:
        raise UserError(f"{flag} {out} is the root folder; give a folder to create")
    for name, given in (inputs or {}).items():
        if given is None or str(given) == "":
            continue
        inp = resolved(given, name)
        if inp == real:
            raise UserError(f"{flag} {out} is the input {name} itself; writing there would destroy it, "
                            f"choose another {flag}")
        if real in inp.parents:
            raise UserError(f"{flag} {out} holds the input {name} {given}; writing there would "
                            f"overwrite or mix with it, choose an {flag} outside it")
        if inp in real.parents and inp.is_dir():
            raise UserError(f"{flag} {out} is inside the input {name} {given}; choose an {flag} "
                            "outside it")
    if not os.path.lexists(out):
        above = next((p for p in out.absolute().parents if os.path.lexists(p)), None)
        if above is not None and not above.is_dir():  # mkdir would fail half-way, with a traceback
            raise UserError(f"{flag} {out} is under {above}, which is a file; choose another {flag}")
        # refused now, not after another output was begun (e.g. --out written, then --jobs fails)
        if above is not None and not os.access(above, os.W_OK | os.X_OK):
            raise UserError(f"cannot write {above}: it is read-only or not permitted, so {flag} {out} cannot be "
                            f"made there; choose a writable {flag}")
        return out
    if not out.is_dir():
        raise UserError(f"{flag} {out} exists and is not a folder; choose a new {flag}")
    found = kind_of(out, {kind: legacy} if legacy else None)
    if kind in REPLACEABLE:
        if not force:
            raise UserError(f"{out} already exists; choose a new {flag} or pass --force to replace it")
        if found != kind:
            what = KINDS[found] if found else "no folder cosearch made for it"
            raise UserError(f"{flag} {out} is {what}, not {KINDS[kind]}: --force replaces only "
                            f"a folder cosearch made for that; choose another {flag}")
        return out
    if found != kind and not _is_empty_dir(out):
        what = f"{KINDS[found]}, not " if found else "not "
        raise UserError(f"{flag} {out} exists and is {what}{KINDS[kind]}; choose a new or empty {flag}")
    return out


# --------------------------------------------------------------------------- locks
_HELD: dict[Path, list] = {}  # resolved folder -> [fd, depth]: re-entrant within a process


def lock_path(out: str | Path) -> Path:
    real = Path(out).resolve()
    return real.parent / f".{real.name}{LOCK_SUFFIX}"


@contextmanager
def lock_out(out: str | Path, *, shared: bool = False, flag: str = "--out") -> Iterator[Path]:
    """Hold the lock of folder ``out`` (exclusive, or ``shared`` among processes that
    share it by design, as the processes of one search do). A lock held by another
    process is a ``UserError`` at once, never a wait. Re-entrant within a process."""
    import fcntl

    real = resolved(out, flag)
    if real in _HELD:
        _HELD[real][1] += 1
        try:
            yield Path(out)
        finally:
            _HELD[real][1] -= 1
        return
    make_dir(real.parent)
    path = lock_path(real)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:  # a refusal, or a folder where no file can be made (e.g. under /proc)
            raise UserError(write_error_message(real.parent, e)) from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise UserError(f"{out} is in use by another cosearch command{holder}; wait for it to "
                            f"finish or choose another {flag}") from None
        # the lock file may have been removed (and maybe made again) between open and
        # flock by a command that just finished: then this lock guards nothing, retry
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    if not shared:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[real] = [fd, 1]
    try:
        yield Path(out)
    finally:
        del _HELD[real]
        try:
            if shared:  # the last sharer removes the file; the others leave it
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)  # while still locked: a waiting opener then sees a new inode
        except OSError:
            pass
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


# --------------------------------------------------------------------------- leftovers
def clean_stale(out: str | Path, kind: str, legacy: Legacy | None = None) -> None:
    """Remove what a killed command left behind; call it holding the lock of ``out`` (or
    of the folder that owns it), so no live command is writing them: ``.NAME.*.tmp`` folders next to ``out`` and hidden
    ``.*.tmp`` files inside it (atomic writes cut short). A replaced folder moved aside
    (``.NAME.old-PID``) comes back when ``out`` is missing, else it is removed. Only
    folders whose marker names ``kind`` are touched (or, moved aside, that pass ``legacy``)."""
    out = Path(out)
    real = out.resolve()
    ours = {kind: legacy} if legacy else None
    parent = real.parent
    for p in sorted(parent.glob(f".{glob.escape(real.name)}.*")):
        # a folder moved aside is ``out`` itself (write_export checked it), so ``legacy`` tells too
        moved_aside = ".old-" in p.name[len(real.name) + 1:] and not p.name.endswith(".tmp")
        if not p.is_dir() or p.is_symlink() or kind_of(p, ours if moved_aside else None) != kind:
            continue
        if p.name.endswith(".tmp"):
            shutil.rmtree(p, ignore_errors=True)
        elif moved_aside:
            if not os.path.lexists(real):
                os.replace(p, real)  # the command was killed between its two renames
            else:
                shutil.rmtree(p, ignore_errors=True)
    if real.is_dir() and kind_of(real, ours) == kind:
        for pattern in (".*.tmp", "*/.*.tmp"):
            for p in real.glob(pattern):
                if p.is_file() and not p.is_symlink():
                    p.unlink(missing_ok=True)
