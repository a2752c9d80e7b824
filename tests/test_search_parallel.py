"""Several workers on one study: separate processes (journal file, PostgreSQL) and Ray actors.

Every case checks the same promise: the study ends with exactly the requested total of
finished trials, each evaluated once, and no trial left running.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from cosearch.search.params import trial_attrs

pytestmark = pytest.mark.xdist_group("search_parallel")

WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from cosearch.search import search
    from cosearch.search.quality import SyntheticQuality
    from cosearch.space import SearchSpace

    storage, out, barrier, total = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])

    class Slow(SyntheticQuality):  # slow enough that both workers overlap
        def __call__(self, archs):
            time.sleep(0.05 * len(archs))
            return super().__call__(archs)

    (barrier / str(os.getpid())).touch()
    while len(list(barrier.iterdir())) < 2:  # start together
        time.sleep(0.05)
    search(hw="zcu102", space="tiny_lm", quality=Slow(SearchSpace.load("tiny_lm")), out=out,
           storage=storage, study="shared", trials=total, sampler="random", batch=2, seed=os.getpid(),
           progress=False, plots=False)
""")


def _two_workers(tmp_path: Path, storage: str, total: int) -> optuna.Study:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [subprocess.Popen([sys.executable, str(script), storage, str(tmp_path / f"out{i}"), str(barrier),
                               str(total)], env=env, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    from cosearch.search.storage import open_storage
    st = optuna.load_study(study_name="shared", storage=open_storage(storage, None))
    owners = {p.pid for p in procs}
    done = st.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == total
    assert len({t.number for t in done}) == total
    assert not st.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    got = {int(trial_attrs(t)["owner"].rsplit(":", 1)[1]) for t in done}
    assert got <= owners and len(got) == 2  # both worked, nobody else did
    # each worker's trials.csv shows the shared study as it was when that worker stopped
    numbers = {t.number for t in done}
    sizes = []
    for i in range(2):
        df = pd.read_csv(tmp_path / f"out{i}" / "trials.csv")
        assert df["number"].is_unique and set(df["number"]) <= numbers
        sizes.append(len(df))
    assert max(sizes) == total
    return st


@pytest.mark.slow
def test_two_processes_share_a_journal_study(tmp_path):
    _two_workers(tmp_path, f"journal:{tmp_path}/study.journal", total=30)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_processes_share_a_postgres_study(tmp_path):
    url = os.environ.get("COSEARCH_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("COSEARCH_TEST_POSTGRES_URL is not set (.ci/run starts a server and sets it)")
    pytest.importorskip("psycopg2")
    optuna.delete_study(study_name="shared", storage=url) if "shared" in optuna.get_all_study_names(url) else None
    _two_workers(tmp_path, url, total=30)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_workers_measure_in_parallel(tmp_path):
    pytest.importorskip("ray")
    from cosearch.search import search
    r = search(hw="zcu102", space="tiny_lm", quality="synthetic", out=tmp_path / "s", trials=24,
               sampler="nsga2", population=6, batch=4, workers=2, progress=False, plots=False)
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert r.trials == 24 and len(df) == 24 and df["number"].is_unique
    assert set(df["source"]) == {"synthetic"}
    assert r.measured == df["digest"].nunique()
    from cosearch.search.quality import SyntheticQuality
    from cosearch.space import Arch, SearchSpace
    q = SyntheticQuality(SearchSpace.load("tiny_lm"))
    assert df["quality"].tolist() == pytest.approx([q.loss(Arch.from_json(a)) for a in df["arch"]])
