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


def test_a_busy_machine_gets_fewer_threads_and_passive_waiting(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    env = {}
    assert threads.configure_cpu_threads(env) == 1
    assert env == {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def test_a_cpuset_ignores_the_hosts_load(monkeypatch):
    # 2 of the host's 64 cores: the host-wide load average is not the load on ours
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "getloadavg", lambda: (30.0, 30.0, 30.0))
    env = {}
    assert threads.configure_cpu_threads(env) is None
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_an_idle_machine_keeps_one_thread_per_core(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    env = {}
    assert threads.configure_cpu_threads(env) is None
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
