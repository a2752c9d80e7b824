"""Two CPU Ray Train workers: identical weights on both, falling loss, rank 0 logs."""
from __future__ import annotations

import pytest

from cosearch.training.rundir import read_metrics
from cosearch.training.ray_train import train_distributed, worker_results

from train_fixtures import lm_space, write_lm_text

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.train.torch")
    yield
    ray.shutdown()  # give the CPUs back to the other tests


def test_two_workers_stay_identical_and_learn(tmp_path, ray_cluster):
    data = write_lm_text(tmp_path / "t.txt", lines=600)
    s = train_distributed(lm_space(), "lm", data, tmp_path / "run", steps=8, workers=2, max_tokens=256, lr=5e-3,
              warmup=1, n_random=1, log_every=4, ckpt_every=8, progress=False)
    ranks = worker_results(tmp_path / "run")
    assert [r["workers"] for r in ranks] == [2, 2]
    assert ranks[0]["state_digest"] == ranks[1]["state_digest"] == s.state_digest
    m = read_metrics(tmp_path / "run")
    assert [r["step"] for r in m] == [4, 8]
    assert m[-1]["loss_largest"] < m[0]["loss_largest"]
    assert s.finished and (tmp_path / "run" / "checkpoints" / "step_00000008.pt").is_file()
