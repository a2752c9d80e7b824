"""CPU thread settings that hold up on a shared machine.

torch's OpenMP threads busy-wait ("spin") between parallel regions and default to one
per core. When other processes already keep the cores busy, those spinning threads
fight them and each other: `cosearch demo` went from ~0.2 s to 5-15 s per step on two
busy cores. So, unless the user chose (``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY``), the
CLI asks OpenMP to sleep instead of spin and uses only the cores the load average
leaves free. Both are environment variables read when torch loads, so
:func:`configure_cpu_threads` must run before ``import torch``; child processes (Ray
workers) inherit them.
"""
from __future__ import annotations

import os
from typing import MutableMapping


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def threads_for_load(cores: int, load: float) -> int:
    """Threads to use on ``cores`` cores when ``load`` runnable processes already compete."""
    return max(1, min(cores, cores - round(load)))


def configure_cpu_threads(environ: MutableMapping[str, str] = os.environ) -> int | None:
    """Set OpenMP's wait policy and thread count for this process and its children.

    Returns the thread count chosen, or None when the machine has idle cores for torch's
    default (one per core) or the user set ``OMP_NUM_THREADS`` (which always wins).
    """
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if environ.get("OMP_NUM_THREADS"):
        return None
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows): keep torch's default
        return None
    cores = usable_cores()
    if cores < (os.cpu_count() or cores):
        return None  # a cpuset (container): the host-wide load average says nothing about our cores
    n = threads_for_load(cores, load)
    if n >= cores:
        return None
    environ["OMP_NUM_THREADS"] = str(n)
    return n
