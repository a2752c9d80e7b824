"""``cosearch pareto DIR``: redraw a search's front and plots from its trials.csv."""
from __future__ import annotations


def register(sub):
    p = sub.add_parser("pareto", help="redraw pareto.csv and the plots of a search folder")
    p.add_argument("dir", help="the --out folder of `cosearch search`")
    p.add_argument("--no-html", action="store_true", help="PNG only (skip the 4.7 MB plots.html)")
    p.set_defaults(func=run_pareto)


def run_pareto(args):
    from pathlib import Path

    from ..outdirs import lock_out
    if not Path(args.dir).is_dir():
        return _redraw(args)  # which says what is missing
    with lock_out(args.dir, flag="DIR"):  # not while a search writes it (or another pareto)
        return _redraw(args)


def _redraw(args):
    from ..search.plots import draw
    from ..search.results import PARETO_CSV, load_results, mark_pareto
    df, objs = load_results(args.dir)
    rows = df.to_dict("records")
    for r in rows:
        r["feasible"] = bool(r["feasible"])
    mark_pareto(rows, objs)
    import pandas as pd

    from ..training.rundir import atomic_write_text
    df = pd.DataFrame(rows)
    front = df[df["pareto"]].sort_values(objs[0].name)
    atomic_write_text(f"{args.dir}/{PARETO_CSV}", front.to_csv(index=False))
    files = draw(args.dir, df, objs, html=not args.no_html)
    print(f"{len(front)} Pareto-optimal of {len(df)} trials; wrote {PARETO_CSV}, "
          + ", ".join(f.name for f in files))
    return 0
