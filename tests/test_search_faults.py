"""Searches that share a study: started together on fresh storages, or one killed mid-trial.

The promise in every case: the study ends with exactly the requested total of finished
trials, each a distinct arch, none left RUNNING; a trial of a killed process is marked
FAIL and its design proposed again (``retry_of``) and finished by the survivor.
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

from cosearch.search.params import trial_attrs, trial_params

from cosearch.search.storage import open_storage

pytestmark = pytest.mark.xdist_group("search_faults")

WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from cosearch.search import search
    from cosearch.search.quality import SyntheticQuality
    from cosearch.space import SearchSpace

    storage, out, barrier, total, role = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    storage = None if storage == "default" else storage

    class Slow(SyntheticQuality):
        def __call__(self, archs):
            if role == "hang":  # mid-trial: the test kills this process now
                (barrier / "hanging").touch()
                time.sleep(600)
            time.sleep(0.03 * len(archs))
            return super().__call__(archs)

    if role == "both":  # start together
        (barrier / str(os.getpid())).touch()
        while len([p for p in barrier.iterdir() if p.name.isdigit()]) < 2:
            time.sleep(0.02)
    if role == "after":  # start once the other one hangs mid-trial (then it is killed)
        while not (barrier / "killed").exists():
            time.sleep(0.02)
    search(hw="zcu102", space="tiny_lm", quality=Slow(SearchSpace.load("tiny_lm")), out=out,
           storage=storage, study="shared", trials=total, sampler="nsga2", population=4, batch=2,
           seed=os.getpid() % 1000, progress=False, plots=False)
""")


def _start(tmp_path: Path, storage: str, out: Path, total: int, role: str) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(script), storage, str(out), str(tmp_path / "barrier"),
                             str(total), role], env=env, stderr=subprocess.PIPE, text=True)


def _check(storage_obj, total: int) -> list:
    st = optuna.load_study(study_name="shared", storage=storage_obj)
    done = st.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == total
    assert len({trial_attrs(t)["digest"] for t in done}) == total  # distinct archs
    assert not st.get_trials(states=(TrialState.RUNNING,))
    # the two seeded extremes were taken once
    assert sum(bool(trial_attrs(t).get("anchor")) for t in done) == 2
    return st.get_trials()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["default", "sqlite"])
def test_two_searches_on_a_fresh_storage_do_not_race(tmp_path, kind):
    (tmp_path / "barrier").mkdir()
    storage = "default" if kind == "default" else f"sqlite:///{tmp_path}/x.db"
    out = tmp_path / "s"  # one --out for both (the case of issue 15)
    procs = [_start(tmp_path, storage, out, 16, "both") for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    _check(open_storage(None if kind == "default" else storage, out), 16)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_search_killed_mid_trial_loses_and_duplicates_nothing(tmp_path, kind):
    (tmp_path / "barrier").mkdir()
    storage = f"sqlite:///{tmp_path}/x.db" if kind == "sqlite" else f"journal:{tmp_path}/x.journal"
    total = 10
    victim = _start(tmp_path, storage, tmp_path / "a", total, "hang")
    survivor = _start(tmp_path, storage, tmp_path / "b", total, "after")
    deadline = time.time() + 120
    while not (tmp_path / "barrier" / "hanging").exists():
        assert victim.poll() is None and time.time() < deadline, victim.stderr.read()[-2000:]
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    (tmp_path / "barrier" / "killed").touch()
    _, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err[-2000:]
    trials = _check(open_storage(storage, None), total)
    killed = [t for t in trials if t.state == TrialState.FAIL and trial_attrs(t).get("owner", "").endswith(
        f":{victim.pid}")]
    assert killed  # the victim's running trials were marked failed ...
    for k in killed:  # ... and each was proposed again and finished once
        again = [t for t in trials if trial_attrs(t).get("retry_of") == k.number]
        assert len(again) == 1 and again[0].state == TrialState.COMPLETE
        assert trial_params(again[0]) == trial_params(k)
