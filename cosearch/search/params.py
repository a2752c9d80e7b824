"""A trial's parameters <-> a design (an ``Arch`` plus accelerator parameters).

Every gene of ``space.genes()`` is one categorical Optuna parameter, *including the genes
of layers the arch does not use* (layer 3's FFN width when the arch has 2 layers). That
keeps the parameter space fixed, which Optuna's samplers need (NSGA-II crossover and TPE
compare trials parameter by parameter; with conditional parameters NSGA-II would draw the
genes of deeper layers at random instead of inheriting them), at the price of parameters
that do not change the arch: two parameter sets can decode to the same arch. The search
collapses them by the design key (:meth:`Design.key`): a proposal whose design the study
already holds is failed at once and replaced, so every finished trial is a distinct design.

Accelerator parameters (``--cosearch-hw``) are categorical parameters named ``hw.<knob>``
with the choices of the preset's ``codesign`` section.

In the study (SQLite, PostgreSQL) a trial keeps its parameters inside one user attribute,
not as Optuna parameters: Optuna's RDB storage writes a row and runs two queries per
parameter or attribute, and the 58 genes of ``multi30k`` took 95 ms per trial on SQLite
here (12 ms as one attribute), which capped a search at a few trials a second whatever
the GPU did. So a trial has two user attributes: ``design`` (``genes``: the parameters;
``arch``, ``digest``, ``hw_params``, ``owner``: the process running it, how it was
proposed), written with the trial, and ``result`` (``source``, ``metrics``), written
when its quality is known; :func:`trial_attrs` reads them as one
flat dict, and :func:`trial_params` the parameters (studies made before hold flat
attributes and Optuna parameters: both read those too). The samplers still see ordinary
parameters: they run on an in-memory mirror of the study (``proposers.OptunaProposer``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from optuna.distributions import CategoricalDistribution

from ..errors import UserError
from ..space import Arch, SearchSpace

HW_PREFIX = "hw."
#: a trial's parameters, inside its ``design`` attribute
GENES = "genes"
#: the user attributes written once a trial's quality is known (the rest go into ``design``)
RESULT_KEYS = ("source", "metrics")
_PACKS = ("design", "result")


def pack(attrs: dict) -> dict:
    """Flat trial attributes -> the study's ``design`` / ``result`` (see above)."""
    out: dict = {"design": {}}
    for k, v in attrs.items():
        if k in RESULT_KEYS:
            out.setdefault("result", {})[k] = v
        else:
            out["design"][k] = v
    return out


def trial_attrs(trial) -> dict[str, Any]:
    """A trial's user attributes as one flat dict (packed or not)."""
    u = trial.user_attrs
    flat = {k: v for k, v in u.items() if k not in _PACKS}
    for name in _PACKS:
        flat.update(u.get(name) or {})
    return flat


def trial_params(trial) -> dict[str, Any]:
    """A finished or queued trial's parameters: its genes, else its Optuna parameters."""
    genes = (trial.user_attrs.get("design") or {}).get(GENES, trial.user_attrs.get(GENES))
    if genes is not None:
        return dict(genes)
    # a study made before: Optuna parameters, or (queued with enqueue_trial) Optuna's fixed_params
    return dict(trial.params or trial.system_attrs.get("fixed_params") or {})


def gene_name(key: tuple) -> str:
    """("decoder", "ffn_dim", 2) -> "decoder.ffn_dim.2" (the Optuna parameter name)."""
    return ".".join(str(k) for k in key)


def accelerator_choices(hw) -> dict[str, list]:
    """The co-design knobs of an accelerator and their choices (empty: nothing to search)."""
    from ..hardware import accelerator_space
    return {k: list(v) for k, v in accelerator_space(hw).choices().items() if len(v) > 1}


@lru_cache(maxsize=1 << 16)
def arch_json(arch: Arch) -> str:
    """``arch.to_json()``, built without ``dataclasses.asdict`` (whose deep copies cost ~1 ms
    per arch) and memoised: the search needs it for every trial. Identical output."""
    d = {"decoder": [dict(vars(la)) for la in arch.decoder], "decoder_embed_dim": arch.decoder_embed_dim,
         "encoder": [dict(vars(la)) for la in arch.encoder], "encoder_embed_dim": arch.encoder_embed_dim}
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def arch_digest(arch: Arch) -> str:
    """``arch.digest()`` through the memoised :func:`arch_json`."""
    return hashlib.sha1(arch_json(arch).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Design:
    """What one trial evaluates: a sub-network and (when co-searching) accelerator knobs."""

    arch: Arch
    hw_params: tuple = ()  # sorted (knob, value) pairs; hashable

    @property
    def hw_dict(self) -> dict:
        return dict(self.hw_params)

    def key(self) -> str:
        """Cache key: the arch digest plus the accelerator knobs."""
        return arch_digest(self.arch) + (json.dumps(self.hw_params) if self.hw_params else "")


@dataclass
class ParamSpace:
    """The fixed Optuna parameter space of a search; decodes parameters into designs."""

    space: SearchSpace
    hw_choices: dict[str, list] = field(default_factory=dict)

    def __post_init__(self):
        self._genes = [(gene_name(k), k, tuple(opts)) for k, opts in self.space.genes()]
        self._dists = {n: CategoricalDistribution(list(opts)) for n, _, opts in self._genes}
        for k, opts in self.hw_choices.items():
            if not opts:
                raise UserError(f"accelerator knob {k!r} has no choices; give a non-empty list")
            self._dists[HW_PREFIX + k] = CategoricalDistribution(list(opts))

    @classmethod
    def build(cls, space: SearchSpace, hw=None, cosearch_hw: bool = False) -> "ParamSpace":
        choices = accelerator_choices(hw) if (cosearch_hw and hw is not None) else {}
        if cosearch_hw and not choices:
            raise UserError(f"--cosearch-hw: accelerator {getattr(hw, 'name', hw)!r} has no codesign "
                            "choices; add a 'codesign' section (rows, cols, ...) to its YAML")
        return cls(space, choices)

    # ---- Optuna side
    def distributions(self) -> dict[str, CategoricalDistribution]:
        return dict(self._dists)

    def names(self) -> list[str]:
        return list(self._dists)

    def suggest(self, trial) -> Design:
        """Ask every parameter of a live ``optuna.Trial`` and decode the design."""
        params = {n: trial.suggest_categorical(n, d.choices) for n, d in self._dists.items()}
        return self.design(params)

    # ---- plain dicts
    def design(self, params: dict[str, Any]) -> Design:
        """Parameters (a trial's ``params``) -> the design they describe."""
        try:
            genes = {key: params[n] for n, key, _ in self._genes}
        except KeyError as e:
            raise UserError(f"trial parameters lack {e.args[0]!r}: the study was made for another "
                            "search space; use a new --study or --out") from None
        arch = self.space._from_genes(genes)
        hw = tuple(sorted((n[len(HW_PREFIX):], params[n]) for n in self._dists if n.startswith(HW_PREFIX)))
        return Design(arch, hw)

    def params_of(self, design: Design, rng=0) -> dict[str, Any]:
        """A full parameter dict for a design; genes of absent layers are drawn from ``rng``."""
        genes = self.space._to_genes(design.arch, np.random.default_rng(rng))
        out = {n: genes[key] for n, key, _ in self._genes}
        for k, v in design.hw_params:
            out[HW_PREFIX + k] = v
        for n, d in self._dists.items():  # knobs the design leaves open: first choice
            out.setdefault(n, d.choices[0])
        return out

    def random_params(self, rng: np.random.Generator) -> dict[str, Any]:
        return {n: d.choices[rng.integers(len(d.choices))] for n, d in self._dists.items()}
