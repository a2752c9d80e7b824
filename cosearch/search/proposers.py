"""Proposers: where a search's next designs come from.

``OptunaProposer`` drives Optuna's samplers through ask/tell and keeps every finished trial
a distinct design (a repeat is failed at once and replaced by an unseen neighbour);
``EvolutionAdapter`` gives the HAT-style evolution the same interface. ``fail_stale`` frees
trials a killed process of this machine left RUNNING.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import optuna
from optuna.trial import TrialState

from ..errors import UserError
from .config import SAMPLERS
from .evolution import EvolutionProposer
from .objectives import Outcome
from .params import Design, ParamSpace


@dataclass
class Proposal:
    design: Design
    params: dict | None = None
    trial: Any = None


def owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def alive_count(study: optuna.Study) -> int:
    """Trials that count towards the total: finished or being evaluated (queued ones do not)."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)))


class OptunaProposer:
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

    def ask(self, k: int) -> list[Proposal]:
        with self.lock():
            fail_stale(self.study)
            taken, live = self._taken()
            left = self.total - live
            out: list[Proposal] = []
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
                    for name, v in (("owner", owner_tag()), ("key", key)):  # digest: set when measured
                        t.set_user_attr(name, v)
                    out.append(Proposal(d, trial=t))
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

    def record(self, props: Sequence[Proposal], outcomes: Sequence[Outcome], attrs: Sequence[dict]):
        for p, o, a in zip(props, outcomes, attrs):
            for k, v in o.constraints.items():
                p.trial.set_constraint(k, v)
            for k, v in a.items():
                p.trial.set_user_attr(k, v)
            self.study.tell(p.trial, o.values)


class EvolutionAdapter:
    def __init__(self, evo: EvolutionProposer):
        self.evo = evo
        self.pending = evo.pending  # its candidates in flight (they are not in the study yet)

    def ask(self, k: int) -> list[Proposal]:
        return [Proposal(d, params=p) for p, d in self.evo.ask(k)]

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


def fail_stale(study: optuna.Study) -> int:
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
