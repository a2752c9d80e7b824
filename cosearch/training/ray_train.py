"""``train_distributed(..., workers=N)``: the same training function in N Ray Train workers.

``ray.train.torch.TorchTrainer`` starts N workers and their process group (gloo on the
CPU, NCCL on GPUs); each runs :func:`cosearch.training.train.run_worker` with its rank. Workers
read their own shard of the batches, sample the same sub-networks (from ``(seed,
step)``), and DDP averages the gradients, so all workers hold the same weights. Rank 0
writes checkpoints and metrics into the run folder, which is also what a re-run resumes
from (so on several machines the run folder must be on a shared file system). Every
worker writes ``RUN/workers/rankR.json`` with its summary, including a hash of its final
weights.

Ray is imported only here, and only when a distributed run starts. The import goes one way:
this module uses ``cosearch.training.train``; the training step knows nothing of Ray.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..atomic import atomic_write_text
from ..model.compiled_members import COMPILE_ENV
from ..errors import UserError
from ..model.fused import PATH_ENV
from .train import DistInfo, RunSummary, run_worker, train

WORKERS_DIR = "workers"


def _worker_loop(config: dict) -> None:
    """Body of each Ray Train worker."""
    import ray.train
    import ray.train.torch

    os.environ.update(config["env"])  # the driver's choice of weight path and compilation
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    dist = DistInfo(rank=rank, world=world, device=ray.train.torch.get_device(),
                    report=lambda metrics: ray.train.report(metrics))
    result = run_worker(config["job"], dist, progress=config["progress"], stop_at=config["stop_at"])
    out = Path(config["job"]["run_dir"]) / WORKERS_DIR / f"rank{rank}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")


def worker_results(run_dir: str | Path) -> list[dict]:
    """The summaries the workers of the last Ray session wrote, by rank."""
    d = Path(run_dir) / WORKERS_DIR
    files = sorted(d.glob("rank*.json"), key=lambda p: int(p.stem[4:])) if d.is_dir() else []
    return [json.loads(p.read_text()) for p in files]


def train_with_ray(job: dict, workers: int, gpu: bool = False, progress: bool = True,
                   stop_at: int | None = None) -> dict:
    """Run the training ``job`` on ``workers`` Ray Train workers; returns rank 0's summary."""
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError:
        raise UserError("--workers needs Ray Train: pip install 'ray[train]' "
                        "(or leave out --workers to train in this process)") from None
    run_dir = Path(job["run_dir"])
    for old in (run_dir / WORKERS_DIR).glob("rank*.json"):
        old.unlink()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"job": job, "progress": progress, "stop_at": stop_at,
                           "env": {k: os.environ[k] for k in (PATH_ENV, COMPILE_ENV) if k in os.environ}},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu),
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        # our run folder, not Ray's checkpoints, is what resumes: a fresh Ray run name each time
        run_config=RunConfig(name=f"train-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6}",
                             storage_path=str(run_dir / "ray")))
    trainer.fit()
    results = worker_results(run_dir)
    if len(results) != workers:
        raise RuntimeError(f"{len(results)} of {workers} Ray workers reported a result in {run_dir / WORKERS_DIR}")
    return results[0]


def train_distributed(space, task: str, data, out, workers: int, gpu: bool = False, **kwargs) -> RunSummary:
    """``cosearch.training.train.train`` on ``workers`` Ray Train workers (DDP; gloo on the CPU, NCCL
    with ``gpu``, one process per GPU); the other arguments are ``train``'s."""
    def runner(job: dict, progress: bool, stop_at: int | None) -> dict:
        return train_with_ray(job, workers=workers, gpu=gpu, progress=progress, stop_at=stop_at)
    return train(space, task, data, out, workers=workers, gpu=gpu, runner=runner, **kwargs)
