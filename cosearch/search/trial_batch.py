"""One batch of proposed trials: cost it, choose what to measure, record it in the study."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .constraints import Bounds, constraint_values
from .objectives import QUALITY_COLUMNS, QUALITY_EXTRAS, Evaluator, finite_or_none
from .params import arch_digest, arch_json


@dataclass
class TrialBatch:
    """One proposed batch on its way through measurement."""

    props: list
    cost_metrics: dict
    needs_quality: bool
    measure: np.ndarray                  # which designs get a measured quality
    to_measure: list = field(default_factory=list)   # distinct archs sent to the quality source
    predicted: np.ndarray | None = None  # the predictor's value of the quality column
    column: str | None = None            # that column
    attrs: list | None = None            # design_attrs(), built once (reservation and record)

    def design_attrs(self) -> list[dict]:
        """Each design's user attributes known before its quality: arch, digest, accelerator
        parameters, the predictor's value (fresh dicts over the ones built once)."""
        if self.attrs is None:
            self.attrs = []
            for j, p in enumerate(self.props):
                d = p.design
                a = {"arch": arch_json(d.arch), "digest": arch_digest(d.arch)}
                if d.hw_params:
                    a["hw_params"] = d.hw_dict
                if self.predicted is not None:
                    a[f"predicted_{self.column}"] = float(self.predicted[j])
                self.attrs.append(a)
        return [dict(a) for a in self.attrs]

    def reservation(self, bounds: Bounds) -> tuple[list[dict], list[dict]]:
        """What the study learns of each design when it is reserved (before any quality is
        known): its user attributes and its constraints (they depend on costs only)."""
        cons = constraint_values(self.cost_metrics, bounds)
        return self.design_attrs(), [{k: float(c[j]) for k, c in cons.items()} for j in range(len(self.props))]

    def keep(self, props: list) -> None:
        """Keep only ``props``, in their order (the others could not be reserved: beyond the
        total, or a claim lost to another process). Their archs may still be measured: the
        cache keeps the result for a later trial."""
        ids = {id(p) for p in props}
        idx = [i for i, p in enumerate(self.props) if id(p) in ids]
        self.props = [self.props[i] for i in idx]
        if self.attrs is not None:
            self.attrs = [self.attrs[i] for i in idx]
        self.cost_metrics = {k: (np.asarray(v)[idx] if np.ndim(v) else v) for k, v in self.cost_metrics.items()}
        self.measure = self.measure[idx]
        if self.predicted is not None:
            self.predicted = self.predicted[idx]


def prepare_batch(props, evaluator: Evaluator, screen, known, needs_quality) -> TrialBatch:
    """Cost a batch and decide which designs get measured; the others take the predictor's value."""
    designs = [p.design for p in props]
    batch = TrialBatch(props, evaluator.cost_metrics(designs), needs_quality, np.zeros(len(props), bool))
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


def measured_outcomes(batch: TrialBatch, res: dict, evaluator: Evaluator) -> tuple[list[int], list]:
    """The designs whose arch ``res`` measured (indices into ``batch.to_measure``) and their
    outcomes with those values: what decides which archs are measured again."""
    where = {arch_digest(a): i for i, a in enumerate(batch.to_measure)}
    rows = [(j, where[k]) for j, p in enumerate(batch.props) if (k := arch_digest(p.design.arch)) in where]
    if not rows:
        return [], []
    js, idx = [j for j, _ in rows], [i for _, i in rows]
    cm = {k: (np.asarray(v)[js] if np.ndim(v) else v) for k, v in batch.cost_metrics.items()}
    q = {c: np.asarray(res[c], dtype=np.float64)[idx] for c in (*QUALITY_COLUMNS, *QUALITY_EXTRAS) if c in res}
    return idx, evaluator.outcomes([batch.props[j].design for j in js], cm, q)


def record_batch(batch: TrialBatch, res, evaluator: Evaluator, proposer, screen, known, computed: str,
                 repeats=None) -> int:
    """Record one measured batch in the study; returns how many archs were measured.
    ``computed`` labels the rows whose quality the source computed (``QUALITY_SOURCES``)."""
    props = batch.props
    designs = [p.design for p in props]
    attrs = batch.design_attrs()
    keys = [a["digest"] for a in attrs]
    fresh = [arch_digest(a) for a in batch.to_measure]
    fresh_keys = set(fresh)
    for i, k in enumerate(fresh):
        known[k] = {c: float(v[i]) for c, v in res.items()}
    q = None
    sources = ["cost-only"] * len(designs)
    if batch.needs_quality:
        cols: dict[str, list] = {c: [] for c in QUALITY_COLUMNS}
        cols.update({c: [] for c in QUALITY_EXTRAS if c in res or any(c in known.get(k, {}) for k in keys)})
        for j, k in enumerate(keys):
            if batch.measure[j] and k in known:
                row, sources[j] = known[k], computed
            else:  # only the predicted column: a predicted loss is never stored as BLEU
                row, sources[j] = {batch.column: float(batch.predicted[j])}, "predicted"
            for c in cols:
                cols[c].append(row.get(c, float("nan")))
        q = {c: np.array(v, dtype=np.float64) for c, v in cols.items()}
    outs = evaluator.outcomes(designs, batch.cost_metrics, q)
    for j, (d, o, a) in enumerate(zip(designs, outs, attrs)):
        a.update(source=sources[j], metrics={k: finite_or_none(v) for k, v in o.metrics.items()})
        # every measured design joins the screen's front; the predictor learns (and is scored)
        # only on archs measured in this batch, once each (several designs may share one): a
        # cached arch is already among its points, and counting it again would inflate its tau
        if repeats is not None and sources[j] == computed:
            repeats.add(o.values, o.feasible)
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
