"""Exact books under every fault: a search killed (SIGKILL) or interrupted (SIGINT) at any
point of the ask/reserve/measure/record cycle, or stopped by a storage that cannot write,
is resumed by the same command to exactly --trials finished trials, each a distinct design,
none left RUNNING. A process of another machine that dies is found by Optuna's heartbeats.
A study made for other objectives or bounds is refused in one line.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cosearch.cli import main
from cosearch.search.params import trial_attrs

pytestmark = pytest.mark.xdist_group("search_books")
ROOT = Path(__file__).resolve().parents[1]

# the CLI with one fault injected: at the N-th call of a storage method (or of the quality
# source) the process signals itself (KILL: dies there; INT: Ctrl-C there), or the storage
# fails as a full disk does; HOSTNAME pretends to run on another machine
HOOKED_CLI = textwrap.dedent("""
    import os, signal, socket, sqlite3, sys
    import optuna
    from optuna.storages import RDBStorage
    from cosearch.search.quality import SyntheticQuality
    from cosearch.cli import main

    point, nth, action = os.environ.get("HOOK", "none:0:none").split(":")
    if os.environ.get("FAKE_HOST"):
        socket.gethostname = lambda: os.environ["FAKE_HOST"]
    WHERE = {  # point -> (owner, method, which calls count)
        "reserve": (RDBStorage, "create_new_trial", lambda *a, **k: True),
        "claim": (RDBStorage, "set_trial_state_values", lambda s, t, state, *a, **k: state.name == "RUNNING"),
        "result": (RDBStorage, "set_trial_user_attr", lambda s, t, key, *a, **k: key == "result"),
        "record": (RDBStorage, "set_trial_state_values", lambda s, t, state, *a, **k: state.name == "COMPLETE"),
        "measure": (SyntheticQuality, "__call__", lambda *a, **k: True),
    }
    if point in WHERE:
        owner, name, counts = WHERE[point]
        real, seen = getattr(owner, name), [0]

        def hooked(*a, **k):
            if counts(*a, **k):
                seen[0] += 1
                if seen[0] == int(nth) and action == "FULL":
                    err = sqlite3.OperationalError("database or disk is full")
                    raise optuna.exceptions.StorageInternalError("commit failed") from err
            out = real(*a, **k)
            if counts(*a, **k) and seen[0] == int(nth) and action in ("KILL", "INT"):
                os.kill(os.getpid(), getattr(signal, "SIG" + action))
            return out
        setattr(owner, name, hooked)
    sys.exit(main(sys.argv[1:]))
""")


def cli(tmp_path: Path, args: list, hook: str | None = None, host: str | None = None) -> subprocess.CompletedProcess:
    script = tmp_path / "hooked_cli.py"
    script.write_text(HOOKED_CLI)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HOOK=hook or "none:0:none")
    env.pop("FAKE_HOST", None)
    if host:
        env["FAKE_HOST"] = host
    # Ctrl-C is Python's KeyboardInterrupt only where SIGINT is not ignored at start-up; a test
    # process launched in the background (nohup, `&`) can pass SIG_IGN down, so reset it
    return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True,
                          timeout=300, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def search_args(out: Path, trials: int, *extra) -> list:
    return ["search", "--space", "tiny_lm", "--synthetic-quality", "--hw", "zcu102", "--trials", str(trials),
            "--sampler", "nsga2", "--population", "4", "--batch", "4", "--out", str(out), "--no-progress",
            *extra]


def books(out: Path, total: int, storage: str | None = None) -> list:
    """The study's trials, after checking the promise: ``total`` finished distinct designs, none running."""
    st = optuna.load_study(study_name="cosearch", storage=storage or f"sqlite:///{out / 'study.db'}")
    ts = st.get_trials(deepcopy=False)
    done = [t for t in ts if t.state == TrialState.COMPLETE]
    assert len(done) == total
    assert len({trial_attrs(t)["digest"] for t in done}) == total
    assert not [t for t in ts if t.state == TrialState.RUNNING]
    return ts


POINTS = [("claim", 1), ("reserve", 6), ("measure", 2), ("result", 3), ("record", 5)]


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["KILL", "INT"])
@pytest.mark.parametrize("point,nth", POINTS)
def test_a_search_stopped_anywhere_resumes_to_exactly_n(tmp_path, point, nth, signal_name):
    out, total = tmp_path / "s", 14
    first = cli(tmp_path, search_args(out, total), hook=f"{point}:{nth}:{signal_name}")
    if signal_name == "KILL":
        assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    else:  # Ctrl-C: one line, exit 130, and no trial of this process left RUNNING ...
        assert first.returncode == 130, first.stderr[-2000:]
        assert first.stderr.strip().splitlines()[-1].endswith("rerun the same command to resume")
        st = optuna.load_study(study_name="cosearch", storage=f"sqlite:///{out / 'study.db'}")
        running = st.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        # ... except a queued trial claimed the instant before (owner not yet written)
        assert all(trial_attrs(t).get("owner") is None for t in running) and len(running) <= (point == "claim")
    again = cli(tmp_path, search_args(out, total))
    assert again.returncode == 0, again.stderr[-2000:]
    ts = books(out, total)
    assert sum(bool(trial_attrs(t).get("anchor")) for t in ts if t.state == TrialState.COMPLETE) == 2


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_rerun_completes(tmp_path):
    out, total = tmp_path / "s", 12
    first = cli(tmp_path, search_args(out, total), hook="record:5:FULL")
    err = first.stderr.strip().splitlines()
    assert first.returncode == 2 and len(err) == 1, first.stderr[-2000:]
    assert f"cannot write {out / 'study.db'}: No space left" in err[0] and "rerun the same command" in err[0]
    again = cli(tmp_path, search_args(out, total))
    assert again.returncode == 0, again.stderr[-2000:]
    books(out, total)


@pytest.mark.slow
def test_a_dead_process_of_another_machine_is_found_by_heartbeat(tmp_path):
    # the victim runs on "otherhost": its pid means nothing here, only its heartbeat stops
    db = f"sqlite:///{tmp_path}/shared.db"
    total = 12
    victim = cli(tmp_path, search_args(tmp_path / "a", total, "--storage", db, "--heartbeat", "1"),
                 hook="measure:2:KILL", host="otherhost")
    assert victim.returncode == -signal.SIGKILL, victim.stderr[-2000:]
    st = optuna.load_study(study_name="cosearch", storage=db)
    orphans = st.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert orphans and all(trial_attrs(t)["owner"].startswith("otherhost:") for t in orphans)
    time.sleep(2.5)  # past the grace period (twice the heartbeat)
    survivor = cli(tmp_path, search_args(tmp_path / "b", total, "--storage", db, "--heartbeat", "1"))
    assert survivor.returncode == 0, survivor.stderr[-2000:]
    ts = books(tmp_path / "b", total, storage=db)
    by_number = {t.number: t for t in ts}
    for o in orphans:  # failed by Optuna's stale check, and retried once (RetryHeartbeatStaleTrialCallback)
        assert by_number[o.number].state == TrialState.FAIL
        retries = [t for t in ts if t.system_attrs.get("failed_trial") == o.number]
        assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
        assert trial_attrs(retries[0])["digest"] == trial_attrs(o)["digest"]


@pytest.mark.slow
def test_without_heartbeats_another_machines_trials_are_left_alone(tmp_path):
    # no heartbeat: a trial of another machine might be running still; never failed by pid
    db = f"sqlite:///{tmp_path}/shared.db"
    victim = cli(tmp_path, search_args(tmp_path / "a", 12, "--storage", db), hook="measure:2:KILL", host="otherhost")
    assert victim.returncode == -signal.SIGKILL
    st = optuna.load_study(study_name="cosearch", storage=db)
    orphans = {t.number for t in st.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    survivor = cli(tmp_path, search_args(tmp_path / "b", 12, "--storage", db))
    assert survivor.returncode == 0, survivor.stderr[-2000:]
    assert orphans == {t.number for t in st.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}


def test_a_study_made_for_other_settings_is_refused_in_one_line(tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/shared.db"
    base = ["search", "--space", "tiny_lm", "--synthetic-quality", "--hw", "zcu102", "--trials", "4",
            "--sampler", "random", "--storage", db, "--study", "s", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a"), "--latency-max", "50"]) == 0
    capsys.readouterr()
    st = optuna.load_study(study_name="s", storage=db)
    n = len(st.trials)
    import yaml

    from cosearch.space import SearchSpace
    other = SearchSpace.load("tiny_lm").to_dict()
    other["decoder"]["ffn_dim"] = [128, 256]  # another space (its genes would decode differently)
    MICRO = tmp_path / "other_space.yaml"
    MICRO.write_text(yaml.safe_dump({k: v for k, v in other.items() if v is not None}))
    cases = [(["--latency-max", "40"], "latency_max=50.0"),
             (["--latency-max", "50", "--objectives", "quality,latency,energy"], "objectives="),
             (["--latency-max", "50", "--scenario", "prefill"], "scenario="),
             (["--latency-max", "50", "--hw", "alveo_u250"], "hw="),
             (["--latency-max", "50", "--space", str(MICRO)], "space_digest=")]
    for i, (extra, field) in enumerate(cases):
        rc = main(base + ["--out", str(tmp_path / f"b{i}")] + [x for x in extra if x])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and field in err[0] and "another --study" in err[0], err
    assert len(optuna.load_study(study_name="s", storage=db).trials) == n
    assert main(base + ["--out", str(tmp_path / "c"), "--latency-max", "50", "--trials", "6"]) == 0  # same: resumes


def test_out_under_a_file_and_a_damaged_search_json_are_one_line(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    base = ["search", "--space", "tiny_lm", "--synthetic-quality", "--hw", "zcu102", "--trials", "3", "--no-progress"]
    for out, says in ((f / "run" / "deeper", "which is a file"), (f, "is not a folder")):
        assert main(base + ["--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
    assert f.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    out = tmp_path / "s"
    assert main(base + ["--out", str(out)]) == 0
    (out / "search.json").write_text("{ damaged")
    assert main(base + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "search.json is damaged" in err and "delete" not in err and "move that one file aside" in err
    (out / "search.json").rename(tmp_path / "aside.json")  # as the message says: the trials are kept
    assert main(base + ["--out", str(out), "--trials", "5"]) == 0
    books(out, 5)


@pytest.mark.parametrize("storage", ["memory", "journal:{tmp}/j.log"])
def test_a_heartbeat_on_a_storage_without_heartbeats_is_one_line(tmp_path, capsys, storage):
    argv = ["search", "--space", "tiny_lm", "--synthetic-quality", "--hw", "zcu102", "--trials", "3", "--no-progress",
            "--out", str(tmp_path / "s"), "--storage", storage.format(tmp=tmp_path), "--heartbeat", "5"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--heartbeat needs a database --storage" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
