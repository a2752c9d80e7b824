"""How unequal the data-parallel ranks' batches are (issue 12: a cause of the Ray scaling gap?).

Each step every rank trains on its own shard's next batch and then waits for the others
(DDP all-reduce). If step time followed batch size, a step would cost the larger of the
ranks' batches. For ``--steps`` steps of the real Multi30k batcher (``--max-tokens`` target
tokens, sharded as `cosearch train --workers N` shards it), this reports per world size the
mean of the largest rank's batch over the mean batch, in target tokens and in padded
elements (source + target, what the GPU computes on). CPU only, no training.

    python3 benchmarks/rank_batch_balance.py --data ../shared/data/multi30k --out benchmarks/results/rank_batch_balance.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def balance(td, world: int, steps: int, max_tokens: int, seed: int) -> dict:
    shards = [td.batches("train", max_tokens=max_tokens, seed=seed, num_shards=world, shard_index=r)
              for r in range(world)]
    tokens, padded = np.zeros((steps, world)), np.zeros((steps, world))
    for s in range(steps):
        for r, it in enumerate(shards):
            b = next(it)
            tokens[s, r] = int(b["ntokens"])
            padded[s, r] = b["src"].numel() + b["tgt_in"].numel()
    return {"world": world, "steps": steps, "mean_target_tokens": float(tokens.mean()),
            "target_tokens_cv": float(tokens.std() / tokens.mean()),
            "max_over_mean_target_tokens": float(tokens.max(1).mean() / tokens.mean()),
            "max_over_mean_padded": float(padded.max(1).mean() / padded.mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="Multi30k folder")
    ap.add_argument("--out", required=True, help="result JSON")
    ap.add_argument("--max-tokens", type=int, default=32768)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from cosearch.data.tasks import build_task_data
    from cosearch.space import SearchSpace
    space = SearchSpace.load("multi30k")
    with tempfile.TemporaryDirectory() as cache:
        td = build_task_data("translation", args.data, vocab_size=space.vocab_size, workdir=cache,
                             src="en", tgt="de", max_len=space.spec.max_positions)
        res = {"benchmark": "rank_batch_balance", "machine": platform.machine(), "python": platform.python_version(),
               "max_tokens": args.max_tokens, "seed": args.seed,
               "worlds": [balance(td, w, args.steps, args.max_tokens, args.seed) for w in args.worlds]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
