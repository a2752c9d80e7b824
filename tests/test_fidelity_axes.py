"""cosearch.fidelity.axes: which arch axes a supernet weighs unlike training alone."""
from __future__ import annotations

import pytest

from cosearch.fidelity.axes import arch_axes, axis_disagreement, clear_disagreements


def test_an_arch_has_axes_per_stack_depth_per_layer_field_and_top_level_number():
    arch = {"encoder": [{"ffn": 2, "bits": 4, "kind": "a", "tied": False}, {"ffn": 4, "bits": 8}], "dim": 16,
            "name": "x", "tied": True}
    assert arch_axes(arch) == {"encoder.depth": 2.0, "encoder.bits": 6.0, "encoder.ffn": 3.0, "dim": 16.0}
    assert arch_axes({"layers": [], "dim": 8}) == {"layers.depth": 0.0, "dim": 8.0}
    assert arch_axes("a0") == {} and arch_axes({"tags": ["x", "y"]}) == {"tags.depth": 2.0}
    # a field that is not a number in every layer that has it is no axis
    mixed = {"layers": [{"a": 1, "b": 2}, {"a": "x", "b": True}, {"b": 4}]}
    assert arch_axes(mixed) == {"layers.depth": 3.0}
    assert arch_axes({"layers": [{"b": 2}, {}, {"b": 4}]}) == {"layers.depth": 3.0, "layers.b": 3.0}


def _archs(depths, widths):
    # "dim" comes first in each dict, so the depth axis is first only if the rows are sorted
    return [{"dim": w, "layers": [{"width": w}] * d, "vocab": 100} for d, w in zip(depths, widths)]


def test_an_axis_the_supernet_ignores_is_found_and_sorted_first():
    depths, widths = [1, 2, 3, 4, 5, 6, 7, 8], [8, 1, 7, 2, 6, 3, 5, 4]
    reference = [1.0, 2, 3, 4, 5, 6, 7, 8]  # deeper: worse when trained alone (depth tau +1)
    inherited = [1.0, 2, 3, 4, 5, 6, 7, 8][::-1]  # the supernet: deeper, better (depth tau -1)
    rows = axis_disagreement(_archs(depths, widths), inherited, reference, n_boot=200)
    assert [r["axis"] for r in rows][0] == "layers.depth"
    assert {r["axis"] for r in rows} == {"dim", "layers.depth", "layers.width"}  # vocab is the same everywhere
    depth = rows[0]
    assert depth["n"] == 8 and depth["inherited"] == pytest.approx(-1.0) and depth["standalone"] == pytest.approx(1.0)
    assert depth["difference"] == pytest.approx(-2.0) and depth["difference_ci"] == pytest.approx([-2.0, -2.0])
    width = next(r for r in rows if r["axis"] == "layers.width")  # widths 8,1,7,2,6,3,5,4 against a rising loss: 12 of 28 pairs concordant, tau -4/28
    assert width["standalone"] == pytest.approx(-4 / 28) and width["inherited"] == pytest.approx(4 / 28)
    assert width["difference"] == pytest.approx(8 / 28) and width["difference_ci"][0] < 0 < width["difference_ci"][1]
    assert [r["axis"] for r in clear_disagreements(rows)] == ["layers.depth"]
    # sorted by the size of the difference, whatever its sign: swapped, depth is +2 and still first
    swapped = axis_disagreement(_archs(depths, widths), reference, inherited, n_boot=50)
    assert swapped[0]["axis"] == "layers.depth" and swapped[0]["difference"] == pytest.approx(2.0)


def test_agreeing_rankers_have_no_clear_axis_and_missing_losses_drop_out():
    depths, widths = [1, 2, 3, 4, 5, 6], [3, 1, 2, 6, 5, 4]
    loss = [1.0, 2, 3, 4, 5, 6]
    rows = axis_disagreement(_archs(depths, widths), loss, [*loss[:5], None], n_boot=100)
    assert all(r["n"] == 5 for r in rows)
    assert all(r["difference"] == 0.0 and r["difference_ci"] == [0.0, 0.0] for r in rows)
    assert clear_disagreements(rows) == []
    assert axis_disagreement(_archs([1, 2], [1, 2]), [1.0, 2.0], [2.0, 1.0]) == []  # too few archs to say
