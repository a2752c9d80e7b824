"""train -> ray_train is one-way: the training step runs any job runner and knows nothing of Ray."""
from __future__ import annotations

import subprocess
import sys

import pytest

from cosearch.training.train import DistInfo, run_worker, train

from train_fixtures import lm_space, write_lm_text


def test_importing_train_imports_no_ray():
    code = "import sys, cosearch.training.train; print(sorted(m for m in sys.modules if m == 'ray' or 'ray_train' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_runner_gets_the_prepared_job_and_its_result_is_the_summary(tmp_path):
    data = write_lm_text(tmp_path / "t.txt", lines=200)
    calls = []

    def runner(job, progress, stop_at):
        calls.append((job["workers"], progress, stop_at))
        return run_worker(job, DistInfo(), progress=progress, stop_at=stop_at)

    s = train(lm_space(), "lm", data, tmp_path / "run", steps=2, workers=3, runner=runner, max_tokens=128,
              n_random=0, log_every=1, progress=False)
    assert calls == [(3, False, None)]
    assert s.finished and s.step == 2


def test_workers_without_a_runner_is_refused(tmp_path):
    with pytest.raises(ValueError, match="runner"):
        train(lm_space(), "lm", None, tmp_path / "run", steps=1, workers=2)
