"""The co-search loop: Optuna ask/tell (or the evolutionary proposer), costs, quality.

One iteration: propose a batch of designs, cost them all at once (numpy), optionally let
the quality predictor pick the ones worth measuring, measure quality (here, in worker
processes on the GPU, or in Ray actors), and record every trial with its objective values,
constraints (``trial.set_constraint``) and metrics. The trial count is a total over the
study: a re-run of the same command resumes it, and several processes (or machines,
through PostgreSQL) sharing one study stop together at the total, each trial evaluated once.

Every finished trial is a distinct design. The genes of layers an arch does not use are
still Optuna parameters (the samplers need a fixed space), so two trials can decode to the
same arch: such a proposal is told FAIL at once (``duplicate``) and an unseen neighbour of
it is queued instead (``fallback=neighbour``), so it costs nothing and is not counted.
Processes of one machine sharing a file storage propose under a file lock, which also
fails trials left RUNNING by a killed process (``study.tell(n, state=FAIL)``) and queues
their design again (``retry_of``).
(Exception: the evolution sampler records whole batches with ``add_trials``, so several
*processes* running it on one study may overshoot the total by up to one batch each;
Ray workers inside one search do not.)
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import optuna
from optuna.trial import TrialState

from ..errors import UserError
from ..space import SearchSpace
from .config import SAMPLERS, SearchConfig, make_config
from .constraints import Bounds, check_reachable
from .evolution import EvolutionProposer, EvolutionSettings
from .front import pareto_mask, to_minimize
from .objectives import QUALITY_COLUMNS, CostModel, Evaluator, Objective, Outcome, parse_objectives
from .params import Design, ParamSpace, arch_digest, arch_json
from .predictor import QualityPredictor, rank_correlation
from .quality import CachedQuality, MeasureSettings, SupernetSpec, SyntheticQuality
from .storage import describe, open_storage, open_study, storage_url, study_lock

__all__ = ["SAMPLERS", "SearchConfig", "SearchResult", "search"]
CONFIG = "search.json"
log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    out: Path | None
    study: optuna.Study
    trials: int                 # finished trials in the study
    feasible: int
    measured: int               # archs whose quality this call measured
    pareto: list[dict]          # the feasible, measured front (rows as in pareto.csv)
    predictor: dict | None      # held-out rank correlation of predictions with measurements
    reachable: dict
    elapsed_s: float
    files: list[Path] = field(default_factory=list)
    hypervolume: float | None = None
    hypervolume_reference: list[float] | None = None


# --------------------------------------------------------------------------- proposers
@dataclass
class _Proposal:
    design: Design
    params: dict | None = None
    trial: Any = None


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive_count(study: optuna.Study) -> int:
    """Trials that count towards the total: finished or being evaluated (queued ones do not)."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)))


class _OptunaProposer:
    """Optuna's own samplers through ask/tell. A proposal that decodes to a design the
    study already holds is failed at once and replaced by an unseen neighbour of it (one
    gene changed, queued with ``enqueue_trial``): the sampler wanted that region, and a
    queued trial costs no sampling (TPE repeats itself often: on ``multi30k`` 2 of 3 of its
    proposals were known archs, each repeat costing another full ``ask``); trials past
    the total are failed."""

    def __init__(self, study: optuna.Study, pspace: ParamSpace, total: int, lock, seed: int | None,
                 retries: int = 4):
        self.study, self.pspace, self.total, self.lock = study, pspace, total, lock
        self.rng = np.random.default_rng(seed)
        self.retries = retries
        self._keys: dict[int, str] = {}  # trial number -> design key of live trials

    def pending(self) -> int:
        return 0  # asked trials are RUNNING in the storage and counted there

    def _taken(self) -> tuple[set, int]:
        """Design keys of finished and running trials, and how many there are."""
        live = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        for t in live:
            if t.number not in self._keys:
                k = t.user_attrs.get("key")
                if k is None and t.state == TrialState.COMPLETE:
                    k = self.pspace.design(t.params).key()
                if k is not None:  # (a trial another machine is still asking has none yet)
                    self._keys[t.number] = k
        return {self._keys[t.number] for t in live if t.number in self._keys}, len(live)

    def ask(self, k: int) -> list[_Proposal]:
        with self.lock():
            _fail_stale(self.study)
            taken, live = self._taken()
            left = self.total - live
            out: list[_Proposal] = []
            for attempt in range(self.retries + 1):
                want = min(k, left) - len(out)
                if want <= 0:
                    break
                if attempt == self.retries:  # the sampler keeps repeating itself: new random designs
                    for _ in range(want):
                        p = self._unseen_random(taken)
                        if p is None:
                            break
                        self.study.enqueue_trial(p, user_attrs={"fallback": "random"})
                queued: set = set()
                asked = [self.study.ask() for _ in range(want)]
                others = None  # live trials besides this round's asks: counted once, when needed
                accepted = 0
                for t in asked:
                    d = self.pspace.suggest(t)
                    key = d.key()
                    if key in taken:
                        t.set_user_attr("duplicate", True)
                        self.study.tell(t, state=TrialState.FAIL)
                        p = self._unseen_neighbour(t.params, taken | queued)
                        if p is not None:
                            queued.add(self.pspace.design(p).key())
                            self.study.enqueue_trial(p, user_attrs={"fallback": "neighbour"})
                        continue
                    if others is None:
                        others = self._live_besides(asked)
                    if others + accepted >= self.total:
                        # another machine took the last slots between our count and our ask
                        t.set_user_attr("over_budget", True)
                        self.study.tell(t, state=TrialState.FAIL)
                        continue
                    accepted += 1
                    taken.add(key)
                    self._keys[t.number] = key
                    for name, v in (("owner", _owner()), ("key", key)):  # digest: set when measured
                        t.set_user_attr(name, v)
                    out.append(_Proposal(d, trial=t))
            return out

    def _live_besides(self, asked: list) -> int:
        """Trials counting towards the total, other than the round ``asked``, counted afresh
        after the asks (once per round): another process may have started some since the
        snapshot, and a queued trial (an anchor, a replacement or a retry) keeps the lower
        number it got when queued, so the order of numbers cannot place it."""
        mine = {t.number for t in asked}
        return sum(1 for x in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                   if x.number not in mine)

    def _unseen_neighbour(self, params: dict, taken: set, tries: int = 50) -> dict | None:
        """``params`` with one gene changed so that the design is one the study lacks
        (genes of absent layers change nothing, so several tries may be needed)."""
        dists = self.pspace.distributions()
        names = [n for n in params if n in dists and len(dists[n].choices) > 1]
        for _ in range(tries if names else 0):
            n = names[self.rng.integers(len(names))]
            others = [c for c in dists[n].choices if c != params[n]]
            p = dict(params, **{n: others[self.rng.integers(len(others))]})
            if self.pspace.design(p).key() not in taken:
                return p
        return None

    def _unseen_random(self, taken: set, tries: int = 200) -> dict | None:
        for _ in range(tries):
            p = self.pspace.random_params(self.rng)
            if self.pspace.design(p).key() not in taken:
                return p
        return None

    def record(self, props: Sequence[_Proposal], outcomes: Sequence[Outcome], attrs: Sequence[dict]):
        for p, o, a in zip(props, outcomes, attrs):
            for k, v in o.constraints.items():
                p.trial.set_constraint(k, v)
            for k, v in a.items():
                p.trial.set_user_attr(k, v)
            self.study.tell(p.trial, o.values)


class _EvolutionProposer:
    def __init__(self, evo: EvolutionProposer):
        self.evo = evo
        self.pending = evo.pending  # its candidates in flight (they are not in the study yet)

    def ask(self, k: int) -> list[_Proposal]:
        return [_Proposal(d, params=p) for p, d in self.evo.ask(k)]

    def record(self, props, outcomes, attrs):
        self.evo.record([p.params for p in props], [o.values for o in outcomes],
                        [o.constraints for o in outcomes],
                        [dict(a, owner=_owner(), key=p.design.key()) for p, a in zip(props, attrs)])


def make_sampler(name: str, seed: int | None, population: int):
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "tpe":
        # batches are asked before any of them is told: without the liar TPE proposes the
        # same region for a whole batch
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name in ("random", "evolution"):
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"--sampler {name!r}: choose from {', '.join(SAMPLERS)}")


def _fail_stale(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed process of this machine are failed (public
    ``study.tell``) and their design is queued again, so it is evaluated once after all."""
    host = socket.gethostname()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        h, _, pid = t.user_attrs.get("owner", "").rpartition(":")
        if h == host and pid.isdigit() and not _alive(int(pid)):
            study.tell(t.number, state=TrialState.FAIL)
            keep = {k: v for k, v in t.user_attrs.items() if k in ("anchor", "fallback")}
            study.enqueue_trial(t.params, user_attrs={**keep, "retry_of": t.number})
            n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- the screen
class _Screen:
    """The predictor screen (HAT-style): the first ``warmup`` designs are all measured;
    then a predictor fitted only on measured points (refitted every ``refit`` new ones)
    predicts the quality column of each candidate, and a candidate is measured only when
    its optimistic point (prediction one ensemble spread better) is not dominated by the
    measured front; the others are recorded with the predicted value (``source=predicted``).
    So every design that could join the front is measured before it does."""

    def __init__(self, space: SearchSpace, directions: list[str], q_index: int, column: str,
                 warmup: int = 1000, refit: int = 100, seed: int = 0):
        self.space, self.dirs, self.q, self.column = space, directions, q_index, column
        self.warmup, self.refit, self.seed = warmup, refit, seed
        self.X: list[np.ndarray] = []
        self.y: list[float] = []
        self.front = np.zeros((0, len(directions)))
        self.model: QualityPredictor | None = None
        self._fitted_at = 0
        self.pairs: list[tuple[float, float]] = []  # (predicted before measuring, measured): held out

    def add(self, design: Design, value: float, values: list[float] | None, feasible: bool):
        """A measured arch (never a predicted one), once: a point of the predictor, and its
        design joins the front."""
        self.X.append(self.space.encode(design.arch))
        self.y.append(value)
        self.add_front(values, feasible)
        if len(self.y) >= self.warmup and len(self.y) - self._fitted_at >= min(self.refit, len(self.y)):
            self.model = QualityPredictor(seed=self.seed).fit(np.array(self.X), np.array(self.y))
            self._fitted_at = len(self.y)

    def add_front(self, values: list[float] | None, feasible: bool):
        """A measured design whose arch the predictor already has (other knobs)."""
        if feasible and values is not None:
            pts = np.vstack([self.front, to_minimize(np.array([values]), self.dirs)])
            self.front = pts[pareto_mask(pts)]

    def predict(self, designs: Sequence[Design]) -> tuple[np.ndarray, np.ndarray] | None:
        if self.model is None:
            return None
        X = self.space.encode_many([d.arch for d in designs])
        return self.model.predict(X), self.model.predict_std(X)

    def worth_measuring(self, values: np.ndarray, feasible: np.ndarray, std: np.ndarray) -> np.ndarray:
        """values: objective rows with the predicted quality in column q."""
        if len(self.front) == 0:
            return feasible.copy()
        opt = values.copy()
        sign = -1.0 if self.dirs[self.q] == "maximize" else 1.0
        opt[:, self.q] -= sign * std  # optimistic: one spread better than predicted
        loss = to_minimize(opt, self.dirs)
        dominated = np.array([np.any(np.all(self.front <= p, axis=1) & np.any(self.front < p, axis=1))
                              for p in loss])
        return feasible & ~dominated

    def report(self) -> dict | None:
        if not self.pairs:
            return {"metric": self.column, "n": 0, "kendall": None, "spearman": None,
                    "measured": len(self.y), "warmup": self.warmup}
        p, m = zip(*self.pairs)
        r = rank_correlation(p, m)
        return {"metric": self.column, **{k: _clean(v) for k, v in r.items()}, "measured": len(self.y),
                "warmup": self.warmup}


# --------------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class _SyntheticSpec:
    """A picklable factory of the synthetic quality (worker processes build it)."""

    space: dict
    source: str
    name: str = "synthetic"

    def __call__(self):
        return SyntheticQuality(SearchSpace.from_dict(self.space, source=self.source))


@dataclass(frozen=True)
class _Given:
    source: Any

    def __call__(self):
        return self.source


def _quality_factory(cfg: SearchConfig, space: SearchSpace, bleu: bool) -> tuple[Callable, str]:
    """A picklable zero-argument factory of the quality source (workers call it) and its name."""
    if cfg.quality is None:
        if cfg.run_dir is None:
            raise UserError("give --run RUN (a trained supernet) or --synthetic-quality")
        ms = MeasureSettings(split=cfg.split, max_batches=cfg.max_batches, max_tokens=cfg.max_tokens, bleu=bleu,
                             bleu_sentences=cfg.bleu_sentences, device="cuda" if cfg.gpu else "cpu")
        spec = SupernetSpec(str(cfg.run_dir), ms)
        # the device is not part of the name: a search started on CPU may resume on a GPU
        return spec, spec.name
    if cfg.quality == "synthetic":
        return _SyntheticSpec(space.to_dict(), space.source), "synthetic"
    if isinstance(cfg.quality, str):
        raise UserError(f"quality {cfg.quality!r}: use 'synthetic' or a quality source object")
    return _Given(cfg.quality), getattr(cfg.quality, "name", type(cfg.quality).__name__)


def _space_of(run_dir, space) -> SearchSpace:
    given = None
    if space is not None:
        given = space if isinstance(space, SearchSpace) else SearchSpace.load(space)
    if run_dir is None:
        if given is None:
            raise UserError("give --run RUN (a trained supernet) or --space SPACE with --synthetic-quality")
        return given
    from ..rundir import read_config, space_of
    run_space = space_of(read_config(run_dir))
    if given is not None and given.to_dict() != run_space.to_dict():
        raise UserError(f"--space {given.source} is not the space {run_dir} was trained on; drop --space "
                        "(the run's own space is used)")
    return run_space


def _hardware_ref(hw: Any, name: str) -> str:
    """The accelerator as `load_hardware` can find it again from another folder."""
    if isinstance(hw, (str, Path)) and Path(hw).suffix.lower() in (".yaml", ".yml"):
        return str(Path(hw).resolve())
    return name


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


#: settings recorded in search.json that another process of the same search may change
PER_PROCESS_SETTINGS = ("seed",)


def _check_config(out: Path | None, record: dict) -> None:
    """search.json records what the study measures; a resumed search must match it."""
    if out is None:
        return
    from ..rundir import first_difference
    path = out / CONFIG
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path} is damaged ({type(e).__name__}); delete {out} (or choose a new --out) "
                        "and search again") from None
    # an older search.json lacks later settings; processes sharing one study may each use
    # their own seed (the same seed would make them propose the same designs)
    known = [k for k in record if k in saved and k not in PER_PROCESS_SETTINGS]
    d = first_difference({k: saved[k] for k in known}, {k: record[k] for k in known})
    if d:
        raise UserError(f"{out} holds a search made with {d[0]}={d[1]!r}, but this command gives "
                        f"{d[0]}={d[2]!r}; rerun with the same settings to resume, or choose a new --out")


def fixed_reference(objs: Sequence[Objective], space: SearchSpace, evaluator: Evaluator,
                    knobs: tuple) -> list[float]:
    """The hypervolume reference point (minimised): fixed by the space and the accelerator,
    never by a run's own results, so hypervolumes of runs of one space compare. Loss: the
    cross-entropy of a uniform guess (ln vocab); BLEU: 0; costs: 1.1 x the largest arch's."""
    cm = evaluator.cost_metrics([Design(space.largest(), knobs)])
    ref = []
    for o in objs:
        if o.column == "loss":
            ref.append(math.log(space.vocab_size))
        elif o.column == "bleu":
            ref.append(0.0)
        else:
            ref.append(1.1 * float(cm[o.column][0]) if o.column in cm else float("nan"))
    return ref


# --------------------------------------------------------------------------- search
def search(run_dir: str | Path | None = None, hw: Any = None, *, config: SearchConfig | None = None,
           **options) -> SearchResult:
    """Run (or resume) a co-search and write its results to ``config.out``.

    Give a :class:`SearchConfig`, or its fields as keyword options (``run_dir`` and ``hw``
    also positionally). Every mistake in the inputs raises ``UserError`` before any trial
    runs. ``trials`` is the study's total of finished trials, each a distinct design.
    """
    if run_dir is not None:
        options["run_dir"] = run_dir
    if hw is not None:
        options["hw"] = hw
    cfg = make_config(config, **options)
    return _Search(cfg).run()


class _Search:
    """One search: the parts built from the config, then the propose/measure/record loop."""

    def __init__(self, cfg: SearchConfig):
        self.t0 = time.perf_counter()
        cfg.check()
        self.cfg = cfg
        self.objs = parse_objectives(cfg.objectives)
        self.bounds = Bounds(cfg.latency_max, cfg.area_max)
        self.space = sp = _space_of(cfg.run_dir, cfg.space)
        self.costs = CostModel(sp, cfg.hw, cfg.scenario)
        self.pspace = ParamSpace.build(sp, self.costs.hw, cfg.cosearch_hw)
        designs = sp.cardinality() * math.prod(len(v) for v in self.pspace.hw_choices.values())
        if cfg.trials > designs:
            raise UserError(f"--trials {cfg.trials} exceeds the {designs} distinct designs of this space; "
                            f"give --trials {designs} or fewer")
        self.reach = check_reachable(sp, self.costs, self.bounds, self.pspace.hw_choices,
                                     [o.name for o in self.objs], seed=cfg.seed or 0)
        bleu = any(o.name == "bleu" for o in self.objs) and cfg.quality is None
        if bleu and cfg.run_dir is not None:
            from ..rundir import read_config
            if read_config(cfg.run_dir).get("task") != "translation":
                raise UserError("--objectives bleu needs a translation run; use quality (validation loss) "
                                "for a language model")
        if cfg.gpu and cfg.quality is None:
            import torch
            if not torch.cuda.is_available():
                raise UserError("--gpu was given but torch sees no CUDA device; drop --gpu")
        self.factory, qname = _quality_factory(cfg, sp, bleu)
        self.needs_quality = any(o.column in QUALITY_COLUMNS for o in self.objs)
        # trials.csv's source, from what the quality source says it is (not its name): a
        # stand-in must never read as measured on a supernet
        self.quality_source = "synthetic" if getattr(cfg.quality, "synthetic", cfg.quality == "synthetic") \
            else "measured"
        self.directions = [o.direction for o in self.objs]
        self.out = Path(cfg.out) if cfg.out is not None else None
        self.name = cfg.study or "cosearch"
        self.url = storage_url(cfg.storage, self.out) if cfg.storage != "memory" else "memory"
        self.knobs = _preset_knobs(self.costs.hw, self.pspace)
        self.evaluator = Evaluator(sp, self.objs, self.costs, quality=None, bounds=self.bounds)
        self.reference = fixed_reference(self.objs, sp, self.evaluator, self.knobs)
        self.record = {
            "objectives": [o.name for o in self.objs], "directions": self.directions, "hw": self.costs.hw.name,
            "hw_digest": hashlib.sha1(self.costs.hw.key.encode()).hexdigest()[:16],
            "cosearch_hw": cfg.cosearch_hw, "latency_max": cfg.latency_max, "area_max": cfg.area_max,
            "scenario": cfg.scenario, "space": sp.to_dict(), "quality": qname if self.needs_quality else None,
            "study": self.name, "storage": describe(cfg.storage) if cfg.storage else "sqlite:///DIR/study.db",
            # a resumed study must keep its sampler: another one would read the trials differently
            "sampler": cfg.sampler, "seed": cfg.seed, "population": cfg.population,
            "predictor": cfg.predictor, "predictor_warmup": cfg.predictor_warmup if cfg.predictor else None,
            # the supernet measured: `cosearch export DIR --pick ...` loads it without --run
            "run": str(Path(cfg.run_dir).resolve()) if cfg.run_dir is not None else None}
        if cfg.write:
            _check_config(self.out, self.record)

    def lock(self):
        return study_lock(self.url)

    def open(self) -> optuna.Study:
        cfg = self.cfg
        store = open_storage(cfg.storage, self.out)
        with self.lock():  # two processes on a fresh storage would both create the study
            st = open_study(store, self.name, self.directions, make_sampler(cfg.sampler, cfg.seed, cfg.population))
        if cfg.write and self.out is not None:
            from ..rundir import atomic_write_text
            # what export loads: a preset name, or the YAML file's path (hw_digest checks identity)
            rec = {**self.record, "hardware": _hardware_ref(cfg.hw, self.costs.hw.name)}
            atomic_write_text(self.out / CONFIG, json.dumps(rec, indent=2, sort_keys=True) + "\n")
        return st

    def run(self) -> SearchResult:
        cfg, sp, objs = self.cfg, self.space, self.objs
        st = self.open()
        with self.lock():
            _fail_stale(st)

        # measured archs are remembered by digest: a resumed study never measures one twice
        known: dict[str, dict] = {}
        q_index = next((i for i, o in enumerate(objs) if o.column in QUALITY_COLUMNS), None)
        screen = None
        if cfg.predictor and q_index is not None:
            screen = _Screen(sp, self.directions, q_index, objs[q_index].column, warmup=cfg.predictor_warmup,
                             refit=cfg.predictor_refit, seed=cfg.seed or 0)
        for t in st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            m = t.user_attrs.get("metrics") or {}
            # only what this run's quality source scored: synthetic values never pass as measured
            if t.user_attrs.get("source") == self.quality_source and "loss" in m:
                digest = t.user_attrs.get("digest", "")
                first = digest not in known  # one predictor point per arch, as in _finish
                known[digest] = {k: m[k] for k in QUALITY_COLUMNS if m.get(k) is not None}
                if screen is not None and m.get(screen.column) is not None:
                    feasible = all(v <= 0 for v in (t.constraints or {}).values())
                    if first:
                        screen.add(self.pspace.design(t.params), m[screen.column], t.values, feasible)
                    else:
                        screen.add_front(t.values, feasible)

        extra = 0
        if cfg.sampler == "evolution":
            evo = EvolutionProposer(st, self.pspace, seed=cfg.seed, settings=cfg.evolution or EvolutionSettings(),
                                    precheck=lambda ds: _precheck(ds, self.costs, self.bounds))
            proposer: Any = _EvolutionProposer(evo)
        else:
            proposer = _OptunaProposer(st, self.pspace, cfg.trials, self.lock, cfg.seed)
            extra = self._seed_anchors(st)
        bs = cfg.batch or (cfg.population if cfg.sampler == "nsga2" else 100 if cfg.sampler == "evolution" else 10)
        bs = max(1, min(bs, cfg.trials))

        pool = None
        if self.needs_quality and _alive_count(st) < cfg.trials:
            pool = self._pool(known)
        done0 = _alive_count(st)
        bar = _bar(cfg.progress, cfg.trials, done0)
        measured = 0
        inflight: list = []
        deadline = None if cfg.time_limit_s is None else self.t0 + cfg.time_limit_s
        slots = max(1, cfg.workers)
        try:
            while True:
                while len(inflight) < slots and (deadline is None or time.perf_counter() < deadline):
                    left = cfg.trials - _alive_count(st) - proposer.pending()
                    if left <= 0:
                        break
                    props = proposer.ask(min(bs + extra, left))
                    extra = 0
                    if not props:
                        break
                    batch = _prepare(props, self.evaluator, screen, known, self.needs_quality)
                    handle = pool.submit(batch.to_measure) if pool is not None else {}
                    inflight.append((handle, batch))
                if not inflight:
                    break
                if pool is None:
                    done_handles, results = [inflight[0][0]], [inflight[0][0]]
                else:
                    done_handles, results = pool.wait([h for h, _ in inflight])
                for h, res in zip(done_handles, results):
                    i = next(j for j, (hh, _) in enumerate(inflight) if hh is h)
                    _, batch = inflight.pop(i)
                    measured += _finish(batch, res, self.evaluator, proposer, screen, known, self.quality_source)
                    if bar is not None:
                        bar.update(len(batch.props))
        finally:
            if bar is not None:
                bar.close()
            if pool is not None:
                pool.close()
        return self._results(st, screen, measured)

    def _seed_anchors(self, st: optuna.Study) -> int:
        """The largest and the smallest arch anchor the front's two ends: queued once, when
        the study is new (under the lock: a second process sees them and queues nothing)."""
        with self.lock():
            if st.get_trials(deepcopy=False):
                return 0
            anchors = [self.space.largest(), self.space.smallest()][: self.cfg.trials]
            for a in anchors:
                st.enqueue_trial(self.pspace.params_of(Design(a, self.knobs)), user_attrs={"anchor": True})
        # queued trials carry no NSGA-II generation: without these extra slots the first
        # generation stays short and the second batch joins it (evolution would start at 2x)
        return len(anchors)

    def _pool(self, known: dict):
        from .workers import LocalPool, ProcessPool, RayPool
        cfg = self.cfg
        if cfg.workers > 1 and (cfg.gpu or not _ray_installed()):
            return ProcessPool(self.factory, cfg.workers)
        if cfg.workers > 1:
            return RayPool(self.factory, cfg.workers)
        src = CachedQuality(self.factory())  # load the supernet now: its errors come before any trial
        for k, q in known.items():
            src.seed(k, q)
        return LocalPool(lambda: src)

    def _results(self, st: optuna.Study, screen, measured: int) -> SearchResult:
        from .results import summarize, write_results
        cfg, objs = self.cfg, self.objs
        rows = summarize(st, objs)
        pred = screen.report() if screen is not None else None
        if pred is not None:
            log.info("predictor (%s): held-out Kendall tau %s on %d archs", pred["metric"], pred["kendall"], pred["n"])
        files: list[Path] = []
        from .results import front_hypervolume
        hv = front_hypervolume(rows, objs, self.reference)
        if cfg.write and self.out is not None:
            files = write_results(self.out, rows, objs, plots=cfg.plots, reference=self.reference,
                                  extra={"predictor": pred, "reachable": self.reach.__dict__,
                                         "elapsed_s": time.perf_counter() - self.t0})
        front = [r for r in rows if r.get("pareto")]
        return SearchResult(out=self.out, study=st, trials=len(rows), feasible=sum(r["feasible"] for r in rows),
                            measured=measured, pareto=front, predictor=pred, reachable=self.reach.__dict__,
                            elapsed_s=time.perf_counter() - self.t0, files=files, hypervolume=hv,
                            hypervolume_reference=self.reference)


def _ray_installed() -> bool:
    import importlib.util
    return importlib.util.find_spec("ray") is not None


def _preset_knobs(hw, pspace: ParamSpace) -> tuple:
    """The preset's own values of the co-design knobs (first choice when not a choice)."""
    if not pspace.hw_choices:
        return ()
    from ..hardware import accelerator_space
    base = accelerator_space(hw).default()
    return tuple(sorted((k, base[k] if base.get(k) in opts else opts[0]) for k, opts in pspace.hw_choices.items()))


def _precheck(designs, costs: CostModel, bounds: Bounds) -> np.ndarray:
    from .constraints import constraint_values
    m = costs(designs)
    cons = constraint_values(m, bounds)
    return np.all(np.stack(list(cons.values())) <= 0, axis=0)


@dataclass
class _Batch:
    """One proposed batch on its way through measurement."""

    props: list
    cost_metrics: dict
    needs_quality: bool
    measure: np.ndarray                  # which designs get a measured quality
    to_measure: list = field(default_factory=list)   # distinct archs sent to the quality source
    predicted: np.ndarray | None = None  # the predictor's value of the quality column
    column: str | None = None            # that column


def _prepare(props, evaluator: Evaluator, screen, known, needs_quality) -> _Batch:
    """Cost a batch and decide which designs get measured; the others take the predictor's value."""
    designs = [p.design for p in props]
    batch = _Batch(props, evaluator.cost_metrics(designs), needs_quality, np.zeros(len(props), bool))
    if not needs_quality:
        return batch
    measure = np.ones(len(designs), dtype=bool)
    pred = screen.predict(designs) if screen is not None else None
    if pred is not None:
        mean, std = pred
        batch.predicted, batch.column = mean, screen.column
        outs = evaluator.outcomes(designs, batch.cost_metrics, {screen.column: mean})
        vals = np.array([o.values for o in outs])
        feas = np.array([o.feasible for o in outs])
        measure = screen.worth_measuring(vals, feas, std)
    keys = [arch_digest(d.arch) for d in designs]
    seen = set()
    for d, k, m in zip(designs, keys, measure):
        if m and k not in known and k not in seen:
            seen.add(k)
            batch.to_measure.append(d.arch)
    # an arch measured before, or in this batch for another design, gives every design of it
    # the measured value (it costs nothing more)
    batch.measure = np.array([k in known or k in seen for k in keys], dtype=bool)
    return batch


def _finish(batch: _Batch, res, evaluator: Evaluator, proposer, screen, known, computed: str) -> int:
    """Record one measured batch in the study; returns how many archs were measured.
    ``computed`` labels the rows whose quality the source computed (``QUALITY_SOURCES``)."""
    props = batch.props
    designs = [p.design for p in props]
    fresh = [arch_digest(a) for a in batch.to_measure]
    fresh_keys = set(fresh)
    for i, k in enumerate(fresh):
        known[k] = {c: float(v[i]) for c, v in res.items()}
    q = None
    sources = ["cost-only"] * len(designs)
    if batch.needs_quality:
        cols: dict[str, list] = {c: [] for c in QUALITY_COLUMNS}
        for j, d in enumerate(designs):
            k = arch_digest(d.arch)
            if batch.measure[j] and k in known:
                row, sources[j] = known[k], computed
            else:  # only the predicted column: a predicted loss is never stored as BLEU
                row, sources[j] = {batch.column: float(batch.predicted[j])}, "predicted"
            for c in QUALITY_COLUMNS:
                cols[c].append(row.get(c, float("nan")))
        q = {c: np.array(v, dtype=np.float64) for c, v in cols.items()}
    outs = evaluator.outcomes(designs, batch.cost_metrics, q)
    attrs = []
    for j, (d, o) in enumerate(zip(designs, outs)):
        a = {"arch": arch_json(d.arch), "digest": arch_digest(d.arch), "source": sources[j],
             "metrics": {k: _clean(v) for k, v in o.metrics.items()}}
        if d.hw_params:
            a["hw_params"] = d.hw_dict
        if batch.predicted is not None:
            a[f"predicted_{batch.column}"] = float(batch.predicted[j])
        attrs.append(a)
        # every measured design joins the screen's front; the predictor learns (and is scored)
        # only on archs measured in this batch, once each (several designs may share one): a
        # cached arch is already among its points, and counting it again would inflate its tau
        if screen is not None and sources[j] == computed:
            if a["digest"] in fresh_keys:
                fresh_keys.discard(a["digest"])
                value = float(o.metrics[screen.column])
                if batch.predicted is not None:
                    screen.pairs.append((float(batch.predicted[j]), value))
                screen.add(d, value, o.values, o.feasible)
            else:
                screen.add_front(o.values, o.feasible)
    proposer.record(props, outs, attrs)
    return len(batch.to_measure)


def _bar(progress: bool, total: int, initial: int):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, unit="trial", desc="search", dynamic_ncols=True)
