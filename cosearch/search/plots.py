"""Plots of a search: PNG (matplotlib, headless) and one interactive HTML page (plotly).

* ``pareto_size.png``: quality vs weight size, every feasible trial faint, the Pareto front
  bold, coloured by latency;
* ``pareto_latency.png``: quality vs latency, coloured by weight size, with the latency
  bound (``--latency-max``) as a dashed line;
* ``hypervolume.png``: hypervolume of the feasible measured trials vs trials.

``plots.html`` holds the same three figures, built with ``plotly.graph_objects`` (hover
shows the trial number, bits and costs). It embeds plotly.js once (about 4.7 MB) so it
opens offline; three separate pages, or Optuna's own figures, would embed it three times.

Measured points are filled circles; trials whose quality the predictor only guessed
(``source=predicted``) are hollow triangles, never on the front; infeasible ones grey crosses.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .front import FRONT_SOURCES
from .hypervolume import hv_curve
from .objectives import OBJECTIVES, Objective

HTML = "plots.html"


def _quality_col(df: pd.DataFrame, objectives: Sequence[Objective]) -> tuple[str, str]:
    for o in objectives:
        if o.column in ("loss", "bleu"):
            return o.name, o.label
    o = objectives[0]
    return o.name, o.label


def _usable(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["feasible"].astype(bool) & df["source"].isin(FRONT_SOURCES)]


def _predicted(df: pd.DataFrame) -> pd.DataFrame:
    """Feasible trials whose quality is a predictor's guess (never measured)."""
    return df[df["feasible"].astype(bool) & ~df["source"].isin(FRONT_SOURCES)]


def _scatter_png(ax, df, x, y, color, xlabel, ylabel, clabel, fig, bound=None):
    import matplotlib.pyplot as plt  # noqa: F401
    ok = _usable(df)
    front = ok[ok["pareto"].astype(bool)].sort_values(x)
    bad = df[~df["feasible"].astype(bool)]
    guessed = _predicted(df)
    if len(bad):
        ax.scatter(bad[x], bad[y], s=6, c="lightgrey", marker="x", label="infeasible")
    if len(guessed):
        ax.scatter(guessed[x], guessed[y], s=14, marker="^", facecolors="none", edgecolors="tab:orange",
                   linewidths=0.6, alpha=0.6, label="predicted, not measured")
    if len(ok):
        ax.scatter(ok[x], ok[y], s=8, c=ok[color], cmap="viridis", alpha=0.25, label="measured")
    if len(front):
        sc = ax.scatter(front[x], front[y], s=30, c=front[color], cmap="viridis", edgecolors="k",
                        label="Pareto front (all objectives)")
        fig.colorbar(sc, ax=ax, label=clabel)
    if bound is not None:
        ax.axvline(bound, color="tab:red", ls="--", lw=1, label=f"latency bound {bound:g} ms")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def _fixed_reference(out: Path):
    """The search's fixed hypervolume reference from summary.json (None: not recorded)."""
    import json
    try:
        return json.loads((Path(out) / "summary.json").read_text()).get("hypervolume_reference")
    except (OSError, ValueError):
        return None


def _recorded_bound(out: Path):
    """The latency bound recorded in search.json (None: none given, or not recorded)."""
    import json
    try:
        return json.loads((Path(out) / "search.json").read_text()).get("latency_max")
    except (OSError, ValueError, AttributeError):
        return None


def draw(out: str | Path, df: pd.DataFrame, objectives: Sequence[Objective], html: bool = True,
         latency_max: float | None = None) -> list[Path]:
    """Write the PNGs (and ``plots.html``) into ``out``; returns their paths. ``latency_max``
    defaults to the bound recorded in the folder's search.json."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    bound = latency_max if latency_max is not None else _recorded_bound(out)
    q, qlabel = _quality_col(df, objectives)
    lat, size = OBJECTIVES["latency"], OBJECTIVES["size"]
    files = []
    specs = [("pareto_size.png", "size_mb", size.label, "latency_ms", lat.label),
             ("pareto_latency.png", "latency_ms", lat.label, "size_mb", size.label)]
    for name, x, xl, c, cl in specs:
        fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
        _scatter_png(ax, df, x, q, c, xl, qlabel, cl, fig, bound=bound if x == "latency_ms" else None)
        ax.set_title(f"{qlabel} vs {xl.split(' (')[0]}")
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        files.append(out / name)
    at, hv, ref = hv_curve(df, objectives, reference=_fixed_reference(out))
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    if len(at):
        ax.plot(at, hv, lw=1.5)
    ax.set_xlabel("measured trials")
    ax.set_ylabel("hypervolume (" + ", ".join(o.name for o in objectives) + ")")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "hypervolume.png")
    plt.close(fig)
    files.append(out / "hypervolume.png")
    if html:
        files.append(_html(out, df, q, qlabel, specs, at, hv, bound))
    return files


def _html(out: Path, df, q, qlabel, specs, at, hv, bound=None) -> Path:
    import plotly.graph_objects as go

    from ..training.rundir import atomic_write_text
    ok = _usable(df)
    hover = [f"trial {n}<br>bits {w}<br>act {a}<br>{qlabel.split(' (')[0]} {v:.4g}<br>"
             f"latency {lt:.4g} ms<br>size {s:.4g} MB" for n, w, a, v, lt, s in
             zip(ok["number"], ok.get("weight_bits", ""), ok.get("act_bits", ""), ok[q], ok["latency_ms"],
                 ok["size_mb"])]
    figs = []
    for _, x, xl, c, cl in specs:
        front = ok["pareto"].astype(bool).to_numpy()
        fig = go.Figure()
        fig.add_trace(go.Scattergl(x=ok[x], y=ok[q], mode="markers", name="measured",
                                   marker=dict(size=5, color=ok[c], colorscale="Viridis", opacity=0.3),
                                   text=hover, hoverinfo="text"))
        guessed = _predicted(df)
        if len(guessed):
            fig.add_trace(go.Scattergl(x=guessed[x], y=guessed[q], mode="markers", name="predicted, not measured",
                                       marker=dict(size=6, symbol="triangle-up-open", color="darkorange"),
                                       text=[f"trial {n} (predicted)" for n in guessed["number"]], hoverinfo="text"))
        if bound is not None and x == "latency_ms":
            fig.add_vline(x=bound, line_dash="dash", line_color="red", annotation_text=f"latency bound {bound:g} ms")
        fig.add_trace(go.Scatter(x=ok[x][front], y=ok[q][front], mode="markers", name="Pareto front",
                                 marker=dict(size=10, color=ok[c][front], colorscale="Viridis",
                                             line=dict(width=1, color="black"), colorbar=dict(title=cl)),
                                 text=list(np.array(hover, dtype=object)[front]), hoverinfo="text"))
        fig.update_layout(title=f"{qlabel} vs {xl}", xaxis_title=xl, yaxis_title=qlabel, height=480)
        figs.append(fig)
    fig = go.Figure(go.Scatter(x=at, y=hv, mode="lines", name="hypervolume"))
    fig.update_layout(title="hypervolume vs trials", xaxis_title="measured trials",
                      yaxis_title="hypervolume", height=380)
    figs.append(fig)
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>cosearch search</title></head><body>"
            + "".join(parts) + "</body></html>")
    atomic_write_text(out / HTML, page)
    return out / HTML
