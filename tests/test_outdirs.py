"""The output-folder rule (cosearch.outdirs) and the input checks (cosearch.inputs), in
process; the commands that use them are exercised through the CLI in test_reliability."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cosearch.errors import UserError
from cosearch.inputs import MAX_JSON_DEPTH, check_memory, check_number, parse_json, read_json, regular_file
from cosearch.outdirs import MARKER, check_out, clean_stale, kind_of, lock_out, lock_path, mark
from cosearch.space import SearchSpace

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- check_out
def test_force_replaces_only_a_folder_of_its_own_kind(tmp_path):
    exp, run, mine = tmp_path / "exp", tmp_path / "run", tmp_path / "mine"
    mark(exp, "export")
    mark(run, "run")
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work\n")
    assert check_out(exp, "export", force=True) == exp
    with pytest.raises(UserError, match="already exists.*--force"):
        check_out(exp, "export")
    with pytest.raises(UserError, match="cosearch run.*--force replaces only"):
        check_out(run, "export", force=True)
    with pytest.raises(UserError, match="no folder cosearch made"):
        check_out(mine, "export", force=True)
    legacy = lambda p: (p / "config.json").is_file()  # noqa: E731
    (mine / "config.json").write_text("{}")
    assert check_out(mine, "export", force=True, legacy=legacy) == mine
    assert check_out(tmp_path / "new", "export") == tmp_path / "new"


def test_resumable_kinds_refuse_a_folder_of_another_kind(tmp_path):
    run, search, empty = tmp_path / "run", tmp_path / "s", tmp_path / "empty"
    mark(run, "run")
    mark(search, "search")
    empty.mkdir()
    assert check_out(run, "run") == run  # resume
    assert check_out(empty, "search") == empty
    with pytest.raises(UserError, match="is a cosearch run.*not a cosearch search"):
        check_out(run, "search")
    with pytest.raises(UserError, match="not a folder"):
        (tmp_path / "f").write_text("x")
        check_out(tmp_path / "f", "run")


@pytest.mark.parametrize("out, words", [
    ("run", "is the input --run itself"),
    ("run/checkpoints", "inside the input --run"),
    ("run/checkpoints/new", "inside the input --run"),
    (".", "holds the input --run"),
    ("", "empty"),
])
def test_out_is_never_an_input_nor_above_nor_below_one(tmp_path, monkeypatch, out, words):
    monkeypatch.chdir(tmp_path)
    mark(tmp_path / "run" / "checkpoints", "export")  # even a folder --force could replace
    with pytest.raises(UserError, match=words):
        check_out(out, "export", force=True, inputs={"--run": "run"})
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [MARKER]


def test_a_sibling_of_an_input_is_fine(tmp_path):
    assert check_out(tmp_path / "run-export", "export", inputs={"--run": tmp_path / "run"})


def test_symlink_loops_and_the_root(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(UserError, match="loop"):
        check_out(tmp_path / "a" / "out", "run")
    with pytest.raises(UserError, match="loop"):
        check_out(tmp_path / "out", "run", inputs={"--data": tmp_path / "a"})
    with pytest.raises(UserError, match="root"):
        check_out("/", "export", force=True)


# --------------------------------------------------------------------------- locks
HOLD = """
import sys, time
from cosearch.outdirs import lock_out
with lock_out(sys.argv[1], shared=sys.argv[2] == "shared"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def _holder(folder: Path, mode: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), mode], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.stdout.readline().strip() == "held"
    return p


def _release(p: subprocess.Popen) -> None:
    p.stdin.write("\n")
    p.stdin.flush()
    assert p.wait(timeout=60) == 0


def test_an_exclusive_lock_stops_a_second_command_at_once(tmp_path):
    out = tmp_path / "run"
    p = _holder(out, "exclusive")
    try:
        with pytest.raises(UserError, match=rf"in use by another cosearch command \(pid {p.pid}\)"):
            with lock_out(out):
                pass
        with pytest.raises(UserError, match="in use"):
            with lock_out(out, shared=True):
                pass
    finally:
        _release(p)
    with lock_out(out):  # free again; re-entrant within one process
        with lock_out(out):
            assert lock_path(out).exists()
    assert not lock_path(out).exists()  # nothing left next to the folder


def test_shared_holders_exclude_writers_and_the_last_removes_the_file(tmp_path):
    out = tmp_path / "s"
    p = _holder(out, "shared")
    try:
        with pytest.raises(UserError, match="in use"):
            with lock_out(out):
                pass
        with lock_out(out, shared=True):
            pass
        assert lock_path(out).exists()  # the other sharer still holds it
    finally:
        _release(p)
    assert not lock_path(out).exists()


def test_lock_in_a_readonly_folder_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes through chmod (test_reliability covers this with a read-only mount)")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(UserError, match="cannot write"):
            with lock_out(tmp_path / "ro" / "x"):
                pass
    finally:
        (tmp_path / "ro").chmod(0o755)


# --------------------------------------------------------------------------- leftovers
def test_clean_stale_removes_only_what_cosearch_left(tmp_path):
    out = tmp_path / "exp"
    mark(out, "export")
    mark(tmp_path / ".exp.abc123.tmp", "export")  # a killed export's temporary folder
    (tmp_path / ".exp.user.tmp").mkdir()  # not cosearch's: no marker
    (out / ".config.json.x1.tmp").write_text("{")  # an atomic write cut short
    (out / "model.safetensors").write_text("weights")
    with lock_out(out):
        clean_stale(out, "export")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".exp.user.tmp", "exp"]
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "model.safetensors"]


def test_clean_stale_brings_back_a_folder_moved_aside_by_a_killed_replace(tmp_path):
    out = tmp_path / "exp"
    old = tmp_path / f".exp.old-{os.getpid() + 1}"
    mark(old, "export")
    (old / "model.safetensors").write_text("the previous export")
    with lock_out(out):
        clean_stale(out, "export")
    assert (out / "model.safetensors").read_text() == "the previous export" and not old.exists()
    assert kind_of(out) == "export"


def test_clean_stale_brings_back_an_export_from_before_markers_moved_aside(tmp_path):
    out = tmp_path / "exp"
    old = tmp_path / f".exp.old-{os.getpid() + 1}"
    old.mkdir()  # no marker: written before markers existed, recognised by the caller's test
    (old / "config.json").write_text('{"format": "old export"}')
    legacy = lambda p: (p / "config.json").is_file()  # noqa: E731
    with lock_out(out):
        clean_stale(out, "export", legacy=legacy)
    assert (out / "config.json").read_text() == '{"format": "old export"}' and not old.exists()
    stray = tmp_path / ".exp.x.tmp"  # the legacy test vouches for moved-aside folders only
    stray.mkdir()
    (stray / "config.json").write_text("{}")
    with lock_out(out):
        clean_stale(out, "export", legacy=legacy)
    assert (stray / "config.json").exists() and (out / "config.json").exists()


# --------------------------------------------------------------------------- inputs
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1, True, "3"])
def test_numbers_must_be_finite_and_in_range(value):
    with pytest.raises(UserError, match="--x"):
        check_number("--x", value, low=0)


def test_numbers_in_range_pass_through():
    assert check_number("--x", 0, low=0) == 0
    assert check_number("--x", 2.5, low=0, low_open=True, high=3) == 2.5
    with pytest.raises(UserError):
        check_number("--x", 0, low=0, low_open=True)
    with pytest.raises(UserError):
        check_number("--x", 2.5, low=0, integer=True)


def test_json_nesting_is_bounded(tmp_path):
    ok = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(ok, "x") is not None
    with pytest.raises(UserError, match="nested"):
        parse_json("[" + ok + "]", "x")
    with pytest.raises(UserError, match="nested"):
        parse_json("[" * 100_000 + "]" * 100_000, "x")  # json itself: RecursionError


def test_files_are_regular_text(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UserError, match="FIFO"):
        read_json(tmp_path / "fifo", "config")
    with pytest.raises(UserError, match="character device"):
        regular_file("/dev/zero", "config")
    with pytest.raises(UserError, match="does not exist"):
        regular_file(tmp_path / "none", "config")
    (tmp_path / "latin1.json").write_bytes('{"a": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(UserError, match="UTF-8"):
        read_json(tmp_path / "latin1.json", "config")
    (tmp_path / "ok.json").write_text(json.dumps({"a": [1]}))
    assert read_json(tmp_path / "ok.json", "config") == {"a": [1]}


def test_memory_is_checked_against_this_machine():
    with pytest.raises(UserError, match="memory"):
        check_memory(2 ** 60, "loading x", "use less")
    check_memory(1024, "loading x", "use less")


def test_supernet_size_estimate_matches_the_built_supernet():
    """The memory check's parameter count, against the real supernet (MoS experts and
    routers included), within 2%."""
    from cosearch.model.supernet import Supernet
    for name in ("tiny_lm", "multi30k"):
        space = SearchSpace.load(name)
        built = sum(p.numel() for p in Supernet(space).parameters())
        assert abs(space.supernet_params() - built) / built < 0.02, name
