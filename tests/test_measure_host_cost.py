"""benchmarks/measure_host_cost.py --breakdown: extraction's ATen ops counted by the step that
dispatched them, with the patched methods restored afterwards."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from cosearch.model.modules import ElasticLinear
from cosearch.model.quant import WeightQuantizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_ops_are_counted_by_the_step_that_dispatched_them_and_the_methods_come_back():
    import measure_host_cost as mhc
    before = (WeightQuantizer.__dict__["frozen"], ElasticLinear.__dict__["mixed_weight"])
    wq, w = WeightQuantizer(8, (4, 16)), torch.randn(8, 16)
    x = torch.randn(4)
    alone_quant = mhc.aten_ops(lambda: wq.frozen(w, 4))
    alone_other = mhc.aten_ops(lambda: torch.add(x, 1).mul(2))
    assert alone_quant > 0 and alone_other > 0

    def extraction_like():
        torch.add(x, 1).mul(2)
        wq.frozen(w, 4)

    got = mhc.extraction_breakdown(extraction_like)
    assert got == {"weight_quantizer": alone_quant, "other": alone_other}
    # the wrappers are gone: the classes hold their own methods again, also after an error
    assert (WeightQuantizer.__dict__["frozen"], ElasticLinear.__dict__["mixed_weight"]) == before

    def failing():
        wq.frozen(w, 4)
        raise RuntimeError("boom")

    try:
        mhc.extraction_breakdown(failing)
    except RuntimeError:
        pass
    assert (WeightQuantizer.__dict__["frozen"], ElasticLinear.__dict__["mixed_weight"]) == before
