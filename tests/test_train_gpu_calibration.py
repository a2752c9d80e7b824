"""The --budget-s step-time estimate of benchmarks/train_gpu.py (a pure function of the
calibration run's metrics)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import train_gpu  # noqa: E402


def records(window_s: list[float], every: int = 4) -> list[dict]:
    out, t = [], 0.0
    for i, w in enumerate(window_s, 1):
        t += w * every
        out.append({"step": i * every, "elapsed": t})
    return out


def test_the_estimate_is_the_steady_second_half_not_the_warm_up():
    # 20 windows of 4 steps: a slow start (warm-up over the first stages), then steady 0.4 s
    w = [2.0, 1.2, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5] + [0.4] * 12
    r = train_gpu.stage_step_time(records(w), 80, (0.2, 0.5))
    assert r["step_s"] == pytest.approx(0.4)
    assert r["per_stage_step_s"]["0"] == pytest.approx(1.2)  # the float stage is warm-up only
    # a run whose second half holds one slow outlier window still reads the median
    r = train_gpu.stage_step_time(records(w[:-1] + [3.0]), 80, (0.2, 0.5))
    assert r["step_s"] == pytest.approx(0.4)


def test_language_model_flops_by_hand():
    # the MFU of the code_lm space: a decoder-only batch has no source side
    import torch

    from cosearch.space import Arch, LayerArch, SearchSpace
    space = SearchSpace.from_dict(dict(
        name="t", family="decoder_only", vocab_size=1024, max_positions=16,
        decoder=dict(embed_dim=[32], layers=[1], ffn_dim=[64], heads=[2], head_dim=16)))
    arch = Arch(decoder_embed_dim=32, decoder=(LayerArch(ffn_dim=64, heads=2),))
    # per token: q, k, v, out 4 x 2*32*32, fc1 + fc2 2 x 2*32*64; 2 x 8 tokens
    linears = (4 * 2 * 32 * 32 + 2 * 2 * 32 * 64) * 16
    attention = 4 * 2 * 8 * 8 * 32  # QK^T and AV over the whole 8 x 8 square
    head = 2 * 16 * 32 * 1024  # the tied output projection
    want = 3 * (linears + attention + head)
    assert train_gpu.train_flops(space, arch, (2, 0), (2, 8)) == want
    batch = {"input": torch.zeros(2, 8, dtype=torch.long), "target": torch.zeros(2, 8, dtype=torch.long), "ntokens": 16}
    assert train_gpu._mean_work(space, arch, [batch, batch]) == (want, 16)
