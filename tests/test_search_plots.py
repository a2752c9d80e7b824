"""Search plots: the latency bound is drawn, predicted points are marked apart from measured ones."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from cosearch.search.objectives import parse_objectives

pytestmark = pytest.mark.xdist_group("search")


def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "number": [0, 1, 2, 3, 4],
        "feasible": [True, True, True, False, True],
        "source": ["measured", "measured", "predicted", "measured", "predicted"],
        "quality": [3.0, 2.5, 2.0, 1.0, 2.8],
        "latency_ms": [2.0, 4.0, 3.0, 9.0, 1.0],
        "size_mb": [1.0, 2.0, 1.5, 5.0, 0.5],
        "latency": [2.0, 4.0, 3.0, 9.0, 1.0], "size": [1.0, 2.0, 1.5, 5.0, 0.5],  # the objective columns
        "pareto": [True, True, False, False, False],
        "weight_bits": ["8"] * 5, "act_bits": ["8"] * 5})


def test_latency_plot_draws_the_bound_and_marks_predicted_points():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cosearch.search.plots import _scatter_png
    fig, ax = plt.subplots()
    _scatter_png(ax, frame(), "latency_ms", "quality", "size_mb", "latency", "loss", "size", fig, bound=5.0)
    bounds = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [5.0, 5.0]]
    assert len(bounds) == 1 and "5 ms" in bounds[0].get_label()
    by_label = {c.get_label(): c for c in ax.collections}
    predicted = by_label["predicted, not measured"]
    assert sorted(map(tuple, predicted.get_offsets())) == [(1.0, 2.8), (3.0, 2.0)]  # the feasible predicted rows
    measured = by_label["measured"]
    assert sorted(map(tuple, measured.get_offsets())) == [(2.0, 3.0), (4.0, 2.5)]  # never a predicted row
    plt.close(fig)
    fig, ax = plt.subplots()  # no bound given: no line
    _scatter_png(ax, frame(), "latency_ms", "quality", "size_mb", "latency", "loss", "size", fig)
    assert not [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [5.0, 5.0]]
    plt.close(fig)


def test_html_and_redraw_take_the_bound_from_search_json(tmp_path):
    from cosearch.search.plots import draw
    (tmp_path / "search.json").write_text(json.dumps({"latency_max": 5.0}))
    files = draw(tmp_path, frame(), parse_objectives("quality,latency,size"))
    page = (tmp_path / "plots.html").read_text()
    assert "predicted, not measured" in page and "latency bound 5 ms" in page
    assert {f.name for f in files} >= {"pareto_latency.png", "pareto_size.png", "plots.html"}
    (tmp_path / "search.json").write_text(json.dumps({"latency_max": None}))
    draw(tmp_path, frame(), parse_objectives("quality,latency,size"))
    assert "latency bound" not in (tmp_path / "plots.html").read_text()
