"""``cosearch retrain SEARCH (--trial N | --pick best-quality) --out RUN [--steps N] [--gpu]``."""
from __future__ import annotations


def register(sub):
    p = sub.add_parser("retrain", help="train a searched sub-network from scratch (standalone)",
                       description="Train the arch a search chose from scratch as a standalone model, with "
                       "the recipe of the supernet run the search measured (HAT's final step). Re-running "
                       "the same command resumes. Evaluate it with `cosearch eval --run RUN`.")
    p.add_argument("search", help="a search folder (cosearch search --out)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="the search trial number N")
    which.add_argument("--pick", choices=["best-quality"], help="the best-quality trial (under --latency-max)")
    p.add_argument("--latency-max", type=float, metavar="MS", help="with --pick: latency bound in ms")
    p.add_argument("--out", required=True, help="run folder of the standalone model (created or resumed)")
    p.add_argument("--run", help="the supernet run whose recipe is reused (default: the one the search names)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the supernet run's)")
    p.add_argument("--seed", type=int, default=None, help="default: the supernet run's seed")
    p.add_argument("--gpu", action="store_true", help="train on CUDA (bf16 autocast)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import UserError
    from ..deploy.retrain import retrain
    from .train import report

    if args.latency_max is not None and args.pick is None:
        raise UserError("--latency-max goes with --pick best-quality")
    summary = retrain(args.search, args.out, trial=args.trial, pick=args.pick, latency_max=args.latency_max,
                      run=args.run, gpu=args.gpu, seed=args.seed, progress=not args.no_progress,
                      steps=args.steps)
    report(summary, args.json)
    return 0
