"""Everything one co-search is told: a plain dataclass, checked once before any trial."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..inputs import check_number
from ..training.finetune_settings import MAX_STEPS as MAX_FINETUNE_STEPS
from .evolution import EvolutionSettings

SAMPLERS = ("nsga2", "tpe", "random", "evolution")
#: measurements of a front candidate by default (``search_hv.py``, 3 seeds: with noisy
#: measurements plain NSGA-II fell below random search at 1,000 trials; raced up to 5 times its
#: mean hypervolume was above random's, by less than 2 std at sigma 0.15)
DEFAULT_REPEATS = 5


@dataclass
class SearchConfig:
    """A co-search (see :func:`cosearch.search.search`).

    What is searched: ``run_dir`` (a trained supernet; quality measured with inherited
    weights) or ``space`` plus ``quality`` (``"synthetic"`` or a quality source object).
    ``trials`` is the study's total of finished trials, each a distinct design.
    """

    run_dir: str | Path | None = None
    hw: Any = "zcu102"
    out: str | Path | None = None
    objectives: Any = "quality,latency,size"
    cosearch_hw: bool = False
    latency_max: float | None = None
    area_max: float | None = None
    scenario: str = "decode"
    space: Any = None
    quality: Any = None
    # the search
    trials: int = 100
    sampler: str = "nsga2"
    population: int = 50
    batch: int | None = None
    seed: int | None = 0
    storage: str | None = None
    study: str | None = None
    evolution: EvolutionSettings | None = None
    time_limit_s: float | None = None   # stop proposing after this long (benchmarks); None: no limit
    #: seconds between heartbeats of trials in flight (Optuna RDB heartbeats; a trial silent for
    #: twice that is failed and queued again). None: on for server databases, off for SQLite
    heartbeat_s: int | None = None
    # measuring quality on the supernet
    workers: int = 1
    gpu: bool = False
    split: str = "valid"
    max_batches: int = 20
    max_tokens: int = 4096
    bleu_sentences: int = 200
    #: steps of each measured arch's own training from the supernet's weights before it is
    #: measured (``training.finetune``; 0: the inherited weights as they are)
    finetune_steps: int = 0
    # noise-aware measurement (``search.repeats``): front candidates measured up to this many
    # times in all, on fresh batches; a candidate: a point `repeat_margin` standard errors
    # optimistic. None: DEFAULT_REPEATS where the quality source has data for them, else fewer
    repeats: int | None = None
    repeat_margin: float = 2.0
    # the quality predictor (HAT-style screening)
    predictor: bool = False
    predictor_warmup: int = 1000    # measured archs before the predictor screens candidates
    predictor_refit: int = 100      # refit after this many new measurements
    # output
    progress: bool = True
    write: bool = True
    plots: bool = True

    def check(self) -> None:
        """One-line UserErrors for settings that cannot work, before anything runs."""
        if self.sampler not in SAMPLERS:
            raise UserError(f"--sampler {self.sampler!r}: choose from {', '.join(SAMPLERS)}")
        for name in ("trials", "workers", "max_batches", "max_tokens", "bleu_sentences", "repeats"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: give a number >= 1")
        check_number("--finetune-steps", self.finetune_steps, low=0, high=MAX_FINETUNE_STEPS, integer=True)
        if self.finetune_steps and (self.quality is not None or self.run_dir is None):
            raise UserError("--finetune-steps trains archs of a supernet: give it with --run RUN, not with "
                            "--synthetic-quality")
        if self.finetune_steps and isinstance(self.objectives, str) and not {"quality", "bleu"} & {
                o.strip() for o in self.objectives.split(",")}:
            raise UserError(f"--finetune-steps changes how quality is measured, and --objectives {self.objectives} "
                            "measures none; add quality (or bleu) to --objectives, or drop --finetune-steps")
        if not 0 <= self.repeat_margin < float("inf"):  # nan fails every comparison
            raise UserError(f"--repeat-margin {self.repeat_margin}: give a finite number >= 0")
        if self.population < 2:
            raise UserError("--population must be >= 2")
        if self.batch is not None and self.batch < 1:
            raise UserError(f"--batch {self.batch}: give a number >= 1")
        if self.predictor and self.predictor_warmup < 3:
            raise UserError("--predictor-warmup must be >= 3 (the predictor needs measured archs to fit)")
        if self.heartbeat_s is not None and (int(self.heartbeat_s) != self.heartbeat_s or self.heartbeat_s < 1):
            raise UserError(f"--heartbeat {self.heartbeat_s}: give a whole number of seconds >= 1")
        if self.heartbeat_s is not None and self.storage is not None and (
                self.storage == "memory" or self.storage.startswith("journal:")):
            raise UserError(f"--heartbeat needs a database --storage (sqlite:///PATH or a server URL); "
                            f"{self.storage.split(':')[0]} storage has no heartbeats: leave --heartbeat out")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise UserError("time limit must be > 0 seconds")


def make_config(config: SearchConfig | None, **options) -> SearchConfig:
    """``config`` with ``options`` replaced; an unknown option name is a TypeError."""
    names = {f.name for f in fields(SearchConfig)}
    bad = sorted(set(options) - names)
    if bad:
        raise TypeError(f"search() got unknown option(s) {bad}")
    from dataclasses import replace
    return replace(config or SearchConfig(), **options)
