"""Where quality is measured: in this process, in worker processes on this machine (one
supernet each, e.g. several on one GPU), or in Ray actors (one supernet each).

Only quality runs remotely: costs are a vectorised numpy call in the driver, and Optuna's
ask/tell stays in the driver too, so constraints and user attributes reach the study
intact (Ray Tune's OptunaSearch would drop them). Ray is imported only when asked for.
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import Callable, Sequence

from ..space import Arch
from .quality import call_source


class Done:
    """A handle whose result is already there."""

    __slots__ = ("result",)

    def __init__(self, result):
        self.result = result


class LocalPool:
    """Measures synchronously; ``submit`` returns a handle that is already done. Without a
    factory it measures nothing (a search without a quality objective)."""

    def __init__(self, factory: Callable | None):
        self.source = factory() if factory is not None else None
        self.workers = 1
        self.repeats = getattr(self.source, "repeats", 1)

    def submit(self, archs: Sequence[Arch], repeat: int = 0) -> Done:
        return Done(call_source(self.source, list(archs), repeat) if archs else {})

    def wait(self, handles: list) -> tuple[list, list]:
        """(done handles, their results)."""
        return handles[:1], [h.result for h in handles[:1]]

    def close(self):
        pass


def _build(factory, counter, barrier, threads: int):
    """Run once in each worker process: take the next worker index, then build the source
    (``factory.for_worker(index)`` when it has one: e.g. the GPU of that index)."""
    import os
    global _SOURCE, _BARRIER
    _BARRIER = barrier
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    # K processes on C cores: C/K threads each (torch would take one per core in each)
    os.environ["OMP_NUM_THREADS"] = str(min(threads, int(os.environ.get("OMP_NUM_THREADS") or threads)))
    try:
        _SOURCE = (factory.for_worker(index) if hasattr(factory, "for_worker") else factory)()
    except Exception as e:  # noqa: BLE001 - kept and raised by the first call, in the driver
        _SOURCE = e


def _ready(timeout: float) -> int:
    """Run in a worker: its source's number of measurements once it is built (or the error
    that stopped it). The barrier holds each probe until all workers have one, so K probes
    meet K processes."""
    if isinstance(_SOURCE, Exception):
        _BARRIER.abort()
        raise _SOURCE
    _BARRIER.wait(timeout)
    return getattr(_SOURCE, "repeats", 1)


def _measure(archs, repeat: int = 0):
    if isinstance(_SOURCE, Exception):
        raise _SOURCE
    return call_source(_SOURCE, list(archs), repeat)


_SOURCE: object = None
_BARRIER = None


class ProcessPool:
    """``workers`` processes (spawned: CUDA needs a fresh process), started once, each
    building its quality source once; batches go to whichever is free. Several processes
    keep one GPU busy where a single one would wait on Python between small kernels; with
    several GPUs, worker i uses GPU i mod their number (see ``SupernetSpec.for_worker``)."""

    def __init__(self, factory: Callable, workers: int, start_timeout: float = 1800.0):
        import multiprocessing as mp
        import threading
        from concurrent.futures import ProcessPoolExecutor

        from ..threads import usable_cores
        ctx = mp.get_context("spawn")
        threads = max(1, usable_cores() // workers)
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_build,
                                        initargs=(factory, ctx.Value("i", 0), ctx.Barrier(workers), threads))
        self.workers = workers
        # start every worker and build its source now: errors (and the load time) come
        # before any trial, and no batch waits for a process to start
        probes = [self.pool.submit(_ready, start_timeout) for _ in range(workers)]
        errors = [f.exception() for f in probes]
        real = [e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)]
        if real or any(errors):
            self.close()
            raise (real or [e for e in errors if e is not None])[0]
        self.repeats = min(f.result() for f in probes)

    def submit(self, archs: Sequence[Arch], repeat: int = 0):
        if not archs:  # all cached or predicted: no need to queue behind busy workers
            done: Future = Future()
            done.set_result({})
            return done
        return self.pool.submit(_measure, list(archs), repeat)

    def wait(self, handles: list) -> tuple[list, list]:
        from concurrent.futures import FIRST_COMPLETED, wait
        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        done = [h for h in handles if h in done]
        return done, [h.result() for h in done]

    def close(self):
        self.pool.shutdown(cancel_futures=True)


class _Actor:
    def __init__(self, factory):
        self.source = factory()

    def repeats(self) -> int:
        return getattr(self.source, "repeats", 1)

    def measure(self, archs, repeat: int = 0):
        return call_source(self.source, list(archs), repeat)


class RayPool:
    """``workers`` Ray actors, each building its own quality source once (e.g. loading the
    supernet); batches go to the least busy actor."""

    def __init__(self, factory: Callable, workers: int):
        import ray  # lazily: ray takes seconds to import and start
        self.ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        actor = ray.remote(num_cpus=1)(_Actor)
        self.actors = [actor.remote(factory) for _ in range(workers)]
        self.workers = workers
        self.repeats = min(ray.get([a.repeats.remote() for a in self.actors]))
        self._busy: dict = {}
        self._n = 0

    def submit(self, archs: Sequence[Arch], repeat: int = 0):
        if not archs:
            return self.ray.put({})
        counts = {i: 0 for i in range(len(self.actors))}
        for i in self._busy.values():
            counts[i] += 1
        i = min(counts, key=counts.get)
        ref = self.actors[i].measure.remote(list(archs), repeat)
        self._busy[ref] = i
        return ref

    def wait(self, handles: list) -> tuple[list, list]:
        done, _ = self.ray.wait(handles, num_returns=1)
        for r in done:
            self._busy.pop(r, None)
        return done, self.ray.get(done)

    def close(self):
        for a in self.actors:
            self.ray.kill(a)
        if self._started:
            self.ray.shutdown()


class SplitSource:
    """A quality source that splits each call over a pool's workers and waits for all:
    one source object (e.g. shared by many searches, behind one cache) measuring in parallel."""

    def __init__(self, pool, name: str = "pool"):
        self.pool, self.name = pool, name

    def __call__(self, archs: Sequence[Arch]) -> dict:
        import numpy as np
        archs = list(archs)
        if not archs:
            return {"loss": np.zeros(0)}
        n = min(self.pool.workers, len(archs))
        parts = [archs[i::n] for i in range(n)]
        handles = [self.pool.submit(p) for p in parts]
        results = []
        for h in handles:
            _, got = self.pool.wait([h])
            results.append(got[0])
        out = {k: np.empty(len(archs)) for k in results[0]}
        for i, r in enumerate(results):
            for k, v in r.items():
                out[k][i::n] = v
        return out
