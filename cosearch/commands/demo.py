"""``cosearch demo``: train, co-search, plot, export and generate on the embedded corpus."""
from __future__ import annotations

from ..demo import DemoSettings, run_demo


def register(sub):
    d = DemoSettings()
    p = sub.add_parser("demo", help="the whole tour offline in minutes: train, co-search, plot, export, generate")
    p.add_argument("--out", default=str(d.out), help=f"folder for every result (default {d.out})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"supernet training steps (default {d.steps})")
    p.add_argument("--trials", type=int, default=d.trials, help=f"search trials (default {d.trials})")
    p.add_argument("--latency-max", type=float, default=d.latency_max,
                   help=f"latency bound in ms on the ZCU102 (default {d.latency_max})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-progress", action="store_true", help="no progress bars or stage lines")
    p.set_defaults(func=run)


def run(args):
    from ..inputs import path_arg
    run_demo(DemoSettings(out=path_arg(args.out, "--out"), steps=args.steps, trials=args.trials,
                          latency_max=args.latency_max, seed=args.seed), progress=not args.no_progress)
    return 0
