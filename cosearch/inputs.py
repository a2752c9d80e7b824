"""What a user hands in, checked before any work: numbers, paths, files and sizes.

Every check raises a one-line ``UserError`` that names the flag or file and the fix:

* numbers must be finite and in their range (``nan`` passes every ``<``/``>`` test, so a
  plain ``x < 0`` check lets it through);
* a path must not be empty (``Path("")`` is the current folder) nor a symbolic-link loop;
* a file must be a regular file (a FIFO blocks forever, ``/dev/zero`` never ends), of a
  bounded size, UTF-8 text, and JSON no deeper than people write by hand;
* a model must fit in this machine's memory, estimated from its size before allocating.
"""
from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from .errors import UserError

#: Largest JSON/YAML file read whole (configs, arch files): far above any real one.
MAX_CONFIG_BYTES = 64 * 2 ** 20
#: Widest beam search: far beyond any useful one (4-8), and its (sentences x beam x
#: vocabulary) scores still fit in memory.
MAX_BEAM = 1024
#: Deepest nesting of a JSON file: configs nest 4 levels; Python's own recursion limit
#: (about 1,000 frames) would otherwise surface as a RecursionError, in parsing or later.
MAX_JSON_DEPTH = 32


# --------------------------------------------------------------------------- numbers
def check_number(flag: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, integer: bool = False):
    """``value`` itself when it is a finite number in [low, high] (``(low, high]`` with
    ``low_open``); else a ``UserError`` naming ``flag`` and the range."""
    want = _range_words(low, high, low_open, integer)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        raise UserError(f"{flag} {value!r} is invalid; give {want}")
    return value


def _range_words(low, high, low_open, integer) -> str:
    kind = "a whole number" if integer else "a finite number"
    if low is not None and high is not None:
        return f"{kind} {'above' if low_open else 'from'} {low:g} {'up ' if low_open else ''}to {high:g}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{kind} <= {high:g}"
    return kind


# --------------------------------------------------------------------------- paths
def path_arg(value: str | os.PathLike | None, flag: str) -> Path | None:
    """``value`` as a Path (None stays None); an empty string is a ``UserError`` (it would
    mean the current folder, which nobody types on purpose as '')."""
    if value is None:
        return None
    if str(value).strip() == "":
        raise UserError(f"{flag} is empty; give a path (or leave {flag} out for its default)")
    return Path(value)


def resolved(path: str | Path, flag: str) -> Path:
    """The absolute path with every link followed; a link loop is a ``UserError``."""
    try:
        return Path(path).resolve()
    except RuntimeError:  # Python < 3.13 reports a loop this way, later ones as ELOOP
        pass
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
    raise UserError(f"{flag} {path}: a symbolic link there points back to itself (a link loop); "
                    "fix or remove the link")


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return word
    return "not a regular file"


def regular_file(path: str | Path, what: str) -> Path:
    """``path`` when it is a regular file (links followed); else a ``UserError`` saying
    what it is instead: missing, a link loop, a folder, a FIFO or a device."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{what} {path} is a symbolic-link loop; fix or remove the link") from None
        raise UserError(f"{what} {path} cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} {path} is {_kind(st.st_mode)}, not a regular file; give a file")
    return path


def existing_entry(path: str | Path, what: str) -> Path:
    """``path`` when it is a regular file or a folder (``UserError`` otherwise, as in
    :func:`regular_file`)."""
    path = Path(path)
    try:
        if stat.S_ISDIR(os.stat(path).st_mode):
            return path
    except OSError:
        pass  # regular_file names what is wrong
    return regular_file(path, what)


# --------------------------------------------------------------------------- files
def read_bytes(path: str | Path, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (``UserError`` otherwise)."""
    path = regular_file(path, what)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise UserError(f"{what} {path} is larger than {max_bytes // 2 ** 20} MiB; that is no "
                        "cosearch file, give the right one")
    return data


def read_text(path: str | Path, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of a regular file (``UserError`` when it is not text)."""
    data = read_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{what} {path} is not UTF-8 text (bad byte at line {line}); "
                        "give the file cosearch wrote, or convert it (iconv -t utf-8)") from None


def parse_json(text: str, source: str) -> Any:
    """JSON from ``text`` (``UserError`` naming ``source`` when it does not parse or nests
    deeper than :data:`MAX_JSON_DEPTH`)."""
    too_deep = (f"{source}: JSON nested more than {MAX_JSON_DEPTH} levels deep; no cosearch "
                "file nests like that, give the right one")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{source}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise UserError(too_deep) from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise UserError(too_deep)
    return value


def json_depth(value: Any) -> int:
    """How deep lists and objects nest in ``value`` (a scalar: 0), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if items is None:
            continue
        deepest = max(deepest, d)
        if d > MAX_JSON_DEPTH:
            break
        todo.extend((x, d + 1) for x in items)
    return deepest


def read_json(path: str | Path, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """A JSON file read as text with one clear error for every way it can be wrong."""
    return parse_json(read_text(path, what, max_bytes), f"{what} {path}")


# --------------------------------------------------------------------------- memory
def memory_bytes() -> int | None:
    """What memory can hold here: the physical memory, or the container's limit when
    lower (cgroup v2 ``memory.max``, v1 ``memory.limit_in_bytes``); None when unknown."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(f).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            sizes.append(int(text))
    return min(sizes) if sizes else None


def check_memory(nbytes: float, what: str, fix: str) -> None:
    """``UserError`` when ``nbytes`` (an estimate made before allocating) exceed what this
    machine's memory can hold at all."""
    have = memory_bytes()
    if have is not None and nbytes > have:
        raise UserError(f"{what} needs about {_gib(nbytes)} of memory but this machine has "
                        f"{_gib(have)}; {fix}")


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:,.1f} GiB" if n < 2 ** 50 else f"{n:.3g} bytes"
