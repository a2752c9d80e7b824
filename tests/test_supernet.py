"""The supernet: slicing, MoS routing, quantized bits, extraction parity, decoding."""
from __future__ import annotations

import copy

import pytest
import torch

import torch.nn.functional as F

from cosearch.model import modules
from cosearch.model.modules import ArchCode, ElasticLinear, QLinear
from cosearch.training.sandwich import distill_loss, member_loss, sandwich
from cosearch.space import SearchSpace
from cosearch.model.supernet import Supernet, expert_specialisation
from cosearch.training.train import TrainConfig, sandwich_step


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
        assert torch.equal(ref, out), (seed, (ref - out).abs().max())
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
    net = Supernet(space)  # the router's random output layer: arch-dependent from the start
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
    assert torch.equal(a, b), (a - b).abs().max()


def test_training_step_moves_every_active_part():
    torch.manual_seed(0)
    space = small_space(mode="layer", experts=2)
    net = Supernet(space)
    arch = space.with_bits(space.largest(), weight_bits=4, act_bits=4)
    x = inputs(space, torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
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


# --------------------------------------------------------------------------- MoS init and routing
@pytest.mark.parametrize("mode", ["layer", "neuron"])
def test_mos_starts_as_the_plain_model(mode):
    torch.manual_seed(0)
    plain = Supernet(small_space(mode="none"))
    torch.manual_seed(0)
    mos = Supernet(small_space(mode=mode, experts=3))
    w_plain = plain.model.encoder_layers[0].ffn.fc1.weight[0]
    fc1 = mos.model.encoder_layers[0].ffn.fc1
    # the first mixed layer draws its base weight exactly where the plain one does
    assert torch.equal(fc1.weight[0], w_plain)
    for m in mos.elastic_linears():
        if m.router is None:
            continue
        base = m.weight[0]
        noise = (m.weight[1:] - base).std() / base.std()
        assert 0.5 * modules.EXPERT_INIT_NOISE < noise < 1.5 * modules.EXPERT_INIT_NOISE
        # any mixture is the base weight up to the noise (independent inits: 1/sqrt(m) smaller)
        mixed = m.mixed_weight()
        assert (mixed - base[: mixed.shape[0], : mixed.shape[1]]).std() < 2 * modules.EXPERT_INIT_NOISE * base.std()


def test_experts_get_different_gradients_from_the_first_step(monkeypatch):
    """With a zero router output layer every expert gets exactly the same gradient."""
    default = modules.ROUTER_INIT_GAIN

    def expert_grad_gap(router_std):
        monkeypatch.setattr(modules, "ROUTER_INIT_GAIN", router_std)
        torch.manual_seed(0)
        space = small_space(mode="layer", experts=2)
        net = Supernet(space)
        x = inputs(space, torch.Generator().manual_seed(0))
        net(*x, arch=space.sample(1)).logsumexp(-1).mean().backward()
        g = net.model.decoder_layers[0].ffn.fc1.weight.grad
        return float((g[0] - g[1]).norm() / g[0].norm())
    assert expert_grad_gap(0.0) == 0.0
    assert expert_grad_gap(default) > 1e-3


def test_neuron_routing_reads_the_same_router_row_at_every_width():
    code = ArchCode()
    code.set(torch.linspace(0, 1, 5).numpy())
    torch.manual_seed(0)
    lin = ElasticLinear(8, 32, experts=3, mos="neuron", router_hidden=4, arch_code=code, code_size=5)
    lin.configure(8, 32, 16, 16)
    full = lin.mixture_weights()
    lin.configure(8, 12, 16, 16)
    part = lin.mixture_weights()
    assert part.shape == (12, 3) and torch.equal(part, full[:12])
    assert not torch.equal(full[0], full[1])  # one distribution per neuron
    lin.configure(8, 32, 16, 16)
    assert torch.equal(lin.mixed_weight()[5], (full[5][:, None] * lin.weight[:, 5]).sum(0))


def test_distill_loss_is_kl_teacher_to_student():
    gen = torch.Generator().manual_seed(0)
    logits, t_logits = torch.randn(2, 4, 7, generator=gen), 3 * torch.randn(2, 4, 7, generator=gen)
    target = torch.randint(1, 7, (2, 4), generator=gen)
    target[1, -1] = 0  # padding: left out of the mean
    logp, t_logp = F.log_softmax(logits, -1), F.log_softmax(t_logits, -1)
    per_token = (t_logp.exp() * (t_logp - logp)).sum(-1)  # KL(teacher || student)
    mask = target != 0
    expected = per_token[mask].mean()
    reverse = (logp.exp() * (logp - t_logp)).sum(-1)[mask].mean()
    got = distill_loss(logits, t_logp, target, 0)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert abs(float(expected - reverse)) > 0.1  # the two directions differ here


def _copy(net):
    return copy.deepcopy(net)


def test_sandwich_step_sums_member_gradients_with_the_largest_as_teacher():
    torch.manual_seed(0)
    space = small_space(mode="layer", experts=2)
    net = Supernet(space).eval()  # no dropout: both paths see the same function
    ref = _copy(net)
    x = inputs(space, torch.Generator().manual_seed(0))
    target = x[-1]
    cfg = TrainConfig(clip_norm=1e9, label_smoothing=0.1, distill=0.5)
    members = sandwich(space, seed=0, step=90, steps=100, n_random=2)
    sums: dict = {}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sandwich_step(net, net, opt, members, x, target, cfg, pad=0, vocab=space.vocab_size, sums=sums)

    teacher = None
    for m in members:
        logits = ref(*x, arch=m.arch)
        loss, _, _ = member_loss(logits, target, 0, 0.1, teacher, 0.5)
        loss.backward()
        if teacher is None:
            teacher = F.log_softmax(logits.detach().float(), -1)
    with torch.no_grad():
        for p in ref.parameters():
            if p.grad is not None:
                p.add_(p.grad, alpha=-0.1)
    after, expect = net.state_dict(), ref.state_dict()
    assert all(torch.equal(after[k], expect[k]) for k in expect)
    assert set(sums) == {"loss_largest", "loss_smallest", "loss_random", "kd_smallest", "kd_random"}
    assert sums["loss_random"][1] == 2 and all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("mode", ["layer", "neuron"])
def test_trained_router_becomes_arch_dependent(mode):
    torch.manual_seed(0)
    space = small_space(mode=mode, experts=2, wbits=(16,), abits=(16,))
    net = Supernet(space)  # the default init, not overwritten
    probes = [space.largest(), space.smallest()] + [space.sample(s) for s in range(4)]
    start = expert_specialisation(net, probes)
    x = inputs(space, torch.Generator().manual_seed(0), batch=8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(1, 31):
        members = sandwich(space, seed=0, step=step, steps=30, n_random=2, stages=None)
        sandwich_step(net, net, opt, members, x, x[-1], TrainConfig(), pad=0, vocab=space.vocab_size)
    end = expert_specialisation(net, probes)
    # (a zero router output layer gives 1.02x and a spread of 0.01-0.02 here)
    assert end["expert_dist"] > 1.15 * start["expert_dist"]  # the experts drift apart
    assert end["router_spread"] > max(0.05, start["router_spread"])  # mixtures differ more per arch
    assert expert_specialisation(Supernet(small_space(mode="none")), probes) == {}
