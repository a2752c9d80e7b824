"""Training speed of the real training loop on this machine's CPU: ``tiny_lm`` on the
embedded default corpus (the standard library's source), in-process, sandwich of 4.

    python benchmarks/train_cpu.py --out benchmarks/results/train_cpu.json

Records steps/s and target tokens/s (each token is trained by all 4 sandwich members),
the machine and its load average (shared machines skew the numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--space", default="tiny_lm")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--corpus-bytes", type=int, default=300_000, help="cap on the default corpus")
    ap.add_argument("--deep-random", type=int, default=None, help="random members at every stack's most layers "
                    "(default: train's, recorded as resolved)")
    args = ap.parse_args(argv)

    import torch

    from cosearch.data import corpus
    from cosearch.training.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "corpus.txt"
        text.write_text(corpus.default_corpus(args.corpus_bytes))
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        s = train(args.space, "lm", text, Path(tmp) / "run", steps=args.steps, max_tokens=args.max_tokens,
                  log_every=max(1, args.steps // 4), ckpt_every=args.steps, progress=False,
                  deep_random=args.deep_random)
        wall = time.perf_counter() - t0
        deep_random = json.loads((Path(tmp) / "run" / "config.json").read_text())["train"]["deep_random"]
    res = {"benchmark": "train_cpu", "space": args.space, "steps": args.steps, "max_tokens": args.max_tokens,
           "members_per_step": 4, "deep_random": deep_random, "steps_per_s": s.steps_per_s,
           "target_tokens_per_s": s.tokens_per_s,
           "subnet_tokens_per_s": s.tokens_per_s * 4, "wall_s_with_setup": wall, "final_losses": s.losses,
           "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                       "threads": torch.get_num_threads(), "platform": platform.platform(),
                       "loadavg_before": load_before, "loadavg_after": os.getloadavg()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
