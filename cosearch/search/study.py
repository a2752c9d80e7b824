"""The co-search loop: Optuna ask/tell (or the evolutionary proposer), costs, quality.

One iteration: propose a batch of designs, cost them all at once (numpy), optionally let
the quality predictor pick the ones worth measuring, measure quality (here or in Ray
actors), and record every trial with its objective values, constraints
(``trial.set_constraint``) and metrics. The trial count is a total over the study: a
re-run of the same command resumes it, and several processes (or machines, through
PostgreSQL) sharing one study stop together at the total, each trial evaluated once.
(Exception: the evolution sampler records whole batches with ``add_trials``, so several
*processes* running it on one study may overshoot the total by up to one batch each;
Ray workers inside one search do not.)
"""
from __future__ import annotations

import bisect
import hashlib
import json
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
from .constraints import Bounds, check_reachable
from .evolution import EvolutionProposer, EvolutionSettings
from .front import pareto_mask, to_minimize
from .objectives import QUALITY_COLUMNS, CostModel, Evaluator, Outcome, parse_objectives
from .params import Design, ParamSpace, arch_digest, arch_json
from .predictor import QualityPredictor, rank_correlation
from .quality import CachedQuality, SupernetQuality, SyntheticQuality
from .storage import describe, open_storage, open_study

SAMPLERS = ("nsga2", "tpe", "random", "evolution")
CONFIG = "search.json"


@dataclass
class SearchResult:
    out: Path | None
    study: optuna.Study
    trials: int                 # finished trials in the study
    feasible: int
    measured: int               # archs whose quality this call measured
    pareto: list[dict]          # the feasible, measured front (rows as in pareto.csv)
    predictor: dict | None      # rank correlation of predictions with measurements
    reachable: dict
    elapsed_s: float
    files: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- proposers
@dataclass
class _Proposal:
    design: Design
    params: dict | None = None
    trial: Any = None


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class _OptunaProposer:
    """Optuna's own samplers through ask/tell; trials past the total are failed at once."""

    def __init__(self, study: optuna.Study, pspace: ParamSpace, total: int):
        self.study, self.pspace, self.total = study, pspace, total

    def pending(self) -> int:
        return 0  # asked trials are RUNNING in the storage and counted there

    def ask(self, k: int) -> list[_Proposal]:
        trials = [self.study.ask() for _ in range(k)]
        alive = sorted(t.number for t in self.study.get_trials(deepcopy=False)
                       if t.state != TrialState.FAIL)
        out = []
        for t in trials:
            if bisect.bisect_left(alive, t.number) >= self.total:
                # another worker took the last slots between our count and our ask
                t.set_user_attr("over_budget", True)
                self.study.tell(t, state=TrialState.FAIL)
                continue
            t.set_user_attr("owner", _owner())
            out.append(_Proposal(self.pspace.suggest(t), trial=t))
        return out

    def record(self, props: Sequence[_Proposal], outcomes: Sequence[Outcome], attrs: Sequence[dict]):
        for p, o, a in zip(props, outcomes, attrs):
            for k, v in o.constraints.items():
                p.trial.set_constraint(k, v)
            for k, v in a.items():
                p.trial.set_user_attr(k, v)
            self.study.tell(p.trial, o.values)


class _EvolutionProposer:
    def __init__(self, evo: EvolutionProposer):
        self.evo, self._pending = evo, 0

    def pending(self) -> int:
        return self._pending

    def ask(self, k: int) -> list[_Proposal]:
        got = self.evo.ask(k)
        self._pending += len(got)
        return [_Proposal(d, params=p) for p, d in got]

    def record(self, props, outcomes, attrs):
        self.evo.record([p.params for p in props], [o.values for o in outcomes],
                        [o.constraints for o in outcomes], [dict(a, owner=_owner()) for a in attrs])
        self._pending -= len(props)


def make_sampler(name: str, seed: int | None, population: int):
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name in ("random", "evolution"):
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"--sampler {name!r}: choose from {', '.join(SAMPLERS)}")


# --------------------------------------------------------------------------- the screen
class _Screen:
    """The predictor screen: fitted on measured trials, it skips candidates whose
    optimistic predicted point (mean - one spread) is dominated by the measured front."""

    def __init__(self, space: SearchSpace, directions: list[str], q_index: int, warmup: int = 40,
                 refit_every: int = 25, seed: int = 0):
        self.space, self.dirs, self.q = space, directions, q_index
        self.warmup, self.refit_every, self.seed = warmup, refit_every, seed
        self.X: list[np.ndarray] = []
        self.y: list[float] = []
        self.front = np.zeros((0, len(directions)))
        self.model: QualityPredictor | None = None
        self._fitted_at = 0
        self.pairs: list[tuple[float, float]] = []  # (predicted before measuring, measured)

    def add(self, design: Design, loss: float, values: list[float] | None, feasible: bool):
        self.X.append(self.space.encode(design.arch))
        self.y.append(loss)
        if feasible and values is not None:
            pts = np.vstack([self.front, to_minimize(np.array([values]), self.dirs)])
            self.front = pts[pareto_mask(pts)]
        if len(self.y) >= self.warmup and len(self.y) - self._fitted_at >= self.refit_every:
            self.model = QualityPredictor(seed=self.seed).fit(np.array(self.X), np.array(self.y))
            self._fitted_at = len(self.y)

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
            return None
        p, m = zip(*self.pairs)
        return rank_correlation(p, m)


# --------------------------------------------------------------------------- helpers
def _quality_factory(quality, run_dir, space: SearchSpace, split: str, max_batches: int,
                     bleu: bool) -> tuple[Callable, str]:
    """A picklable zero-argument factory of the quality source (Ray actors call it)."""
    if quality is None:
        if run_dir is None:
            raise UserError("give --run RUN (a trained supernet) or --synthetic-quality")
        rd = str(run_dir)
        return (lambda: SupernetQuality(rd, split=split, max_batches=max_batches, bleu=bleu)), \
            f"supernet:{split}:{max_batches}"
    if quality == "synthetic":
        sd, src = space.to_dict(), space.source
        return (lambda: SyntheticQuality(SearchSpace.from_dict(sd, source=src))), "synthetic"
    if isinstance(quality, str):
        raise UserError(f"quality {quality!r}: use 'synthetic' or a quality source object")
    return (lambda: quality), getattr(quality, "name", type(quality).__name__)


def _space_of(run_dir, space) -> SearchSpace:
    if space is not None:
        return space if isinstance(space, SearchSpace) else SearchSpace.load(space)
    if run_dir is None:
        raise UserError("give --run RUN (a trained supernet) or --space SPACE with --synthetic-quality")
    from ..rundir import read_config, space_of
    return space_of(read_config(run_dir))


def _hardware_ref(hw: Any, name: str) -> str:
    """The accelerator as `load_hardware` can find it again from another folder."""
    if isinstance(hw, (str, Path)) and Path(hw).suffix.lower() in (".yaml", ".yml"):
        return str(Path(hw).resolve())
    return name


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _check_config(out: Path | None, cfg: dict) -> None:
    """search.json records what the study measures; a resumed search must match it."""
    if out is None:
        return
    from ..rundir import first_difference
    path = out / CONFIG
    if path.is_file():
        saved = json.loads(path.read_text())
        d = first_difference({k: saved.get(k) for k in cfg}, cfg)
        if d:
            raise UserError(f"{out} holds a search made with {d[0]}={d[1]!r}, but this command gives "
                            f"{d[0]}={d[2]!r}; rerun with the same settings to resume, or choose a new --out")


def _fail_stale(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed process of this machine are failed, so the total
    counts them again (a resumed search redoes them)."""
    host = socket.gethostname()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner", "")
        h, _, pid = owner.rpartition(":")
        if h == host and pid.isdigit() and not _alive(int(pid)):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
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


def _count(study: optuna.Study) -> int:
    return sum(t.state != TrialState.FAIL for t in study.get_trials(deepcopy=False))


# --------------------------------------------------------------------------- search
def search(run_dir: str | Path | None = None, hw: Any = "zcu102", *, out: str | Path | None,
           objectives: str | Sequence[str] = "quality,latency,size", cosearch_hw: bool = False,
           latency_max: float | None = None, area_max: float | None = None, trials: int = 100,
           sampler: str = "nsga2", storage: str | None = None, study: str | None = None,
           workers: int = 1, seed: int | None = 0, scenario: str = "decode",
           space: SearchSpace | str | None = None, quality: Any = None, predictor: bool = False,
           batch: int | None = None, population: int = 50, split: str = "valid",
           max_batches: int = 20, progress: bool = True, write: bool = True, plots: bool = True,
           evolution: EvolutionSettings | None = None) -> SearchResult:
    """Run (or resume) a co-search and write its results to ``out``.

    ``run_dir``: a trained supernet run (quality = validation loss with inherited weights);
    or ``space`` plus ``quality="synthetic"`` / a quality source object (``source(archs) ->
    {"loss": array}``). ``trials`` is the study's total. ``storage``: see
    :mod:`cosearch.search.storage`. Every mistake in the inputs raises ``UserError`` before
    any trial runs. ``plots=False`` skips the PNG/HTML plots (``cosearch pareto`` draws them).
    """
    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objs = parse_objectives(objectives)
    if sampler not in SAMPLERS:
        raise UserError(f"--sampler {sampler!r}: choose from {', '.join(SAMPLERS)}")
    if trials < 1 or workers < 1:
        raise UserError("--trials and --workers must be >= 1")
    if population < 2:
        raise UserError("--population must be >= 2")
    bounds = Bounds(latency_max, area_max)
    sp = _space_of(run_dir, space)
    costs = CostModel(sp, hw, scenario)
    pspace = ParamSpace.build(sp, costs.hw, cosearch_hw)
    reach = check_reachable(sp, costs, bounds, pspace.hw_choices, [o.name for o in objs], seed=seed or 0)
    bleu = any(o.name == "bleu" for o in objs) and quality is None
    if bleu and run_dir is not None:
        from ..rundir import read_config
        if read_config(run_dir).get("task") != "translation":
            raise UserError("--objectives bleu needs a translation run; use quality (validation loss) "
                            "for a language model")
    factory, qname = _quality_factory(quality, run_dir, sp, split, max_batches, bleu)
    needs_quality = any(o.column in QUALITY_COLUMNS for o in objs)

    out = Path(out) if out is not None else None
    directions = [o.direction for o in objs]
    name = study or "cosearch"
    cfg = {"objectives": [o.name for o in objs], "directions": directions, "hw": costs.hw.name,
           "hw_digest": hashlib.sha1(costs.hw.key.encode()).hexdigest()[:16],
           "cosearch_hw": cosearch_hw, "latency_max": latency_max, "area_max": area_max,
           "scenario": scenario, "space": sp.to_dict(), "quality": qname if needs_quality else None,
           "study": name, "storage": describe(storage) if storage else "sqlite:///DIR/study.db",
           # the supernet measured: `cosearch export DIR --pick ...` loads it without --run
           "run": str(Path(run_dir).resolve()) if run_dir is not None else None}
    if write:
        _check_config(out, cfg)
    store = open_storage(storage, out)
    st = open_study(store, name, directions, make_sampler(sampler, seed, population))
    if write and out is not None:
        from ..rundir import atomic_write_text
        # what export loads: a preset name, or the YAML file's path (hw_digest checks identity)
        record = {**cfg, "hardware": _hardware_ref(hw, costs.hw.name)}
        atomic_write_text(out / CONFIG, json.dumps(record, indent=2, sort_keys=True) + "\n")
    _fail_stale(st)

    # seed the caches from what the study already holds
    # measured archs are remembered by digest: a resumed study never measures one twice
    cache_src = CachedQuality(_Lazy(factory)) if workers == 1 else None
    known: dict[str, dict] = {}
    q_index = next((i for i, o in enumerate(objs) if o.column in QUALITY_COLUMNS), None)
    screen = _Screen(sp, directions, q_index, seed=seed or 0) if (predictor and q_index is not None) else None
    for t in st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        m = t.user_attrs.get("metrics") or {}
        if t.user_attrs.get("source") == "measured" and "loss" in m:
            q = {k: m[k] for k in QUALITY_COLUMNS if m.get(k) is not None}
            known[t.user_attrs.get("digest", "")] = q
            if screen is not None:
                d = pspace.design(t.params)
                screen.add(d, m["loss"], t.values, all(v <= 0 for v in (t.constraints or {}).values()))
    if cache_src is not None:
        for k, q in known.items():
            cache_src.seed(k, q)

    extra = 0
    if sampler == "evolution":
        evo = EvolutionProposer(st, pspace, seed=seed, settings=evolution or EvolutionSettings(),
                                precheck=lambda ds: _precheck(ds, costs, bounds))
        proposer: Any = _EvolutionProposer(evo)
    else:
        proposer = _OptunaProposer(st, pspace, trials)
        if _count(st) == 0:  # the extremes anchor the front's two ends
            anchors = (sp.largest(), sp.smallest())
            for a in anchors:
                st.enqueue_trial(pspace.params_of(Design(a, _preset_knobs(costs.hw, pspace))),
                                 skip_if_exists=True)
            # enqueued trials carry no NSGA-II generation: without these extra slots the first
            # generation stays short and the second batch joins it (evolution would start at 2x)
            extra = len(anchors)
    bs = batch or (population if sampler == "nsga2" else 100 if sampler == "evolution" else 10)
    bs = max(1, min(bs, trials))
    evaluator = Evaluator(sp, objs, costs, quality=None, bounds=bounds)  # quality: measured below

    pool = None
    if needs_quality:
        from .workers import LocalPool, RayPool
        if _count(st) < trials and cache_src is not None:
            cache_src.source.build()  # load the supernet now: its errors come before any trial
        pool = RayPool(factory, workers) if workers > 1 else LocalPool(lambda: cache_src)
    done0 = _count(st)
    bar = _bar(progress, trials, done0)
    measured = 0
    inflight: list = []
    try:
        while True:
            while len(inflight) < max(1, workers):
                left = trials - _count(st) - proposer.pending()
                if left <= 0:
                    break
                props = proposer.ask(min(bs + extra, left))
                extra = 0
                if not props:
                    break
                designs = [p.design for p in props]
                cm = evaluator.cost_metrics(designs)
                ctx = _prepare_quality(props, cm, evaluator, screen, known, q_index, needs_quality)
                handle = pool.submit(ctx["to_measure"]) if pool is not None else {}
                inflight.append((handle, ctx))
            if not inflight:
                break
            if pool is None:
                done_handles, results = [inflight[0][0]], [inflight[0][0]]
            else:
                done_handles, results = pool.wait([h for h, _ in inflight])
            for h, res in zip(done_handles, results):
                i = next(j for j, (hh, _) in enumerate(inflight) if hh is h)
                _, ctx = inflight.pop(i)
                measured += _finish(ctx, res, evaluator, proposer, screen, known)
                if bar is not None:
                    bar.update(len(ctx["props"]))
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.close()

    from .results import summarize, write_results
    rows = summarize(st, objs)
    pred_report = screen.report() if screen is not None else None
    files: list[Path] = []
    if write and out is not None:
        files = write_results(out, rows, objs, plots=plots,
                              extra={"predictor": pred_report, "reachable": reach.__dict__,
                                     "elapsed_s": time.perf_counter() - t0})
    front = [r for r in rows if r.get("pareto")]
    return SearchResult(out=out, study=st, trials=len(rows), feasible=sum(r["feasible"] for r in rows),
                        measured=measured, pareto=front, predictor=pred_report, reachable=reach.__dict__,
                        elapsed_s=time.perf_counter() - t0, files=files)


class _Lazy:
    """Builds the quality source on first use (the supernet loads only if needed)."""

    def __init__(self, factory):
        self.factory, self.source, self.name = factory, None, "lazy"

    def build(self):
        if self.source is None:
            self.source = self.factory()
        return self.source

    def __call__(self, archs):
        return self.build()(archs)


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


def _prepare_quality(props, cm, evaluator: Evaluator, screen, known, q_index, needs_quality) -> dict:
    """Decide which designs get measured; the others take the predictor's value."""
    designs = [p.design for p in props]
    ctx = {"props": props, "cm": cm, "to_measure": [], "pred": None, "measure": np.zeros(len(props), bool),
           "needs_quality": needs_quality}
    if not needs_quality:
        return ctx
    digests = [arch_digest(d.arch) for d in designs]
    measure = np.ones(len(designs), dtype=bool)
    pred = screen.predict(designs) if screen is not None else None
    if pred is not None:
        mean, std = pred
        ctx["pred"] = mean
        q = {"loss": mean, "bleu": mean}
        outs = evaluator.outcomes(designs, cm, {k: v for k, v in q.items() if k == evaluator.objectives[q_index].column})
        vals = np.array([o.values for o in outs])
        feas = np.array([o.feasible for o in outs])
        measure = screen.worth_measuring(vals, feas, std)
    ctx["measure"] = measure
    seen = set()
    for d, k, m in zip(designs, digests, measure):
        if m and k not in known and k not in seen:
            seen.add(k)
            ctx["to_measure"].append(d.arch)
    return ctx


def _finish(ctx, res, evaluator: Evaluator, proposer, screen, known) -> int:
    """Record one measured batch in the study; returns how many archs were measured."""
    props, cm = ctx["props"], ctx["cm"]
    designs = [p.design for p in props]
    newly = 0
    if ctx["to_measure"]:
        for i, a in enumerate(ctx["to_measure"]):
            known[arch_digest(a)] = {k: float(v[i]) for k, v in res.items()}
        newly = len(ctx["to_measure"])
    q = None
    sources = ["cost-only"] * len(designs)
    if ctx["needs_quality"]:
        cols: dict[str, list] = {}
        for j, d in enumerate(designs):
            k = arch_digest(d.arch)
            if ctx["measure"][j] and k in known:
                row, sources[j] = known[k], "measured"
            else:
                row, sources[j] = {"loss": float(ctx["pred"][j]), "bleu": float(ctx["pred"][j])}, "predicted"
            for c in QUALITY_COLUMNS:
                cols.setdefault(c, []).append(row.get(c, float("nan")))
        q = {c: np.array(v, dtype=np.float64) for c, v in cols.items()}
    outs = evaluator.outcomes(designs, cm, q)
    attrs = []
    for j, (d, o) in enumerate(zip(designs, outs)):
        a = {"arch": arch_json(d.arch), "digest": arch_digest(d.arch), "source": sources[j],
             "metrics": {k: _clean(v) for k, v in o.metrics.items()}}
        if d.hw_params:
            a["hw_params"] = d.hw_dict
        if ctx["pred"] is not None:
            a["predicted_loss"] = float(ctx["pred"][j])
        attrs.append(a)
        if screen is not None and sources[j] == "measured":
            if ctx["pred"] is not None:
                screen.pairs.append((float(ctx["pred"][j]), float(o.metrics["loss"])))
            screen.add(d, float(o.metrics["loss"]), o.values, o.feasible)
    proposer.record(props, outs, attrs)
    return newly


def _bar(progress: bool, total: int, initial: int):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, unit="trial", desc="search", dynamic_ncols=True)
