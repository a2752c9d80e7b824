"""CPU thread settings for a shared machine (cosearch.threads)."""
from __future__ import annotations

import os

import pytest

from cosearch import threads


@pytest.mark.parametrize("cores, load, want", [(2, 0.1, 2), (2, 1.0, 1), (2, 2.3, 1), (2, 7.0, 1),
                                               (16, 3.4, 13), (1, 0.0, 1)])
def test_threads_leave_the_busy_cores_alone(cores, load, want):
    assert threads.threads_for_load(cores, load) == want


def test_the_users_omp_num_threads_wins(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    env = {"OMP_NUM_THREADS": "3"}
    assert threads.configure_cpu_threads(env) is None
    assert env == {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}
    threads.configure_cpu_threads(env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"


# (usable cores, host cores, load) -> threads chosen (None: torch's default)
@pytest.mark.parametrize("cores, host, load, want", [
    (2, 2, 2.0, 1),     # a busy machine gets fewer threads
    (2, 64, 30.0, None),  # a cpuset: the host-wide load average is not the load on our 2 cores
    (2, 2, 0.2, None),  # an idle machine keeps one thread per core
])
def test_threads_chosen_and_passive_waiting(monkeypatch, cores, host, load, want):
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(os, "cpu_count", lambda: host)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    env = {}
    assert threads.configure_cpu_threads(env) == want
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", **({} if want is None else {"OMP_NUM_THREADS": str(want)})}
