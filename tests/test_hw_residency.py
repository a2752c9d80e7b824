"""Weights that fit the weight buffer stay on chip across decode steps: a visible step at
the fit boundary, partial residency by layer, and both cost paths agree."""
import math

import numpy as np
import pytest

from cosearch.hardware import cost, cost_batch, load_hardware
from cosearch.space import STORAGE_BITS, SearchSpace

STEP_ROLES = {"q", "k", "v", "out", "cross_q", "cross_out", "fc1", "fc2"}  # run once per decode step
T = 30  # decode tokens (the default)


def units(space, arch):
    """Bytes of each decoder layer's per-step weights, and of the (tied) output projection,
    computed from the architecture alone (not by the engine)."""
    layers = {}
    for lin in space.linears(arch):
        if lin.side == "decoder" and lin.role in STEP_ROLES:
            layers[lin.layer] = layers.get(lin.layer, 0) + math.ceil(
                lin.in_features * lin.out_features * STORAGE_BITS[lin.weight_bits] / 8)
    ebits = space.spec.quantization.embedding_bits
    out_proj = math.ceil(arch.decoder_embed_dim * space.vocab_size * STORAGE_BITS[ebits] / 8)
    return [layers[i] for i in sorted(layers)], out_proj


def _setup(space_name="multi30k", which="smallest", wb=2):
    space = SearchSpace.load(space_name)
    arch = space.with_bits(getattr(space, which)(), weight_bits=wb, act_bits=8)
    hw = load_hardware("alveo_u250")
    return space, arch, hw, 4 * hw.array.rows * hw.array.cols  # reserve: a double-buffered 16-bit tile


def test_the_fit_boundary_is_a_visible_step():
    space, arch, hw, _ = _setup()
    layers, out_proj = units(space, arch)
    total = sum(layers) + out_proj
    assert total % 1024 == 0  # the boundary lands on a whole KB for this model
    streamed = cost(space, arch, hw.with_params(weight_kb=1), "decode")
    fits = cost(space, arch, hw.with_params(weight_kb=total // 1024), "decode")
    short = cost(space, arch, hw.with_params(weight_kb=total // 1024 - 1), "decode")
    # encoder-decoder: a resident unit is loaded by the first step, not by the other T - 1
    assert streamed.dram_bytes - fits.dram_bytes == (T - 1) * total
    # one KB short: the output projection (last, 4 MB) no longer fits, the layers still do
    assert streamed.dram_bytes - short.dram_bytes == (T - 1) * sum(layers)
    assert (fits.ops.weights == "on chip").sum() == (short.ops.weights == "on chip").sum() + 1
    # the step is visible in latency and energy (DRAM energy alone: 160 pJ/B)
    assert fits.latency_ms < 0.25 * short.latency_ms
    assert short.energy_mj - fits.energy_mj > (T - 1) * out_proj * 160e-9
    # the vectorised path takes the same step
    out = cost_batch(space, [arch] * 3, [hw.with_params(weight_kb=k) for k in (1, total // 1024 - 1, total // 1024)],
                     "decode")
    assert list(out["dram_bytes"]) == [streamed.dram_bytes, short.dram_bytes, fits.dram_bytes]
    assert list(out["latency_ms"]) == [streamed.latency_ms, short.latency_ms, fits.latency_ms]
    assert list(out["energy_mj"]) == [streamed.energy_mj, short.energy_mj, fits.energy_mj]


def test_partial_residency_keeps_whole_layers_first_fit():
    space, arch, hw, reserve = _setup(which="largest", wb=4)
    layers, out_proj = units(space, arch)
    assert len(layers) > 3 and out_proj > layers[0]
    streamed = cost(space, arch, hw.with_params(weight_kb=1), "decode")
    for k in (1, 2, len(layers) - 1):
        kb = math.ceil((sum(layers[:k]) + reserve) / 1024)  # room for k layers, not k + 1
        assert kb * 1024 - reserve < sum(layers[:k + 1])
        r = cost(space, arch, hw.with_params(weight_kb=kb), "decode")
        assert streamed.dram_bytes - r.dram_bytes == (T - 1) * sum(layers[:k]), k
        on = r.ops[r.ops.weights == "on chip"]
        assert set(on.op.str.split(".").str[1]) == {str(i) for i in range(k)}
        out = cost_batch(space, [arch], hw.with_params(weight_kb=kb), "decode")
        assert out["dram_bytes"][0] == r.dram_bytes and out["latency_ms"][0] == r.latency_ms
    # room for two layers but not for the streaming reserve as well: one layer stays
    assert layers[0] == layers[1] and reserve > 1024
    r = cost(space, arch, hw.with_params(weight_kb=math.ceil(sum(layers[:2]) / 1024)), "decode")
    assert streamed.dram_bytes - r.dram_bytes == (T - 1) * layers[0]


def test_decoder_only_prompt_loads_the_weights():
    """Decoder-only: the prompt pass reads every layer's weights, so resident steps read
    none; the output projection (not needed by the prompt) is loaded by the first step."""
    space, arch, hw, _ = _setup("tiny_lm")
    layers, out_proj = units(space, arch)
    streamed = cost(space, arch, hw.with_params(weight_kb=1), "decode")
    kept = cost(space, arch, hw, "decode")  # 32 MB: everything fits
    assert streamed.dram_bytes - kept.dram_bytes == T * sum(layers) + (T - 1) * out_proj
    # prefill reads each weight once either way
    assert cost(space, arch, hw.with_params(weight_kb=1)).dram_bytes == cost(space, arch, hw).dram_bytes


@pytest.mark.parametrize("kb", [1, 256, 2048, 8192, 32768])
def test_batch_equals_per_operator_with_residency(kb):
    space = SearchSpace.load("multi30k")
    rng = np.random.default_rng(kb)
    archs = [space.sample(rng) for _ in range(6)] + [space.smallest(), space.largest()]
    hw = load_hardware("alveo_u250").with_params(weight_kb=kb)
    out = cost_batch(space, archs, hw, "decode")
    for i, a in enumerate(archs):
        r = cost(space, a, hw, "decode")
        assert (r.latency_ms, r.energy_mj, r.dram_bytes) == (out["latency_ms"][i], out["energy_mj"][i],
                                                             out["dram_bytes"][i])
