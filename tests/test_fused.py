"""The fused weight/activation path gives the reference path's outputs and gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cosearch.model import fused
from cosearch.model.modules import ArchCode, ElasticLinear
from cosearch.space import SearchSpace
from cosearch.model.supernet import Supernet

from train_fixtures import mt_space

ALL_BITS = (1, 1.58, 2, 3, 4, 8, 16)


@pytest.fixture(autouse=True)
def eager_by_default():
    torch.manual_seed(0)
    fused.set_compile(False)
    yield
    fused.set_compile(None)


def _layer(mode: str, experts: int = 3) -> ElasticLinear:
    code = ArchCode()
    code.set(np.random.default_rng(0).random(6).astype(np.float32))
    layer = ElasticLinear(24, 20, weight_bits=ALL_BITS, act_bits=(4, 8, 16), experts=1 if mode == "none" else experts,
                          mos=mode, router_hidden=8, arch_code=code, code_size=6)
    with torch.no_grad():  # move every parameter off its init (router, scales, clipping)
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return layer


def _run(model, x_shape, fused_on: bool, seed: int = 1):
    fused.use_fused(model, fused_on)
    model.zero_grad(set_to_none=True)
    x = torch.randn(*x_shape, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    y = model(x)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return y.detach(), x.grad.clone(), grads


def _assert_same(ref, got, exact_forward: bool, rtol=1e-5, atol=1e-6):
    # gradients: the fused path sums over the full-size weight (zeros outside the active
    # slice) and scales LSQ's gradient after the sum, so sums round differently
    (y0, gx0, g0), (y1, gx1, g1) = ref, got
    if exact_forward:
        assert torch.equal(y1, y0)
    else:
        torch.testing.assert_close(y1, y0, rtol=rtol, atol=1e-6)
    assert g1.keys() == g0.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=rtol, atol=atol, msg=name)
    torch.testing.assert_close(gx1, gx0, rtol=rtol, atol=atol)


@pytest.mark.parametrize("mode", ["none", "layer", "neuron"])
@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("act_bits", [4, 8])
def test_fused_linear_matches_reference(mode, bits, act_bits):
    layer = _layer(mode)
    layer.configure(17, 13, bits, act_bits)
    ref = _run(layer, (2, 5, 17), False)
    got = _run(layer, (2, 5, 17), True)
    # the forward is the reference's level * scale product exactly; gradients to rounding
    _assert_same(ref, got, exact_forward=True)
    if bits != 16:
        assert got[2][f"wq.log_factor.b{str(bits).replace('.', '_')}"].abs().sum() > 0
    if act_bits == 4:
        assert got[2]["aq.log_clip.b4"].abs() > 0



@pytest.mark.parametrize("bits", [2, 16])
def test_fused_activation_refuses_the_bits_the_quantizer_refuses(bits):
    """Both paths check the bit-width through ``ActQuantizer.clip`` (16 included)."""
    from cosearch.model.quant import ActQuantizer
    aq, x = ActQuantizer([4, 8]), torch.randn(2, 5)
    with pytest.raises(ValueError, match="not in"):
        aq(x, bits)
    with pytest.raises(ValueError, match="not in"):
        fused.quantize_activation(aq, x, bits)

def test_fused_supernet_matches_reference_with_stacked_qkv():
    torch.manual_seed(0)
    d = mt_space()
    d["mos"] = dict(d["mos"], sublayers=["ffn", "attention"])  # mixed q/k/v weights, stacked
    space = SearchSpace.from_dict(d)
    net = Supernet(space)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    g = torch.Generator().manual_seed(2)
    src, tgt = (torch.randint(3, space.vocab_size, (3, n), generator=g) for n in (7, 9))
    src[0, -2:] = 0  # padding: a key mask in the encoder and the cross-attention
    for arch in (space.largest(), space.smallest(), space.sample(3)):
        arch = space.with_bits(arch, 4, 8) if arch == space.largest() else arch
        outs = []
        for on in (False, True):
            fused.use_fused(net, on)
            net.zero_grad(set_to_none=True)
            logits = net(src, tgt, arch=arch)
            logits.float().logsumexp(-1).mean().backward()
            outs.append((logits.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}))
        (l0, g0), (l1, g1) = outs
        # one matmul for q, k and v sums in another order: close, not equal
        torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-5)
        assert g1.keys() == g0.keys()
        for name in g0:
            torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-6, msg=name)


def test_stacked_weights_are_the_layers_weights_in_row_order():
    layers = [_layer("layer") for _ in range(3)]
    for l in layers:
        l.configure(17, 13, 4, 8)
        l.arch_code = layers[0].arch_code
    fused.use_fused(torch.nn.ModuleList(layers), True)
    stacked = fused.elastic_weights(layers)
    assert stacked.shape == (3, 20, 24)
    assert torch.equal(stacked[:, :13, :17], torch.stack([l.quantized_weight() for l in layers]))


@pytest.mark.slow
def test_compiled_path_matches_reference_without_per_shape_recompiles():
    fused.set_compile(True)
    layer = _layer("layer", experts=2)
    counts = []
    for i, o, t in ((17, 13, 5), (20, 9, 7), (15, 11, 3)):  # three shapes, all below the largest
        layer.configure(i, o, 4, 8)
        ref = _run(layer, (2, t, i), False)
        got = _run(layer, (2, t, i), True)
        _assert_same(ref, got, exact_forward=False, rtol=1e-5, atol=1e-6)
        counts.append(fused.compile_counts())
    assert counts[0]["weight[layer,4,None,x1]"] >= 1 and counts[0]["act[8]"] >= 1
    # dynamic shapes: new sizes reuse the graphs compiled for the first ones
    assert counts[2] == counts[1] == counts[0]


def test_out_of_memory_is_raised_not_taken_for_a_compiler_failure():
    """A compiler failure falls back to the eager expression for good; running out of GPU
    memory is no compiler failure (and the eager path needs more memory still)."""
    def oom(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    def broken(*args):
        raise RuntimeError("no C compiler")

    fused.set_compile(True)
    with pytest.raises(torch.OutOfMemoryError):
        fused._guarded(oom, lambda *a: "eager", (), ())
    assert fused._STATE["compile"] is True
    with pytest.warns(UserWarning, match="running it eagerly"):
        assert fused._guarded(broken, lambda *a: "eager", (), ()) == "eager"
    assert fused._STATE["compile"] is False
