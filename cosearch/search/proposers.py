"""Proposers: where a search's next designs come from, and how they enter the study.

``OptunaProposer`` runs Optuna's sampler on an in-memory mirror of the study and writes to
the study (SQLite, PostgreSQL, a journal) only what must last: each proposed design once,
as a RUNNING trial created in one call with its owner (``create_new_trial`` with a
template: a trial never exists without an owner), then its result. Sampling against the
study itself read every running trial back from the database for each parameter of each
trial (~0.1 s per trial on SQLite, worse the more trials are in flight: K measuring
workers starved). Finished trials of other processes join the mirror at every round.

Every finished trial is a distinct design: a proposal that decodes to a design the study
holds is failed in the mirror only and replaced by an unseen neighbour of it.
``EvolutionAdapter`` gives the HAT-style evolution the same interface. ``fail_stale``
fails the trials of dead processes and queues their designs again.
"""
from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import optuna
from optuna.trial import TrialState, create_trial

from ..errors import UserError
from .config import SAMPLERS
from .evolution import EvolutionProposer
from .objectives import Outcome
from .params import GENES, RESULT_KEYS, Design, ParamSpace, pack, trial_attrs, trial_params

#: user attributes a queued design keeps when it is proposed again
KEPT_ATTRS = ("anchor", "fallback")
LIVE = (TrialState.COMPLETE, TrialState.RUNNING)


@dataclass
class Proposal:
    design: Design
    params: dict | None = None
    trial: Any = None                  # the mirror's trial (OptunaProposer)
    trial_id: int | None = None        # the study's trial, once reserved
    attrs: dict = field(default_factory=dict)  # user attributes known when proposed


def owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def alive_count(study: optuna.Study) -> int:
    """Trials that count towards the total: finished or being evaluated (queued ones do not)."""
    return len(study.get_trials(deepcopy=False, states=LIVE))


def _key(pspace: ParamSpace, t) -> str:
    k = trial_attrs(t).get("key")
    return k if k is not None else pspace.design(trial_params(t)).key()


class OptunaProposer:
    """Optuna's samplers through ask/tell on a mirror; the study gets reservations and results.

    ``ask`` and ``reserve`` run under the study lock (one process of this machine at a
    time); ``record`` writes results. Queued trials of the study (the anchors, retries of
    dead processes' trials) are taken first: claimed (``WAITING -> RUNNING``, which only one
    process can win) and owned at once."""

    def __init__(self, study: optuna.Study, storage, pspace: ParamSpace, total: int, sampler, seed: int | None,
                 server: bool = False, retries: int = 4):
        self.study, self.storage, self.pspace, self.total = study, storage, pspace, total
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.mirror = optuna.create_study(directions=[d.name.lower() for d in study.directions], sampler=sampler)
        self.rng = np.random.default_rng(seed)
        self.retries = retries
        self.server = server  # no file lock: check the count again after reserving
        self.owner = owner_tag()
        self._dists = pspace.distributions()
        self._mirrored: set[int] = set()  # study trial numbers the mirror holds
        self._keys: dict[int, str] = {}   # study trial number -> design key
        self.inflight: dict[int, Proposal] = {}  # trial id -> reserved, not yet recorded
        self.live = 0                     # trials counting towards the total at the last look
        self.beat = Heartbeat(storage)

    # ---- the study as it is now
    def _snapshot(self) -> tuple[set, list]:
        """Sync the mirror; returns the taken design keys and the queued trials."""
        trials = self.study.get_trials(deepcopy=False)
        taken, waiting, live = set(), [], 0
        for t in trials:
            if t.state in LIVE:
                live += 1
                if t.number not in self._keys:
                    self._keys[t.number] = _key(self.pspace, t)
                taken.add(self._keys[t.number])
                if t.state == TrialState.COMPLETE and t.number not in self._mirrored:
                    self._mirrored.add(t.number)
                    if trial_attrs(t).get("owner") != self.owner:  # ours are in the mirror already
                        self.mirror.add_trial(create_trial(
                            params=trial_params(t), distributions=self._dists, values=t.values,
                            system_attrs=t.system_attrs))
            elif t.state == TrialState.WAITING:
                waiting.append(t)
        self.live = live
        return taken, waiting

    def pending(self) -> int:
        return 0  # reserved trials are RUNNING in the study and counted in ``live``

    def left(self) -> int:
        return self.total - self.live

    def refresh(self) -> int:
        """Trials still to start, from a fresh look at the study."""
        self._snapshot()
        return self.left()

    # ---- proposing
    def ask(self, k: int) -> list[Proposal]:
        """Up to ``k`` proposals of designs the study lacks (not yet in the study: see ``reserve``)."""
        taken, waiting = self._snapshot()
        want = min(k, self.left())
        out = [p for p in (self._claim(t, taken) for t in waiting[: max(want, 0)]) if p is not None]
        queued: set = set()  # replacements queued in the mirror (each round asks them all)
        for attempt in range(self.retries + 1):
            n = want - len(out)
            if n <= 0:
                break
            if attempt == self.retries:  # the sampler keeps repeating itself: new random designs
                for _ in range(n - len(queued)):
                    p = self._unseen_random(taken | queued)
                    if p is not None:
                        queued.add(self.pspace.design(p).key())
                        self.mirror.enqueue_trial(p, user_attrs={"fallback": "random"})
            asked, queued = [self.mirror.ask() for _ in range(n)], set()
            for t in asked:
                d = self.pspace.suggest(t)
                key = d.key()
                if key in taken:  # failed in the mirror only: the study never sees a repeat
                    t.set_user_attr("duplicate", True)
                    self.mirror.tell(t, state=TrialState.FAIL)
                    p = self._unseen_neighbour(t.params, taken | queued)
                    if p is not None and attempt < self.retries:  # the mirror's queue ends empty
                        queued.add(self.pspace.design(p).key())
                        self.mirror.enqueue_trial(p, user_attrs={"fallback": "neighbour"})
                    continue
                taken.add(key)
                attrs = {k: v for k, v in t.user_attrs.items() if k in KEPT_ATTRS}
                out.append(Proposal(d, params=t.params, trial=t, attrs=attrs))
        return out

    def _claim(self, t, taken: set) -> Proposal | None:
        """A queued trial of the study, made ours (None: a repeat, or another process won it)."""
        tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
        key = _key(self.pspace, t)
        try:
            if key in taken:  # e.g. a retry of a design another process finished meanwhile
                self.storage.set_trial_user_attr(tid, "duplicate", True)
                self.storage.set_trial_state_values(tid, TrialState.FAIL)
                return None
            if not self.storage.set_trial_state_values(tid, TrialState.RUNNING):
                return None
            # the owner follows the claim: a process killed between the two leaves an unowned
            # RUNNING trial, which the next search to open the study fails and queues again
            self.storage.set_trial_user_attr(tid, "design", {**(t.user_attrs.get("design") or {}),
                                                             "owner": self.owner})
        except optuna.exceptions.UpdateFinishedTrialError:
            return None  # another process failed it (stale) or took it first
        taken.add(key)
        self.live += 1
        params = trial_params(t)
        self.mirror.enqueue_trial(params)
        m = self.mirror.ask()
        d = self.pspace.suggest(m)
        flat = trial_attrs(t)
        attrs = {k: v for k, v in flat.items() if k in KEPT_ATTRS}
        retry_of = t.system_attrs.get("failed_trial", flat.get("retry_of"))  # Optuna's, or ours
        if retry_of is not None:
            attrs["retry_of"] = retry_of
        p = self.inflight[tid] = Proposal(d, params=params, trial=m, trial_id=tid, attrs=attrs)
        return p

    def reserve(self, props: Sequence[Proposal], attrs: Sequence[dict], constraints: Sequence[dict]) -> list:
        """Write the proposals into the study as RUNNING trials owned by this process, each
        in one call; returns those that may run (on a server database another machine may
        have taken the last slots meanwhile: ours beyond the total are failed at once)."""
        running = {t.number: t for t in self.mirror.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        kept = []
        for p, a, c in zip(props, attrs, constraints):
            a = p.attrs = {**p.attrs, **a, "owner": self.owner, "key": p.design.key(), GENES: p.params}
            if p.trial_id is None:
                p.trial_id = self.storage.create_new_trial(self.study_id, template_trial=create_trial(
                    state=TrialState.RUNNING, user_attrs=pack(a),
                    # the sampler's own (e.g. the NSGA-II generation): a resumed mirror needs them
                    system_attrs={k: v for k, v in running[p.trial.number].system_attrs.items()
                                  if k != "fixed_params"},
                    constraints=c))
                self.live += 1
            else:  # claimed: already RUNNING and owned
                try:
                    self.storage.set_trial_user_attr(p.trial_id, "design", pack(a)["design"])
                    trial = optuna.trial.Trial(self.study, p.trial_id)
                    for k, v in c.items():
                        trial.set_constraint(k, v)
                except optuna.exceptions.UpdateFinishedTrialError:
                    # a search opening the study saw our claim before its owner was set, failed
                    # it as unowned and queued the design again: that retry runs it, not we
                    self.live -= 1
                    self._fail(p)
                    continue
            self.inflight[p.trial_id] = p
            self.beat.add(p.trial_id)
            kept.append(p)
        return self._over_budget(kept) if self.server else kept

    def _over_budget(self, props: Sequence[Proposal]) -> list:
        """Count again after reserving; fail ours beyond the total (the last ones)."""
        round_keys = {p.design.key() for p in props}
        live = self.study.get_trials(deepcopy=False, states=LIVE)
        others = sum(1 for t in live if (a := trial_attrs(t)).get("owner") != self.owner
                     or a.get("key") not in round_keys)
        room = max(0, self.total - others)
        for p in props[room:]:
            self.storage.set_trial_user_attr(p.trial_id, "over_budget", True)
            self._fail(p)
        return list(props[:room])

    def _fail(self, p: Proposal) -> None:
        self.inflight.pop(p.trial_id, None)
        self.beat.discard(p.trial_id)
        try:
            self.storage.set_trial_state_values(p.trial_id, TrialState.FAIL)
            self.live -= 1
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
        try:
            self.mirror.tell(p.trial, state=TrialState.FAIL)
        except (ValueError, RuntimeError):
            pass  # told already

    def abandon(self) -> None:
        """Fail every trial of this process still RUNNING (a search stopped by Ctrl-C or an
        error): read from the study, so a trial created or claimed the instant before the
        interrupt is found too. The study keeps no RUNNING trial of a process that is gone."""
        self.beat.stop()
        self.inflight.clear()
        try:
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial_attrs(t).get("owner") == self.owner:
                    try:
                        self.study.tell(t.number, state=TrialState.FAIL)
                    except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                        pass  # finished meanwhile
        except Exception:  # noqa: BLE001 - a storage that cannot write: the next run's fail_stale
            pass

    def _unseen_neighbour(self, params: dict, taken: set, tries: int = 50) -> dict | None:
        """``params`` with one gene changed so that the design is one the study lacks
        (genes of absent layers change nothing, so several tries may be needed)."""
        names = [n for n in params if n in self._dists and len(self._dists[n].choices) > 1]
        for _ in range(tries if names else 0):
            n = names[self.rng.integers(len(names))]
            others = [c for c in self._dists[n].choices if c != params[n]]
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

    # ---- results
    def record(self, props: Sequence[Proposal], outcomes: Sequence[Outcome], attrs: Sequence[dict]):
        for p, o, a in zip(props, outcomes, attrs):
            for k, v in o.constraints.items():
                p.trial.set_constraint(k, v)
            self.mirror.tell(p.trial, o.values)
            self.inflight.pop(p.trial_id, None)
            self.beat.discard(p.trial_id)
            try:  # (the rest of ``a`` was written with the reservation)
                self.storage.set_trial_user_attr(p.trial_id, "result", {k: a[k] for k in RESULT_KEYS if k in a})
                self.storage.set_trial_state_values(p.trial_id, TrialState.COMPLETE, o.values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # failed meanwhile as stale (no heartbeat in time): its retry is queued, and
                # this process's cache gives it the same quality without measuring again
                self.live -= 1


class Heartbeat:
    """Optuna's RDB heartbeat for every trial this process has in flight (one thread for all
    of them; Optuna's own starts a thread per trial inside ``study.optimize``). Stale
    trials are found and failed by Optuna (``fail_stale_trials``), never here."""

    def __init__(self, storage):
        from .storage import heartbeat_interval
        self.storage, self.interval = storage, heartbeat_interval(storage)
        self.ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if self.interval is not None:
            self._thread = threading.Thread(target=self._run, name="cosearch-heartbeat", daemon=True)
            self._thread.start()

    def add(self, trial_id: int) -> None:
        if self.interval is None:
            return
        self.storage.record_heartbeat(trial_id)  # at once: a trial without one is never found stale
        with self._lock:
            self.ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self.ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = sorted(self.ids)
            for tid in ids:
                try:
                    self.storage.record_heartbeat(tid)
                except Exception:  # noqa: BLE001 - the main thread meets the same storage error
                    pass

    def stop(self) -> None:
        self._stop.set()


class EvolutionAdapter:
    def __init__(self, evo: EvolutionProposer):
        self.evo = evo
        self.pending = evo.pending  # its candidates in flight (they are not in the study yet)

    def ask(self, k: int) -> list[Proposal]:
        return [Proposal(d, params=p) for p, d in self.evo.ask(k)]

    def reserve(self, props, attrs, constraints):
        return list(props)  # recorded only when finished (``add_trials``): nothing to reserve

    def abandon(self) -> None:
        pass

    def record(self, props, outcomes, attrs):
        self.evo.record([p.params for p in props], [o.values for o in outcomes],
                        [o.constraints for o in outcomes],
                        [dict(a, owner=owner_tag(), key=p.design.key()) for p, a in zip(props, attrs)])


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


def queue(study: optuna.Study, params: dict, attrs: dict) -> None:
    """Queue a design in the study (a WAITING trial, as Optuna's ``RetryHeartbeatStaleTrialCallback``
    queues one): the next proposer to ask claims it."""
    study.add_trial(create_trial(state=TrialState.WAITING, user_attrs=pack({**attrs, GENES: params})))


def fail_stale(study: optuna.Study, unowned: bool = False) -> int:
    """Fail the trials of dead processes and queue their designs again (``retry_of``), so
    each is evaluated once after all: RUNNING trials whose owner is a dead process of this
    machine (by pid), trials whose heartbeat stopped (Optuna's ``fail_stale_trials``, on
    storages with heartbeats; its callback queues the retry), and with ``unowned`` (when the
    study is opened) RUNNING trials without an owner (a process killed while claiming one)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial_attrs(t).get("owner")
        h, _, pid = (owner or "").rpartition(":")
        if (owner is None and unowned) or (h == host and pid.isdigit() and not _alive(int(pid))):
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # finished meanwhile by another process
            keep = {k: v for k, v in trial_attrs(t).items() if k in (*KEPT_ATTRS, "key")}
            queue(study, trial_params(t), {**keep, "retry_of": t.number})
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
