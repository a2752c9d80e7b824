"""``cosearch search``: Optuna co-search of a trained supernet and an accelerator."""
from __future__ import annotations


def register(sub):
    p = sub.add_parser("search", help="multi-objective co-search of sub-networks (and accelerator knobs)",
                       description="Search a trained supernet with the hardware cost engine; results, "
                       "the Pareto front and plots go to --out. Re-running the same command resumes; "
                       "--trials is the study's total.")
    src = p.add_argument_group("what is searched")
    src.add_argument("--run", help="run folder of `cosearch train` (quality = validation loss with inherited weights)")
    src.add_argument("--space", help="search space (preset or YAML) when no --run is given (needs --synthetic-quality)")
    src.add_argument("--synthetic-quality", action="store_true",
                     help="use a deterministic synthetic quality instead of a supernet (tests, benchmarks)")
    src.add_argument("--hw", required=True, help="accelerator preset (hw_models/NAME.yaml) or YAML path")
    src.add_argument("--cosearch-hw", action="store_true", help="also search the accelerator's codesign knobs")
    src.add_argument("--scenario", default="decode", choices=["decode", "prefill"],
                     help="how latency is measured (default: decode, token by token as HAT)")
    obj = p.add_argument_group("objectives and constraints")
    obj.add_argument("--objectives", default="quality,latency,size",
                     help="comma list of quality|bleu|latency|energy|size|params|area (default: quality,latency,size)")
    obj.add_argument("--latency-max", type=float, help="latency bound in ms (a constraint)")
    obj.add_argument("--area-max", type=float, help="ASIC area bound in mm^2 (a constraint)")
    obj.add_argument("--predictor", action="store_true",
                     help="screen candidates with a quality predictor; only promising ones are measured")
    obj.add_argument("--predictor-warmup", type=int, default=1000,
                     help="archs measured before the predictor screens candidates (HAT: ~1-2k; default 1000)")
    obj.add_argument("--max-batches", type=int, default=20, help="validation batches per quality measurement")
    obj.add_argument("--finetune-steps", type=int, default=0, metavar="K",
                     help="train each measured arch K steps of its own from the supernet's weights before "
                     "measuring it (as `cosearch fidelity --finetune-steps`; check there first that it ranks "
                     "better for your budget): K training steps per measured arch (default 0: the inherited "
                     "weights as they are)")
    obj.add_argument("--bleu-sentences", type=int, default=200,
                     help="BLEU (greedy) on the first N validation sentences (default 200)")
    obj.add_argument("--repeats", type=int,
                     help="noise-aware measurement: a design that could join the front is measured again on "
                     "the next --max-batches batches (--bleu-sentences sentences), up to this many times in "
                     "all while it could still join it; recorded as the mean with its standard error "
                     "(default: up to 5 where the validation split has the data; 1: measure once)")
    obj.add_argument("--repeat-margin", type=float, default=2.0,
                     help="standard errors of optimism when deciding what could join the front (default 2)")
    obj.add_argument("--gpu", action="store_true",
                     help="measure quality on the GPU (--workers processes share it, one supernet each)")
    run = p.add_argument_group("search")
    run.add_argument("--trials", type=int, default=100, help="total trials of the study (default 100)")
    run.add_argument("--sampler", default="nsga2", choices=["nsga2", "tpe", "random", "evolution"])
    run.add_argument("--population", type=int, default=50, help="NSGA-II population (default 50)")
    run.add_argument("--batch", type=int, help="designs proposed and costed together")
    run.add_argument("--storage", help="SQLAlchemy URL, journal:PATH or memory (default: sqlite in --out)")
    run.add_argument("--study", help="study name (default: cosearch)")
    run.add_argument("--heartbeat", type=int, metavar="SECONDS",
                     help="Optuna heartbeat of trials in flight: a trial silent for twice this long (its "
                     "process died, on any machine) is failed and queued again (default: 60 on a server "
                     "database, off for SQLite, where dead processes of this machine are found by pid)")
    run.add_argument("--workers", type=int, default=1,
                     help="quality workers: processes on the GPU with --gpu, else Ray actors (default 1)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", required=True, help="folder for search.json, trials.csv, pareto.csv and plots")
    run.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_search)


def run_search(args):
    import optuna

    from ..errors import UserError
    from ..search import SearchConfig, search
    if args.synthetic_quality and args.run:
        raise UserError("give --run or --synthetic-quality, not both")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar says enough (CLI only)
    cfg = SearchConfig(run_dir=args.run, hw=args.hw, out=args.out, objectives=args.objectives,
                       cosearch_hw=args.cosearch_hw, latency_max=args.latency_max, area_max=args.area_max,
                       trials=args.trials, sampler=args.sampler, storage=args.storage, study=args.study,
                       workers=args.workers, gpu=args.gpu, heartbeat_s=args.heartbeat, seed=args.seed, scenario=args.scenario,
                       space=args.space, quality="synthetic" if args.synthetic_quality else None,
                       predictor=args.predictor, predictor_warmup=args.predictor_warmup, batch=args.batch,
                       population=args.population, max_batches=args.max_batches,
                       bleu_sentences=args.bleu_sentences, progress=not args.no_progress, repeats=args.repeats,
                       repeat_margin=args.repeat_margin, finetune_steps=args.finetune_steps)
    res = search(config=cfg)
    print(f"{res.trials} trials ({res.feasible} feasible, {res.measured} measured now), "
          f"{len(res.pareto)} on the Pareto front -> {res.out}/pareto.csv")
    if res.predictor:
        p = res.predictor
        if p["n"]:
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            print(f"predictor ({p['metric']}) on archs measured after it predicted them: Kendall tau "
                  f"{fmt(p['kendall'])}, Spearman {fmt(p['spearman'])} (n={p['n']})")
        else:
            print(f"predictor: not used ({p['measured']} archs measured, warm-up {p['warmup']})")
    return 0
