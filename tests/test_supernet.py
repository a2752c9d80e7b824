"""The supernet: slicing, MoS routing, quantized bits, extraction parity, decoding."""
from __future__ import annotations

import copy

import pytest
import torch

from cosearch.modules import ElasticLinear, QLinear
from cosearch.space import SearchSpace
from cosearch.supernet import Supernet


def small_space(family="encoder_decoder", mode="layer", experts=2, attn="head_dim", sublayers=("ffn",),
                wbits=(1, 1.58, 2, 3, 4, 8, 16), abits=(4, 8, 16)):
    side = dict(embed_dim=[16, 24], layers=[1, 2, 3], ffn_dim=[16, 32], heads=[2, 4])
    side.update({"head_dim": 8} if attn == "head_dim" else {"qkv_dim": 16})
    d = dict(name="t", family=family, vocab_size=50, max_positions=32, dropout=0.1,
             decoder=dict(side, **({"cross_layers": [1, 2]} if family == "encoder_decoder" else {})),
             quantization=dict(weight_bits=list(wbits), act_bits=list(abits), embedding_bits=8),
             mos=dict(mode=mode, experts=experts if mode != "none" else 1, router_hidden=8,
                      sublayers=list(sublayers)))
    if family == "encoder_decoder":
        d["encoder"] = dict(side, layers=[2, 3])
    return SearchSpace.from_dict(d)


def inputs(space, gen, batch=3):
    if space.is_encdec:
        src = torch.randint(3, space.vocab_size, (batch, 7), generator=gen)
        src[0, -3:] = 0  # padding
        return src, torch.randint(3, space.vocab_size, (batch, 6), generator=gen)
    return (torch.randint(3, space.vocab_size, (batch, 9), generator=gen),)


CASES = [("encoder_decoder", "layer", "head_dim", ("ffn",)), ("encoder_decoder", "neuron", "qkv_dim", ("ffn", "attention")),
         ("decoder_only", "layer", "head_dim", ("ffn", "attention")), ("decoder_only", "neuron", "head_dim", ("ffn",)),
         ("encoder_decoder", "none", "head_dim", ("ffn",))]


@pytest.mark.parametrize("family,mode,attn,sub", CASES)
def test_extraction_parity_and_param_counts(family, mode, attn, sub):
    torch.manual_seed(0)
    space = small_space(family, mode, attn=attn, sublayers=sub)
    net = Supernet(space).eval()
    gen = torch.Generator().manual_seed(1)
    for seed in range(6):
        arch = space.sample(seed)
        x = inputs(space, gen)
        with torch.no_grad():
            ref = net(*x, arch=arch)
            sub_model = net.extract(arch).eval()
            out = sub_model(*x)
        assert out.shape == (x[-1].shape[0], x[-1].shape[1], space.vocab_size)
        assert torch.allclose(ref, out, atol=1e-5, rtol=0), (seed, (ref - out).abs().max())
        # no router, no unused rows: the standalone's weights are exactly the analytic count
        # (activation clipping factors of 4-bit inputs are one scalar per layer, not weights)
        weights = sum(p.numel() for n, p in sub_model.named_parameters() if ".aq." not in n)
        assert weights == space.param_count(arch)
        assert not any("router" in n for n, _ in sub_model.named_parameters())


def test_active_slice_shapes_follow_the_arch():
    space = small_space()
    net = Supernet(space)
    for seed in range(5):
        arch = space.sample(seed)
        net.set_arch(arch)
        specs = space.linears(arch)
        mods = dict(net.model.named_modules())
        for spec in specs:
            side, i, *rest = spec.name.split(".")
            name = f"{side}_layers.{i}." + ".".join(rest)
            m = mods[name]
            assert isinstance(m, ElasticLinear)
            assert m.quantized_weight().shape == (spec.out_features, spec.in_features), spec.name
            assert (m.weight_bits, m.act_bits) == (spec.weight_bits, spec.act_bits)


def test_mos_with_one_expert_equals_plain_sharing():
    torch.manual_seed(0)
    plain = Supernet(small_space(mode="none"))
    for mode in ("layer", "neuron"):
        mos = Supernet(small_space(mode=mode, experts=1, sublayers=("ffn", "attention")))
        missing, unexpected = mos.load_state_dict(plain.state_dict(), strict=False)
        assert not unexpected and all("router" in k for k in missing)
        gen = torch.Generator().manual_seed(3)
        for seed in range(4):
            arch = plain.space.sample(seed)
            x = inputs(plain.space, gen)
            plain.train(False), mos.train(False)
            assert torch.equal(plain(*x, arch=arch), mos(*x, arch=arch))


@pytest.mark.parametrize("mode", ["layer", "neuron"])
def test_router_gets_gradients_and_mixture_depends_on_arch(mode):
    torch.manual_seed(0)
    space = small_space(mode=mode, experts=3)
    net = Supernet(space)
    # move routers off their uniform start so the mixture depends on the arch
    for p in net.router_parameters():
        torch.nn.init.normal_(p, std=0.5)
    x = inputs(space, torch.Generator().manual_seed(0))
    net(*x, arch=space.largest()).logsumexp(-1).mean().backward()
    grads = [p.grad for p in net.router_parameters()]
    assert grads and all(g is not None for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0
    fc1 = net.model.decoder_layers[0].ffn.fc1
    net.set_arch(space.largest())
    w_big = fc1.mixed_weight()[:16, :16].detach().clone()
    small = space.smallest()
    net.set_arch(small)
    w_small = fc1.mixed_weight()[:16, :16].detach()
    assert not torch.allclose(w_big, w_small)


def test_extracted_weights_have_the_levels_of_their_bits():
    torch.manual_seed(0)
    space = small_space(mode="neuron")
    net = Supernet(space)
    for wb, levels in ((1, 2), (1.58, 3), (2, 4), (3, 8), (4, 16)):
        arch = space.with_bits(space.sample(int(wb * 100)), weight_bits=wb, act_bits=8)
        sub = net.extract(arch)
        for m in sub.modules():
            if isinstance(m, QLinear):
                for row in m.weight:
                    assert len(torch.unique(row)) <= levels
                assert m.weight_scale is not None and m.weight_scale.shape == (m.out_features, 1)


def test_float_bits_are_fp16_weights():
    space = small_space()
    net = Supernet(space)
    sub = net.extract(space.with_bits(space.largest(), 16, 16))
    for m in sub.modules():
        if isinstance(m, QLinear):
            assert torch.equal(m.weight, m.weight.half().float())
            assert m.weight_scale is None


def test_switching_archs_leaves_no_state_behind():
    torch.manual_seed(0)
    space = small_space()
    net = Supernet(space).eval()
    x = inputs(space, torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = net(*x, arch=space.largest())
        net(*x, arch=space.smallest())
        net(*x, arch=space.sample(1))
        again = net(*x, arch=space.largest())
    assert torch.equal(first, again)


@pytest.mark.parametrize("family", ["encoder_decoder", "decoder_only"])
def test_incremental_decoding_matches_full_forward(family):
    torch.manual_seed(0)
    space = small_space(family)
    net = Supernet(space).eval()
    arch = space.sample(5)
    sub = net.extract(arch).eval()
    x = inputs(space, torch.Generator().manual_seed(2))
    tgt = x[-1]
    with torch.no_grad():
        full = sub(*x)
        memory = sub.encode(x[0]) if space.is_encdec else None
        cache: dict = {}
        steps = [sub.decode_step(tgt[:, t : t + 1], memory, cache, t) for t in range(tgt.shape[1])]
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-4)


def test_reorder_cache_selects_beams():
    space = small_space()
    net = Supernet(space).eval()
    sub = net.extract(space.sample(0)).eval()
    src, tgt = inputs(space, torch.Generator().manual_seed(4))
    with torch.no_grad():
        mem = sub.encode(src)
        cache: dict = {}
        sub.decode_step(tgt[:, :1], mem, cache, 0)
        idx = torch.tensor([2, 2, 0])
        cache2 = sub.reorder_cache(cache, idx)
        a = sub.decode_step(tgt[idx, 1:2], mem.index_select(idx), cache2, 1)
        ref_cache: dict = {}
        mem_r = sub.encode(src[idx])
        sub.decode_step(tgt[idx, :1], mem_r, ref_cache, 0)
        b = sub.decode_step(tgt[idx, 1:2], mem_r, ref_cache, 1)
    assert torch.allclose(a, b, atol=1e-5)


def test_training_step_moves_every_active_part():
    torch.manual_seed(0)
    space = small_space(mode="layer", experts=2)
    net = Supernet(space)
    arch = space.with_bits(space.largest(), weight_bits=4, act_bits=4)
    x = inputs(space, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    for p in net.router_parameters():  # routers start at the uniform mixture
        torch.nn.init.normal_(p, std=0.1)
    before = copy.deepcopy(net.state_dict())
    loss = torch.nn.functional.cross_entropy(net(*x, arch=arch).flatten(0, 1), x[-1].flatten())
    loss.backward()
    opt.step()
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    fc1 = "model.decoder_layers.0.ffn.fc1"
    assert f"{fc1}.weight" in changed and any(k.startswith(f"{fc1}.router") for k in changed)
    assert any(k.startswith(f"{fc1}.wq") for k in changed)  # the 4-bit scales learn

    # a layer the arch does not use keeps its weights
    net.zero_grad()
    small = space.smallest()  # one decoder layer
    before = copy.deepcopy(net.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    torch.nn.functional.cross_entropy(net(*x, arch=small).flatten(0, 1), x[-1].flatten()).backward()
    opt.step()
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and not any(k.startswith("model.decoder_layers.2.") for k in changed)
