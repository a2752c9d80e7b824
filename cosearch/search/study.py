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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import optuna
from optuna.trial import TrialState

from ..errors import UserError
from ..outdirs import check_out, lock_out, mark
from ..space import SearchSpace
from .config import DEFAULT_REPEATS, SAMPLERS, SearchConfig, make_config
from .constraints import Bounds, check_reachable
from .evolution import EvolutionProposer, EvolutionSettings
from .objectives import QUALITY_COLUMNS, QUALITY_EXTRAS, CostModel, Evaluator, Objective, parse_objectives
from .params import Design, ParamSpace, trial_attrs, trial_params
from .proposers import EvolutionAdapter, OptunaProposer, alive_count, fail_stale, make_sampler, owner_tag, queue
from .quality import CachedQuality, MeasureSettings, SupernetSpec, SyntheticQuality, forward_settings_from_env
from .hypervolume import front_hypervolume
from .screen import Screen
from .storage import describe, is_server, open_storage, open_study, storage_errors, storage_url, study_lock
from .repeats import Repeats, RepeatSettings
from .trial_batch import measured_outcomes, prepare_batch, record_batch

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
    timing: dict = field(default_factory=dict)  # start-up and loop seconds (summary.json too)


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
                             repeats=cfg.repeats or DEFAULT_REPEATS,
                             bleu_sentences=cfg.bleu_sentences, device="cuda" if cfg.gpu else "cpu",
                             finetune_steps=cfg.finetune_steps,
                             **forward_settings_from_env())
        spec = SupernetSpec(str(cfg.run_dir), ms)
        # the device is not part of the name (a search started on the CPU may resume on a GPU),
        # but with a finetune, which trains other models on each (SupernetSpec.name)
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
    from ..training.rundir import read_config, space_of
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


#: settings recorded in search.json that another process of the same search may change
#: (a search started on CPU may resume on a GPU, measuring with TF32 matmuls there)
PER_PROCESS_SETTINGS = ("seed", "quality_matmul", "quality_forward_tokens", "quality_forward_cost")


def _check_config(out: Path | None, record: dict) -> None:
    """search.json records what the study measures; a resumed search must match it."""
    if out is None:
        return
    from ..training.rundir import first_difference
    path = out / CONFIG
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        # never "delete the folder": it holds the study (study.db), the only copy of the trials
        raise UserError(f"{path} is damaged ({type(e).__name__}); move that one file aside and rerun the same "
                        "command: the trials are kept in the study, which checks the settings itself") from None
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
    if not cfg.write or cfg.out is None:
        return _Search(cfg).run()
    # cosearch.outdirs' rule for --out: the folder itself, then (once they are checked) that it
    # is apart from the inputs; the processes of one search share the folder
    # (a folder another process of this search is just creating holds study.db* before search.json)
    legacy = lambda p: any(x.name == CONFIG or x.name.startswith("study.db") for x in p.iterdir())  # noqa: E731
    check_out(cfg.out, "search", legacy=legacy)
    s = _Search(cfg)
    check_out(cfg.out, "search", inputs={"--run": cfg.run_dir}, legacy=legacy)
    with lock_out(cfg.out, shared=True):
        return s.run()


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
            from ..training.rundir import read_config
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
            "repeats": cfg.repeats, "repeat_margin": cfg.repeat_margin if cfg.repeats != 1 else None,
            # the float32 matmul precision the supernet's losses are measured with (tf32 on CUDA)
            "quality_matmul": self.factory.settings.matmul if isinstance(self.factory, SupernetSpec) else None,
            # tokens per forward pass of a loss measurement (batches merged on CUDA; same losses)
            "quality_forward_tokens": self.factory.settings.tokens_per_forward
            if isinstance(self.factory, SupernetSpec) else None,
            "quality_forward_cost": self.factory.settings.cost_per_forward
            if isinstance(self.factory, SupernetSpec) else None,
            # each measured arch's own training steps first (`cosearch export` trains the pick so too)
            "finetune_steps": self.factory.settings.finetune_steps if isinstance(self.factory, SupernetSpec) else None,
            # the supernet measured: `cosearch export DIR --pick ...` loads it without --run
            "run": str(Path(cfg.run_dir).resolve()) if cfg.run_dir is not None else None}
        if cfg.write:
            _check_config(self.out, self.record)

    def lock(self):
        return study_lock(self.url)

    def open(self) -> tuple[optuna.Study, Any]:
        cfg = self.cfg
        store = open_storage(cfg.storage, self.out, heartbeat=cfg.heartbeat_s)
        # the study's sampler only sees results (proposals come from the proposer's mirror)
        sampler = optuna.samplers.RandomSampler(seed=cfg.seed)
        with self.lock():  # two processes on a fresh storage would both create the study
            st = open_study(store, self.name, self.directions, sampler, record=self.study_record())
            fail_stale(st, unowned=True)
        if cfg.write and self.out is not None:
            from ..training.rundir import atomic_write_text
            # what export loads: a preset name, or the YAML file's path (hw_digest checks identity)
            rec = {**self.record, "hardware": _hardware_ref(cfg.hw, self.costs.hw.name)}
            mark(self.out, "search")
            atomic_write_text(self.out / CONFIG, json.dumps(rec, indent=2, sort_keys=True) + "\n")
        return st, store

    def study_record(self) -> dict:
        """What every trial of the study measures (kept in the study: see ``check_study_record``)."""
        keys = ("objectives", "directions", "hw", "hw_digest", "cosearch_hw", "latency_max", "area_max",
                "scenario", "quality")
        rec = {k: self.record[k] for k in keys}
        rec["space_digest"] = hashlib.sha1(json.dumps(self.record["space"], sort_keys=True).encode()).hexdigest()[:16]
        return rec

    def run(self) -> SearchResult:
        with storage_errors(self.url):
            st, store = self.open()
            return self._loop(st, store)

    def _loop(self, st: optuna.Study, store) -> SearchResult:
        cfg, sp, objs = self.cfg, self.space, self.objs
        # measured archs are remembered by digest: a resumed study never measures one twice
        known: dict[str, dict] = {}
        q_index = next((i for i, o in enumerate(objs) if o.column in QUALITY_COLUMNS), None)
        screen = None
        if cfg.predictor and q_index is not None:
            screen = Screen(sp, self.directions, q_index, objs[q_index].column, warmup=cfg.predictor_warmup,
                             refit=cfg.predictor_refit, seed=cfg.seed or 0)
        for t in st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            u = trial_attrs(t)
            m = u.get("metrics") or {}
            # only what this run's quality source scored: synthetic values never pass as measured
            if u.get("source") == self.quality_source and "loss" in m:
                digest = u.get("digest", "")
                first = digest not in known  # one predictor point per arch, as in record_batch
                known[digest] = {k: m[k] for k in (*QUALITY_COLUMNS, *QUALITY_EXTRAS) if m.get(k) is not None}
                if screen is not None and m.get(screen.column) is not None:
                    feasible = all(v <= 0 for v in (t.constraints or {}).values())
                    if first:
                        screen.add(self.pspace.design(trial_params(t)), m[screen.column], t.values, feasible)
                    else:
                        screen.add_front(t.values, feasible)

        extra = 0
        if cfg.sampler == "evolution":
            evo = EvolutionProposer(st, self.pspace, seed=cfg.seed, settings=cfg.evolution or EvolutionSettings(),
                                    precheck=lambda ds: _precheck(ds, self.costs, self.bounds))
            proposer: Any = EvolutionAdapter(evo)
            left = fresh_left = lambda: cfg.trials - alive_count(st) - proposer.pending()  # noqa: E731
        else:
            extra = self._seed_anchors(st)
            proposer = OptunaProposer(st, store, self.pspace, cfg.trials, make_sampler(cfg.sampler, cfg.seed,
                                      cfg.population), cfg.seed, server=is_server(self.url))
            left, fresh_left = proposer.left, proposer.refresh
        bs = cfg.batch or (cfg.population if cfg.sampler == "nsga2" else 100 if cfg.sampler == "evolution" else 10)
        bs = max(1, min(bs, cfg.trials))

        from .workers import LocalPool
        t_ready = time.perf_counter()
        try:
            pool = self._pool(known) if self.needs_quality and fresh_left() > 0 else LocalPool(None)
        except BaseException:
            proposer.abandon()  # (stops its heartbeat thread)
            raise
        repeats = self._repeats(pool, q_index)
        t_loop = time.perf_counter()
        bar = _bar(cfg.progress, cfg.trials, max(0, cfg.trials - fresh_left() - proposer.pending()))
        counts = {"recorded": 0, "measured": 0, "measured_again": 0}
        jobs: list[_Job] = []
        waiting: tuple = (set(), 0.0)  # other processes' RUNNING trials waited for, and since when
        deadline = None if cfg.time_limit_s is None else self.t0 + cfg.time_limit_s
        slots = max(1, cfg.workers)
        try:
            while True:
                while len(jobs) < slots and (deadline is None or time.perf_counter() < deadline):
                    with self.lock():  # one process of this machine proposes at a time
                        fail_stale(st)
                        n = min(bs + extra, left() if jobs else fresh_left())
                        props = proposer.ask(n) if n > 0 else []
                        if not props:
                            break
                        extra = 0
                        batch = prepare_batch(props, self.evaluator, screen, known, self.needs_quality)
                        batch.keep(proposer.reserve(batch.props, *batch.reservation(self.bounds)))
                    if batch.props:
                        jobs.append(_Job(batch, [pool.submit(batch.to_measure)]))
                if not jobs:
                    others, patience = self._others_running(st, store) if deadline is None else (set(), 0)
                    if others != waiting[0]:
                        waiting = (others, time.perf_counter())
                    if others and time.perf_counter() - waiting[1] < patience:
                        time.sleep(1.0)  # their trials may fail yet: then this process runs them
                        continue
                    if others:
                        log.warning("%d trials of other processes are still RUNNING (%s); the study has fewer "
                                    "than --trials finished until they end", len(others), ", ".join(map(str, sorted(
                                        others)[:5])))
                    break
                pending = [h for j in jobs for h in j.handles if h not in j.results]
                done, results = pool.wait(pending)
                for h, res in zip(done, results):
                    job = next(j for j in jobs if any(x is h for x in j.handles))
                    job.results[h] = res
                    if len(job.results) < len(job.handles):
                        continue
                    if repeats is not None and job.results[job.handles[0]] and self._measure_again(job, repeats, pool):
                        continue  # its front candidates are measured again: recorded when all are back
                    jobs.remove(job)
                    final = job.final(repeats)
                    counts["measured"] += record_batch(job.batch, final, self.evaluator, proposer, screen, known,
                                                       self.quality_source, repeats)
                    counts["measured_again"] += sum(len(i) for i, _ in job.rounds)
                    counts["recorded"] += len(job.batch.props)
                    if bar is not None:
                        bar.update(len(job.batch.props))
        except BaseException:
            proposer.abandon()  # Ctrl-C, a worker's error: no trial of ours stays RUNNING
            raise
        finally:
            if bar is not None:
                bar.close()
            pool.close()
        proposer.abandon()  # (nothing is in flight now: stops the heartbeat)
        # start-up (the workers loading the supernet included) and the loop, for benchmarks
        timing = {"startup_s": round(t_loop - self.t0, 3), "workers_start_s": round(t_loop - t_ready, 3),
                  "loop_s": round(time.perf_counter() - t_loop, 3), **counts, "workers": cfg.workers,
                  "repeats": self.repeats_used}
        return self._results(st, screen, counts["measured"], timing)

    def _repeats(self, pool, q_index):
        """The noise-aware measurement (``--repeats``) where quality is measured: as asked,
        or by default up to DEFAULT_REPEATS as the source's data allows (a deterministic
        source, or a split with data for one measurement, measures once)."""
        cfg = self.cfg
        self.repeats_used = 1
        if cfg.repeats == 1 or q_index is None or not self.needs_quality:
            return None
        if cfg.repeats is not None and pool.repeats < cfg.repeats:
            raise UserError(f"--repeats {cfg.repeats}: the quality source has data for {pool.repeats} "
                            f"measurement(s) of --max-batches {cfg.max_batches} batches each; lower --repeats "
                            "or --max-batches")
        self.repeats_used = min(cfg.repeats or DEFAULT_REPEATS, pool.repeats)
        if self.repeats_used <= 1:
            return None
        return Repeats(RepeatSettings(self.repeats_used, cfg.repeat_margin), self.directions, q_index,
                       self.objs[q_index].column)

    def _measure_again(self, job: "_Job", repeats: Repeats, pool) -> bool:
        """Measure the job's front candidates once more (fresh data: measurement k = rounds so
        far + 1), as long as any remain and they have fewer than --repeats measurements: a
        design drops out as soon as its mean, optimistic by its standard error, is dominated.
        False: nothing more to measure."""
        k = len(job.rounds) + 1
        if k >= repeats.s.repeats:
            return False
        now = job.final(repeats, learn=False)
        idx, outs = measured_outcomes(job.batch, now, self.evaluator)
        racing = set(job.rounds[-1][0]) if job.rounds else set(idx)
        keep = [n for n, i in enumerate(idx) if i in racing]
        if not keep:
            return False
        se = np.asarray(now[f"{repeats.column}_se"])[[idx[n] for n in keep]]  # of each current mean
        vals = np.array([outs[n].values for n in keep])
        mask = repeats.candidates(vals, np.array([outs[n].feasible for n in keep]), se)
        again = sorted({idx[n] for n, m in zip(keep, mask) if m})
        if not again:
            return False
        h = pool.submit([job.batch.to_measure[i] for i in again], k)
        job.rounds.append((again, h))
        job.handles.append(h)
        return True

    def _others_running(self, st: optuna.Study, store) -> tuple[set, float]:
        """Other processes' RUNNING trials worth waiting for before stopping short of the total
        (one may yet fail, be queued again and fall to this process), and for how long
        without change: while their processes live, on this machine (found dead by pid); for
        six heartbeats, elsewhere with heartbeats on (a trial killed before its first
        heartbeat is never found stale: the wait ends, with a warning). Not at all without."""
        from .storage import heartbeat_interval
        with self.lock():
            fail_stale(st)
        running = [t for t in st.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if trial_attrs(t).get("owner") != owner_tag()]
        host = owner_tag().rpartition(":")[0]
        here = {t.number for t in running if (trial_attrs(t).get("owner") or "").rpartition(":")[0] == host}
        beat = heartbeat_interval(store)
        if len(here) == len(running):
            return here, float("inf")
        if beat is not None:
            return {t.number for t in running}, 6.0 * beat
        return set(), 0.0

    def _seed_anchors(self, st: optuna.Study) -> int:
        """The largest and the smallest arch anchor the front's two ends: queued once, when
        the study is new (under the lock: a second process sees them and queues nothing)."""
        with self.lock():
            if st.get_trials(deepcopy=False):
                return 0
            anchors = [self.space.largest(), self.space.smallest()][: self.cfg.trials]
            for a in anchors:
                queue(st, self.pspace.params_of(Design(a, self.knobs)), {"anchor": True})
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

    def _results(self, st: optuna.Study, screen, measured: int, timing: dict) -> SearchResult:
        from .results import summarize, write_results
        cfg, objs = self.cfg, self.objs
        rows = summarize(st, objs)
        pred = screen.report() if screen is not None else None
        if pred is not None:
            log.info("predictor (%s): held-out Kendall tau %s on %d archs", pred["metric"], pred["kendall"], pred["n"])
        files: list[Path] = []
        hv = front_hypervolume(rows, objs, self.reference)
        if cfg.write and self.out is not None:
            files = write_results(self.out, rows, objs, plots=cfg.plots, reference=self.reference,
                                  latency_max=cfg.latency_max,
                                  extra={"predictor": pred, "reachable": self.reach.__dict__,
                                         "elapsed_s": time.perf_counter() - self.t0, "timing": timing})
        front = [r for r in rows if r.get("pareto")]
        return SearchResult(out=self.out, study=st, trials=len(rows), feasible=sum(r["feasible"] for r in rows),
                            measured=measured, pareto=front, predictor=pred, reachable=self.reach.__dict__,
                            elapsed_s=time.perf_counter() - self.t0, files=files, hypervolume=hv,
                            hypervolume_reference=self.reference, timing=timing)


@dataclass
class _Job:
    """A batch in flight: its pool handles (the first measurement, then any repeats)."""

    batch: Any
    handles: list
    results: dict = field(default_factory=dict)  # handle -> result
    rounds: list = field(default_factory=list)   # (indices into batch.to_measure, handle) measured again

    def final(self, repeats, learn: bool = True) -> dict:
        """The batch's quality: each arch's mean over its measurements (``Repeats.combine``)."""
        first = self.results[self.handles[0]]
        if repeats is None or not first:
            return first
        again: dict[int, list] = {}
        for idx, h in self.rounds:
            res = self.results[h]
            for pos, i in enumerate(idx):
                again.setdefault(i, []).append({c: res[c][pos] for c in res})
        return repeats.combine(first, again, len(self.batch.to_measure), learn=learn)


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


def _bar(progress: bool, total: int, initial: int):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, unit="trial", desc="search", dynamic_ncols=True)
