"""The README's fit example at small scale: the best design under the bound changes where
the weights fit the on-chip weight buffer (benchmarks/hw_fit_example.py, through the CLI)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import hw_fit_example as fe  # noqa: E402

KB = 1024
#: the largest tiny_lm: 4 layers, embed 128, FFN 512, 4 heads, all 16-bit; its weights (with
#: the 16-bit embedding) are 1.86 MB: more than a 1 MB buffer holds, less than 2 MB
LARGEST_BYTES = 1_862_656


def test_the_best_design_changes_where_the_weights_fit(tmp_path):
    res = fe.fit_example(tmp_path, trials=40)
    small, big = res["picks"]["1024"], res["picks"]["2048"]
    # both searches proposed the same designs (random sampler, one seed): only the buffer differs
    import pandas as pd
    designs = [list(pd.read_csv(tmp_path / f"search_{kb}" / "trials.csv").sort_values("number")["digest"])
               for kb in (1024, 2048)]
    assert designs[0] == designs[1] and len(designs[0]) == 40
    assert small["digest"] != big["digest"]
    # 2 MB: the largest (trial 0, the search's first anchor) fits, so it decodes within 1 ms
    assert big["trial"] == 0 and big["on_buffer"]["2048"]["size_bytes"] == LARGEST_BYTES
    assert big["latency_ms"] <= 1.0 and big["loss"] < small["loss"]
    # 1 MB: the same design streams its weights every decode step: over the bound
    on1, on2 = big["on_buffer"]["1024"], big["on_buffer"]["2048"]
    assert on1["latency_ms"] > 1.0 and on1["dram_bytes"] > 5 * on2["dram_bytes"]
    assert on2["dram_bytes"] < 3 * LARGEST_BYTES          # loaded once, not per step (30 steps)
    # the 1 MB pick fits either buffer whole: the same cost on both
    assert small["on_buffer"]["1024"]["size_bytes"] <= 1024 * KB
    assert small["on_buffer"]["1024"] == small["on_buffer"]["2048"]
