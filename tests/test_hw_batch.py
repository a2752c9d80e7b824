"""The vectorised path gives exactly what the per-operator path gives."""
import networkx as nx
import numpy as np
import pytest

from cosearch.errors import UserError
from cosearch.hardware import Genes, Scenario, accelerator_space, build_graph, cost, cost_batch, load_hardware
from cosearch.space import SearchSpace

KEYS = ("latency_ms", "energy_mj", "size_bytes", "peak_memory_bytes", "cycles", "dram_bytes", "macs")


def _archs(space, n, seed):
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)] + [space.largest(), space.smallest()]


def _assert_equal(space, archs, hws, scenario, out, **kw):
    for i, a in enumerate(archs):
        hw = hws[i] if isinstance(hws, list) else hws
        r = cost(space, a, hw, scenario, **kw)
        for k in KEYS:
            assert getattr(r, k) == out[k][i], (k, i)
        assert r.feasible == out["feasible"][i]
        if r.fpga is not None:
            assert [r.fpga[k] for k in ("dsp", "bram36", "lut")] == [out[f"fpga_{k}"][i] for k in ("dsp", "bram36", "lut")]
        else:
            assert r.area_mm2 == out["area_mm2"][i]


@pytest.mark.parametrize("space_name", ["multi30k", "tiny_lm", "hat_wmt14"])
@pytest.mark.parametrize("hw", ["tpu_like", "bitfusion", "eyeriss_like", "zcu102", "alveo_u250"])
@pytest.mark.parametrize("scenario", ["prefill", "decode"])
def test_batch_equals_per_operator(space_name, hw, scenario):
    space = SearchSpace.load(space_name)
    archs = _archs(space, 1 if space_name == "hat_wmt14" else 2, seed=len(hw))
    _assert_equal(space, archs, hw, scenario, cost_batch(space, archs, hw, scenario))


def test_full_table_path_and_options():
    space = SearchSpace.load("multi30k")
    archs = _archs(space, 80, seed=1)  # >= 64: the whole layer table is built and cached
    kw = dict(seq_len=17, decode_tokens=9, batch=2)
    out = cost_batch(space, archs, "zcu102", "decode", **kw)
    _assert_equal(space, archs[::10], "zcu102", "decode", {k: v[::10] for k, v in out.items()}, **kw)
    again = cost_batch(space, Genes.from_archs(space, archs), "zcu102", Scenario("decode", 17, 9, 2))
    for k in KEYS:
        assert np.array_equal(out[k], again[k])


def test_one_accelerator_per_arch():
    space = SearchSpace.load("multi30k")
    acc = accelerator_space("bitfusion")
    rng = np.random.default_rng(5)
    archs = _archs(space, 6, seed=2)
    hws = [acc.make(acc.sample(rng)) for _ in archs]
    _assert_equal(space, archs, hws, "prefill", cost_batch(space, archs, hws, "prefill"))
    mixed = [load_hardware("zcu102"), load_hardware("tpu_like")] * 4
    out = cost_batch(space, archs, mixed, "decode")
    _assert_equal(space, archs, mixed, "decode", out)
    assert np.isnan(out["area_mm2"][0]) and np.isnan(out["fpga_dsp"][1])


def test_size_matches_space_size():
    space = SearchSpace.load("multi30k")
    archs = _archs(space, 30, seed=3)
    out = cost_batch(space, archs, "tpu_like")
    want = np.array([space.size(a).weight_bits / 8 for a in archs])
    np.testing.assert_allclose(out["size_bytes"], want, rtol=1e-12)


def test_arch_outside_space_is_an_error():
    space = SearchSpace.load("multi30k")
    other = SearchSpace.load("hat_wmt14").largest()
    with pytest.raises(UserError, match="outside the space"):
        cost_batch(space, [other], "tpu_like")


@pytest.mark.parametrize("space_name", ["multi30k", "tiny_lm"])
def test_workload_graph(space_name):
    space = SearchSpace.load(space_name)
    arch = space.sample(np.random.default_rng(0))
    g = build_graph(space, arch, Scenario("prefill", seq_len=10))
    assert nx.is_directed_acyclic_graph(g)
    names = {s.name for s in space.linears(arch)}
    assert names <= set(g.nodes)
    # MACs of the linears: tokens x in x out, from space.linears
    lin_macs = sum(g.nodes[s.name]["M"] * s.in_features * s.out_features for s in space.linears(arch))
    want = 0
    for s in space.linears(arch):
        m = 10 * (arch.decoder[s.layer].cross_layers if s.role in ("cross_k", "cross_v") else 1)
        want += m * s.in_features * s.out_features
    assert lin_macs == want
    roles = {d["role"] for _, d in g.nodes(data=True)}
    assert {"score", "softmax", "context", "ln", "residual", "embed", "output_proj"} <= roles
    dec = build_graph(space, arch, Scenario("decode", seq_len=10, decode_tokens=4))
    q = dec.nodes[f"decoder.0.self_attn.q"]
    assert (q["M"], q["count"]) == (1, 4)
    score = dec.nodes["decoder.0.self_attn.score"]
    kv0 = 0 if space.is_encdec else 10
    assert list(score["N"]) == [kv0 + 1, kv0 + 2, kv0 + 3, kv0 + 4]


def test_power_is_reported_and_bounded():
    space = SearchSpace.load("multi30k")
    archs = _archs(space, 4, seed=9)
    hw = load_hardware("zcu102")
    out = cost_batch(space, archs, hw, "decode")
    np.testing.assert_allclose(out["power_w"], out["energy_mj"] / out["latency_ms"], rtol=1e-12)
    # static power (leakage + DRAM interface) costs energy for as long as the model runs
    r = cost(space, archs[0], hw, "decode")
    assert r.energy_mj == pytest.approx(r.ops.energy_fj.sum() * 1e-12 + hw.static_w * r.latency_ms, rel=1e-12)
    # a faster clock draws more power; a power bound makes the design infeasible
    fast = cost(space, archs[0], hw.with_params(clock_mhz=300), "decode")
    assert fast.power_w > r.power_w and fast.latency_ms < r.latency_ms
    cap = float(np.median(out["power_w"]))
    capped = hw.with_params(power_max_w=cap)
    out2 = cost_batch(space, archs, capped, "decode")
    assert list(out2["feasible"]) == list(out["feasible"] & (out["power_w"] <= cap))
    assert out["feasible"].any() and not out2["feasible"].all()
    assert [cost(space, a, capped, "decode").feasible for a in archs] == list(out2["feasible"])
