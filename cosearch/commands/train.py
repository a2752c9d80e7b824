"""``cosearch train --space S --task T --data D --out RUN [--arch largest|smallest|FILE] [--steps N]
[--teacher RUN] [--workers N] [--gpu] [--seed N]``."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict


def _stages(text: str):
    if text.lower() in ("none", "off", "all"):
        return None
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give two fractions F1,F2 (e.g. 0.2,0.5) or 'off'") from None
    return (a, b)


def _fraction_or_off(text: str):
    if text.lower() in ("none", "off"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a fraction (e.g. 0.6) or 'off'") from None


def register(sub):
    p = sub.add_parser("train", help="train a supernet (sandwich rule, optional in-place distillation; resumable)",
                       description="Train the mixed-precision supernet of a space. Re-running the same "
                       "command on the same --out resumes from the last checkpoint.")
    p.add_argument("--space", required=True, help="preset name (spaces/NAME.yaml) or a YAML file")
    p.add_argument("--task", required=True, choices=["translation", "lm"])
    p.add_argument("--data", default=None, help="translation: folder with {split}.SRC/{split}.TGT (plain "
                   "or .gz); lm: a text file or folder (default: the Python standard library's source)")
    p.add_argument("--out", required=True, help="run folder (created; an existing run is resumed)")
    p.add_argument("--arch", default=None, metavar="largest|smallest|FILE.json",
                   help="train only this sub-network from scratch, as a standalone model with the same "
                   "recipe (default: train the supernet)")
    p.add_argument("--teacher", default=None, metavar="RUN",
                   help="with --arch: distil the largest sub-network of this trained run into the arch "
                   "(weight --distill), the distilled-standalone control of `cosearch fidelity`")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--workers", type=int, default=None,
                   help="data-parallel Ray Train workers (default: train in this process, no Ray)")
    p.add_argument("--gpu", action="store_true", help="train on CUDA (bf16 autocast)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="checkpoint and stop after this many seconds of this call (re-run the same "
                   "command to go on); in-process training only")
    g = p.add_argument_group("hyper-parameters")
    g.add_argument("--max-tokens", type=int, default=4096, help="target tokens per batch and worker")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5%% of --steps)")
    g.add_argument("--schedule", choices=["cosine", "inverse_sqrt"], default="cosine")
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--clip-norm", type=float, default=1.0)
    g.add_argument("--n-random", type=int, default=2, help="random sub-networks per step (besides "
                   "the largest and the smallest)")
    g.add_argument("--distill", type=float, default=None, help="weight of the KL to the largest in "
                   "the other sub-networks' loss (default 0: it slowed the supernet and ranked worse at "
                   "short budgets; with --teacher: 0.5; an existing run resumes with its own)")
    g.add_argument("--sample-pool", type=int, default=1, metavar="K",
                   help="worst-of-K sampling: each random sub-network is the one of K candidates of about "
                   "its weight size with the highest loss on the batch (default 1: uniform)")
    g.add_argument("--deep-random", type=int, default=None, metavar="N",
                   help="of the --n-random random sub-networks, N are drawn at every stack's most layers "
                   "(random widths and bits; default 1, as it ranked sub-networks better on every task measured; "
                   "0 with --n-random under 2, --sample-pool > 1 or an --arch; an existing run resumes with its own)")
    g.add_argument("--shallow-random", type=int, default=None, metavar="N",
                   help="of the random sub-networks after the deep ones, N are drawn at every stack's fewest "
                   "layers (random widths and bits; default 0; with N > 0 --deep-random defaults to 0; an "
                   "existing run resumes with its own)")
    g.add_argument("--router-balance", type=float, default=0.0, metavar="W",
                   help="weight of the term keeping MoS mixtures arch-dependent (mutual information of "
                   "arch and expert; default 0: off)")
    g.add_argument("--bit-stages", type=_stages, default=(0.2, 0.5), metavar="F1,F2",
                   help="fractions of the steps at which >=3-bit, then all bit-widths are enabled "
                   "(default 0.2,0.5; 'off' enables all at once)")
    g.add_argument("--ema-start", type=_fraction_or_off, default=None, metavar="F",
                   help="average the weights (EMA) from this fraction of the steps on, e.g. 0.6; eval "
                   "and export use the average (default off: it lagged the raw weights in short runs)")
    g.add_argument("--ema-decay", type=float, default=0.99, help="the average's decay per step (default 0.99)")
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--ckpt-every", type=int, default=500)
    g.add_argument("--max-len", type=int, default=None, help="longest sentence / lm block (default: "
                   "the space's max_positions)")
    g.add_argument("--src", default="en", help="translation source language suffix")
    g.add_argument("--tgt", default="de", help="translation target language suffix")
    g.add_argument("--tokenizer", choices=["unigram", "bpe"], default="unigram",
                   help="lm: sentencepiece unigram (default) or bpe (byte fallback: every byte has a "
                   "token; for code and large corpora)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from ..errors import UserError
    if args.time_limit is not None and not args.time_limit > 0:
        raise UserError(f"--time-limit {args.time_limit:g}: give a number of seconds > 0")
    deadline = None if args.time_limit is None else time.time() + args.time_limit
    # torch (and Ray, for --workers) are imported only when the command runs
    if args.workers is None:
        from ..training.train import train
    else:
        from functools import partial

        from ..training.ray_train import train_distributed
        train = partial(train_distributed, workers=args.workers)

    space, arch = args.space, None
    if args.arch is not None:
        from ..training.evaluate import resolve_arch
        from ..space import SearchSpace
        space = SearchSpace.load(args.space)
        arch = resolve_arch(space, args.arch)
    summary = train(space, args.task, args.data, args.out, steps=args.steps,
                    gpu=args.gpu, seed=args.seed, progress=not args.no_progress,
                    max_tokens=args.max_tokens, lr=args.lr, warmup=args.warmup, schedule=args.schedule,
                    label_smoothing=args.label_smoothing, weight_decay=args.weight_decay,
                    clip_norm=args.clip_norm, n_random=args.n_random, distill=args.distill,
                    bit_stages=args.bit_stages, ema_start=args.ema_start, ema_decay=args.ema_decay,
                    log_every=args.log_every, ckpt_every=args.ckpt_every,
                    max_len=args.max_len, src=args.src, tgt=args.tgt, tokenizer=args.tokenizer,
                    arch=arch, deadline=deadline, sample_pool=args.sample_pool,
                    router_balance=args.router_balance, deep_random=args.deep_random,
                    shallow_random=args.shallow_random, teacher=args.teacher)
    report(summary, args.json)
    return 0


def report(summary, as_json: bool) -> None:
    """Print a training summary (one line, or JSON)."""
    if as_json:
        print(json.dumps(asdict(summary), indent=2))
    else:
        losses = ", ".join(f"{k} {v:.3f}" for k, v in sorted(summary.losses.items()))
        print(f"trained {summary.run_dir} to step {summary.step}/{summary.steps} "
              f"({summary.steps_per_s:.2f} steps/s, {summary.tokens_per_s:.0f} tokens/s); loss: {losses}")
        if not summary.finished:
            print("stopped at the time limit with a checkpoint; re-run the same command to go on")
