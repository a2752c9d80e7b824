"""The sandwich step's losses and members, checked against hand-derived values.

Each test guards a mutation that once went unnoticed: the distillation term dropped, its
gradient to the student cut, its weight swapped with the task loss's, dropout no longer
scaled with the active width, 4/8-bit weights trained unquantized under autocast, and
random members that never quantize their activations. Expected gradients are written
out from the formulas (softmax minus target distribution), never with the loss
functions under test.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cosearch.model import modules
from cosearch.model.supernet import Supernet
from cosearch.space import SearchSpace
from cosearch.training.sandwich import Member, sandwich
from cosearch.training.train import TrainConfig, sandwich_step

from train_fixtures import lm_space


# --------------------------------------------------------------------------- gradients
def _expected_grads(z: list[torch.Tensor], target: torch.Tensor, pad: int, eps: float, a: float):
    """d loss / d logits of every member, from the formulas: the teacher (first) minimises
    the smoothed cross-entropy, whose gradient per non-pad token is ``(p - q) / N`` with
    ``q = (1 - eps) onehot + eps / V``; a student minimises ``(1 - a) CE + a KL(t || s)``,
    and ``d KL(t || s) / d z_s = p_s - p_t`` (the teacher's probabilities, held fixed)."""
    V = z[0].shape[-1]
    mask = (target != pad).unsqueeze(-1).double()
    n = mask.sum()
    q = torch.full(z[0].shape, eps / V, dtype=torch.float64)
    q.scatter_add_(-1, target.unsqueeze(-1), torch.full(target.shape + (1,), 1.0 - eps, dtype=torch.float64))
    probs = [torch.exp(x.double()) / torch.exp(x.double()).sum(-1, keepdim=True) for x in z]
    out = [mask * (probs[0] - q) / n]
    for p in probs[1:]:
        out.append(mask * ((1 - a) * (p - q) + a * (p - probs[0])) / n)
    return out


def test_sandwich_step_gradients_are_the_hand_derived_ones():
    """Logits are free parameters (one table per member), so the optimizer step moves each
    by exactly minus its loss gradient: any change to the loss shows."""
    gen = torch.Generator().manual_seed(0)
    B, T, V, pad = 2, 5, 7, 0
    target = torch.randint(1, V, (B, T), generator=gen)
    target[1, -2:] = pad
    table = nn.ParameterList([nn.Parameter(2 * torch.randn(B, T, V, generator=gen)) for _ in range(3)])
    start = [p.detach().clone() for p in table]
    members = [Member("largest", None), Member("smallest", None), Member("random", None)]

    def forward(model, m, inputs):
        return model[members.index(m)] * 1.0

    eps, a = 0.1, 0.3  # a != 0.5: swapping the two weights must show
    cfg = TrainConfig(label_smoothing=eps, distill=a, clip_norm=1e9)
    opt = torch.optim.SGD(table.parameters(), lr=1.0)
    sums: dict = {}
    sandwich_step(table, table, opt, members, (), target, cfg, pad, V, sums=sums, forward=forward)
    expected = _expected_grads(start, target, pad, eps, a)
    for i, (before, p, g) in enumerate(zip(start, table, expected)):
        got = (before - p.detach()).double()
        assert torch.allclose(got, g, atol=1e-6, rtol=0), (i, float((got - g).abs().max()))
    assert set(sums) == {"loss_largest", "loss_smallest", "loss_random", "kd_smallest", "kd_random"}


def test_at_distill_0_every_member_learns_the_task_and_no_kl_is_computed(monkeypatch):
    """The default (distill 0): each member's gradient is its own ``(p - q) / N``, and the
    sandwich builds no teacher and no KL (a vocab-sized log-softmax per member), so the
    metrics have no ``kd_*``."""
    from cosearch.training import sandwich as sandwich_module

    def no_kl(*args, **kwargs):
        raise AssertionError("the KL was computed at distill 0")
    monkeypatch.setattr(sandwich_module, "distill_loss", no_kl)
    gen = torch.Generator().manual_seed(3)
    B, T, V, pad = 2, 4, 6, 0
    target = torch.randint(1, V, (B, T), generator=gen)
    target[0, -1] = pad
    table = nn.ParameterList([nn.Parameter(2 * torch.randn(B, T, V, generator=gen)) for _ in range(3)])
    start = [p.detach().clone() for p in table]
    members = [Member("largest", None), Member("smallest", None), Member("random", None)]
    eps = 0.1
    opt = torch.optim.SGD(table.parameters(), lr=1.0)
    sums: dict = {}
    sandwich_step(table, table, opt, members, (), target, TrainConfig(label_smoothing=eps, distill=0.0, clip_norm=1e9),
                  pad, V, sums=sums, forward=lambda model, m, inputs: model[members.index(m)] * 1.0)
    for i, (before, p, g) in enumerate(zip(start, table, _expected_grads(start, target, pad, eps, 0.0))):
        got = (before - p.detach()).double()
        assert torch.allclose(got, g, atol=1e-6, rtol=0), (i, float((got - g).abs().max()))
    assert set(sums) == {"loss_largest", "loss_smallest", "loss_random"}


def test_the_distillation_part_alone_pulls_the_student_to_the_teacher():
    """distill = 1: the student's gradient is exactly ``p_s - p_t`` (no task part)."""
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(1, 5, (1, 3), generator=gen)
    table = nn.ParameterList([nn.Parameter(torch.randn(1, 3, 5, generator=gen)) for _ in range(2)])
    start = [p.detach().clone() for p in table]
    members = [Member("largest", None), Member("random", None)]
    opt = torch.optim.SGD(table.parameters(), lr=1.0)
    sandwich_step(table, table, opt, members, (), target, TrainConfig(label_smoothing=0.0, distill=1.0, clip_norm=1e9),
                  0, 5, forward=lambda model, m, inputs: model[members.index(m)] * 1.0)
    p_t, p_s = (torch.softmax(x.double(), -1) for x in start)
    assert torch.allclose((start[1] - table[1].detach()).double(), (p_s - p_t) / 3, atol=1e-7, rtol=0)


def test_a_fixed_teacher_teaches_the_one_standalone_member():
    """``--teacher``: the standalone member gets ``(1 - a)(p - q) + a (p - p_teacher)``."""
    gen = torch.Generator().manual_seed(2)
    B, T, V, pad = 2, 4, 6, 0
    target = torch.randint(1, V, (B, T), generator=gen)
    target[0, -1] = pad
    teacher_logits = torch.randn(B, T, V, generator=gen)
    table = nn.ParameterList([nn.Parameter(torch.randn(B, T, V, generator=gen))])
    start = table[0].detach().clone()
    members = [Member("standalone", None)]
    a, eps = 0.3, 0.1
    opt = torch.optim.SGD(table.parameters(), lr=1.0)
    sandwich_step(table, table, opt, members, (), target, TrainConfig(label_smoothing=eps, distill=a, clip_norm=1e9),
                  pad, V, forward=lambda model, m, inputs: model[0] * 1.0,
                  teacher_logp=torch.log_softmax(teacher_logits, -1))
    expected = _expected_grads([teacher_logits, start], target, pad, eps, a)[1]
    assert torch.allclose((start - table[0].detach()).double(), expected, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- dropout
def test_dropout_scales_with_the_active_width():
    """HAT: dropout * width / widest, per side, in the supernet, its standalone model and
    an extracted model (0.3 at widths 16 of 24 -> 0.2)."""
    side = dict(embed_dim=[16, 24], layers=[1, 2], ffn_dim=[16, 32], heads=[2], head_dim=8)
    space = SearchSpace.from_dict(dict(
        name="t", family="encoder_decoder", vocab_size=40, max_positions=16, dropout=0.3,
        encoder=side, decoder=dict(side, cross_layers=[1]),
        quantization=dict(weight_bits=[4, 16], act_bits=[8, 16]), mos=dict(mode="none", experts=1)))
    arch = space.largest()
    arch = type(arch)(decoder_embed_dim=24, decoder=arch.decoder, encoder_embed_dim=16, encoder=arch.encoder)
    net = Supernet(space)
    net.set_arch(arch)
    for model in (net.model, Supernet(space, arch=arch).model, net.extract(arch)):
        assert [m.dropout for m in model.encoder_layers] == pytest.approx([0.2, 0.2])
        assert [m.ffn.dropout for m in model.encoder_layers] == pytest.approx([0.2, 0.2])
        assert [m.dropout for m in model.decoder_layers] == pytest.approx([0.3, 0.3])
        assert model.dropout == pytest.approx(0.3)  # embeddings: the decoder's width
    narrow = type(arch)(decoder_embed_dim=16, decoder=arch.decoder, encoder_embed_dim=16, encoder=arch.encoder)
    net.set_arch(narrow)
    assert net.model.dropout == pytest.approx(0.2) and net.model.decoder_layers[0].dropout == pytest.approx(0.2)


# --------------------------------------------------------------------------- autocast
def test_quantized_members_stay_quantized_in_a_bf16_autocast_step(monkeypatch):
    """One sandwich step under CPU bf16 autocast: every linear weight of the 4-bit and
    8-bit members reaches the matmul with at most 2^bits levels per row, and their
    learned scales get gradients (an unquantized weight would leave them untouched)."""
    torch.manual_seed(0)
    d = lm_space()  # weight bits 2, 4, 8, 16; vocab 128
    d["decoder"] = dict(d["decoder"], ffn_dim=[32, 512])  # fc2 rows of 512: more than 2^8 values
    space = SearchSpace.from_dict(d)
    net = Supernet(space)
    arch = space.sample(3)
    members = [Member("largest", space.largest()), Member("random", space.with_bits(arch, 4, 8)),
               Member("random", space.with_bits(space.largest(), 8, 16))]
    seen: dict[int, list] = {0: [], 1: [], 2: []}
    current = [0]
    real_linear = torch.nn.functional.linear

    def spy(x, w, b=None):
        if w.shape[0] != space.vocab_size:  # not the tied output projection
            seen[current[0]].append(w.detach().float())
        return real_linear(x, w, b)
    monkeypatch.setattr(modules.F, "linear", spy)

    def forward(model, m, inputs):
        current[0] = next(i for i, x in enumerate(members) if x is m)
        return model(*inputs, arch=m.arch)

    x = torch.randint(3, space.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in net.named_parameters() if ".wq." in n}
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sums: dict = {}
    sandwich_step(net, net, opt, members, (x,), x, TrainConfig(clip_norm=1e9), 0, space.vocab_size,
                  autocast=torch.autocast("cpu", dtype=torch.bfloat16), sums=sums, forward=forward)
    assert all(torch.isfinite(v[0]) for v in sums.values())
    for i, bits in ((1, 4), (2, 8)):
        assert len(seen[i]) >= 6
        for w in seen[i]:
            levels = max(len(torch.unique(row)) for row in w)
            assert levels <= 2 ** bits, (i, bits, levels)
    assert max(len(torch.unique(row)) for w in seen[0] for row in w) > 2 ** 8  # float: no grid
    moved = {n.split(".wq.")[1] for n, p in net.named_parameters() if ".wq." in n and not torch.equal(p, before[n])}
    assert {"log_factor.b4", "log_factor.b8"} <= moved


# --------------------------------------------------------------------------- members
def test_random_members_draw_quantized_activations():
    """Once every bit-width is enabled, random members' layers use 8-bit activations
    about half of the time (uniform over {8, 16}), and the smallest member always does."""
    space = SearchSpace.from_dict(lm_space())
    acts, smallest = [], set()
    for step in range(60, 101):
        members = sandwich(space, seed=0, step=step, steps=100, n_random=3, stages=(0.2, 0.5))
        acts += [la.act_bits for m in members if m.role == "random" for la in m.arch.decoder]
        smallest |= {la.act_bits for la in members[1].arch.decoder}
    share = acts.count(8) / len(acts)
    assert 0.35 < share < 0.65 and set(acts) == {8, 16}
    assert smallest == {8}
