"""How many graphs a fully compiled sandwich compiles (issue 27, item 2), on the CPU.

Trains ``--steps`` sandwich steps (``train.sandwich_step``, the training loop's step) of each
space with every member through ``cosearch.model.bucketed_members.BucketedForward``, the
forward ``COSEARCH_COMPILE_MEMBERS=all`` uses, on random token batches of varying shapes,
with the bit-width stages of a ``--steps`` run. Records the graphs compiled after every step
against the plan's bound (``buckets.block_shapes``), and the step after which no new graph
came. ``aot_eager`` traces with Dynamo and AOT autograd as inductor would (same graphs,
same guards) but runs the traced ops without generating code, so it needs no compiler.

    python benchmarks/bucket_graphs.py --out benchmarks/results/bucket_graphs_cpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cosearch.model.bucketed_members import BucketedForward  # noqa: E402
from cosearch.model.buckets import BucketPlan, block_shapes  # noqa: E402
from cosearch.model.fused import compile_counts  # noqa: E402
from cosearch.model.supernet import Supernet  # noqa: E402
from cosearch.space import SearchSpace  # noqa: E402
from cosearch.training.sandwich import sandwich  # noqa: E402
from cosearch.training.train import TrainConfig, make_optimizer, sandwich_step  # noqa: E402


def run_space(name: str, steps: int, seed: int, backend: str) -> dict:
    space = SearchSpace.load(name)
    torch.manual_seed(seed)
    net = Supernet(space).train()
    plan = BucketPlan.from_space(space)
    fwd = BucketedForward(net, plan, backend=backend)
    cfg = TrainConfig(steps=steps).resolved(space)
    opt = make_optimizer(net, cfg)
    g = torch.Generator().manual_seed(seed)
    before = compile_counts().get("bucketed_members", 0)
    per_step, t0 = [], time.perf_counter()
    for step in range(1, steps + 1):
        b, t = 2 + step % 3, 5 + (7 * step) % 19  # other batch shapes at every step
        src = torch.randint(1, space.vocab_size, (b, t), generator=g)
        tgt = torch.randint(1, space.vocab_size, (b, t + 1 + step % 4), generator=g)
        inputs, target = ((src, tgt[:, :-1]), tgt[:, 1:]) if space.is_encdec else ((tgt[:, :-1],), tgt[:, 1:])
        members = sandwich(space, seed, step, cfg.steps, cfg.n_random, cfg.bit_stages, cfg.deep_random,
                           cfg.shallow_random)
        sandwich_step(net, net, opt, members, inputs, target, cfg, net.pad_id, space.vocab_size, forward=fwd)
        per_step.append(compile_counts().get("bucketed_members", 0) - before)
        print(f"{name} step {step}: {per_step[-1]} graphs", flush=True)
    last_new = max((i + 1 for i in range(steps) if per_step[i] > (per_step[i - 1] if i else 0)), default=0)
    return {"space": name, "steps": steps, "n_random": cfg.n_random, "bit_stages": cfg.bit_stages,
            "plan": {"ffn": plan.ffn, "heads": plan.heads}, "bound": len(block_shapes(space, plan)),
            "graphs_after_step": per_step, "graphs": per_step[-1], "last_step_with_a_new_graph": last_new,
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spaces", nargs="+", default=["tiny_lm", "multi30k"])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="aot_eager")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch._dynamo.reset()
    res = {"benchmark": "bucket_graphs", "backend": a.backend, "torch": torch.__version__,
           "python": platform.python_version(), "machine": platform.machine(), "threads": torch.get_num_threads(),
           "runs": [run_space(name, a.steps, a.seed, a.backend) for name in a.spaces]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    for r in res["runs"]:
        print(f"{r['space']}: {r['graphs']} graphs in {r['steps']} steps (bound {r['bound']}), "
              f"last new graph at step {r['last_step_with_a_new_graph']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
