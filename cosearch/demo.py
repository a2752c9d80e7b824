"""``cosearch demo``: the whole tour on a laptop, offline, in minutes.

Trains a small mixed-precision language-model supernet on the embedded default
corpus (the Python standard library's own source), co-searches it under a latency bound
on a ZCU102 FPGA, draws the Pareto front, exports the best sub-network under the bound
and generates a sample with it. Every step is the public API the CLI also uses, and
every step resumes when the demo is run again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_text, check_writable_dir
from .errors import UserError
from .inputs import check_number
from .outdirs import check_out, lock_out, mark


@dataclass(frozen=True)
class DemoSettings:
    out: Path = Path("cosearch_demo")
    space: str = "tiny_lm"
    hw: str = "zcu102"
    steps: int = 1200
    #: tokens per training batch (8 blocks of 128)
    max_tokens: int = 1024
    #: latency bound (ms) for generating 30 tokens on the FPGA
    latency_max: float = 1.0  # about the median sub-network on the cost model of 2026-11-27
    trials: int = 300
    seed: int = 0
    corpus_bytes: int = 600_000


#: What a demo folder holds (one from before folders had markers is recognised by it).
DEMO_FILES = {"corpus", "run", "search", "export", "sample.txt"}


def is_demo_folder(folder: Path) -> bool:
    return folder.is_dir() and {p.name for p in folder.iterdir() if not p.name.startswith(".")} <= DEMO_FILES


def check_settings(s: DemoSettings) -> None:
    """Every setting, the search's included, checked before the first training step:
    numbers in range and a latency bound some design can meet (``UserError`` otherwise)."""
    from .search import SearchConfig
    from .search.constraints import Bounds, check_reachable
    from .search.objectives import CostModel
    from .space import SearchSpace

    for flag, value, low in (("--steps", s.steps, 1), ("--trials", s.trials, 1), ("max_tokens", s.max_tokens, 2),
                             ("corpus_bytes", s.corpus_bytes, 1000)):
        check_number(flag, value, low=low, integer=True)
    check_number("--seed", s.seed, low=0, integer=True)
    check_number("--latency-max", s.latency_max, low=0, low_open=True)
    SearchConfig(trials=s.trials, population=30, seed=s.seed, latency_max=s.latency_max).check()
    space = SearchSpace.load(s.space)
    if s.trials > space.cardinality():
        raise UserError(f"--trials {s.trials} exceeds the {space.cardinality()} sub-networks of {s.space}")
    check_reachable(space, CostModel(space, s.hw, "decode"), Bounds(s.latency_max), {},
                    ("quality", "latency", "size"), seed=s.seed)


def run_demo(s: DemoSettings = DemoSettings(), progress: bool = True) -> dict:
    """Run every stage; returns the paths of the results."""
    check_settings(s)
    out = check_out(s.out, "demo", legacy=is_demo_folder)
    check_writable_dir(out)  # a read-only --out fails here, before any work
    with lock_out(out):
        mark(out, "demo")
        return _run(s, out, progress)


def _run(s: DemoSettings, out: Path, progress: bool) -> dict:
    from .data import default_corpus
    from .export import export
    from .deploy.generate import generate_text
    from .search import search
    from .training.train import train

    t0 = time.perf_counter()
    say = print if progress else (lambda *a, **k: None)  # stage lines; the summary always prints

    # 1. the embedded corpus, written once so the run folder can name its data
    corpus = out / "corpus" / "stdlib.txt"
    if not corpus.exists():
        atomic_write_text(corpus, default_corpus(max_bytes=s.corpus_bytes))
    say(f"[1/5] training a {s.space} supernet on {corpus} ({corpus.stat().st_size / 1e3:.0f} kB of "
        f"Python source), {s.steps} steps")
    run = out / "run"
    summary = train(s.space, "lm", corpus, run, steps=s.steps, seed=s.seed, progress=progress,
                    max_tokens=s.max_tokens, n_random=1, ckpt_every=50, log_every=10)

    say(f"[2/5] co-searching sub-networks and bit-widths on {s.hw}: latency <= {s.latency_max} ms "
        f"for 30 generated tokens, {s.trials} trials (NSGA-II)")
    res = search(run, s.hw, out=out / "search", objectives="quality,latency,size",
                 latency_max=s.latency_max, trials=s.trials, sampler="nsga2", seed=s.seed,
                 max_batches=4, population=30, progress=progress)
    if not res.pareto:
        raise UserError(f"no feasible sub-network met latency <= {s.latency_max} ms; raise the bound")

    say("[3/5] Pareto front plotted")
    say("[4/5] exporting the best-quality sub-network under the bound")
    exp_dir = out / "export"
    export(exp_dir, search=out / "search", run=run, pick="best-quality", latency_max=s.latency_max, force=True)

    say("[5/5] generating with the exported model")
    sample = generate_text(exp_dir, prompt="def ", max_new_tokens=80, temperature=0.7, seed=s.seed)
    atomic_write_text(out / "sample.txt", "def " + sample + "\n")

    files = {
        "run": run, "metrics": run / "metrics.jsonl", "search": out / "search",
        "trials": out / "search" / "trials.csv", "pareto": out / "search" / "pareto.csv",
        "plots": sorted(p for p in (out / "search").glob("*.png")),
        "export": exp_dir, "sample": out / "sample.txt",
    }
    best = min(res.pareto, key=lambda r: r.get("loss", float("inf")))
    if progress:
        print("")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    losses = ", ".join(f"{k} {v:.3f}" for k, v in summary.losses.items())
    print(f"  supernet run        {run}  (last losses: {losses})")
    print(f"  search ({res.trials} trials, {res.feasible} feasible, {len(res.pareto)} on the front)  {out / 'search'}")
    for p in files["plots"]:
        print(f"  plot                {p}")
    print(f"  exported model      {exp_dir}  (loss {best.get('loss', float('nan')):.3f}, "
          f"latency {best.get('latency_ms', float('nan')):.2f} ms)")
    print(f"  sample              {out / 'sample.txt'}")
    say("  ---- sample ----")
    say("def " + sample)
    return files
