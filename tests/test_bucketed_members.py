"""Every sandwich member through compiled attention/FFN blocks at width buckets: the same
training as all-eager, and a fixed number of graphs whatever the archs and bit-widths."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from train_fixtures import lm_space, mt_space

from cosearch.model.bucketed_members import BucketedForward, configure_buckets
from cosearch.model.buckets import BucketPlan, block_shapes, keep_largest, round_up
from cosearch.model.fused import compile_counts
from cosearch.model.supernet import Supernet
from cosearch.space import SearchSpace
from cosearch.training.sandwich import Member, sandwich
from cosearch.training.train import TrainConfig, sandwich_step


def _batches(space, shapes, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randint(1, space.vocab_size, (b, n), generator=g) for n in lens) for b, *lens in shapes]


def _train(space, make_forward, batches, steps_of) -> Supernet:
    """Sandwich steps with plain SGD: AdamW would turn the rounding noise of near-zero
    gradients (key biases, some learned scales) into lr-sized steps of either sign."""
    torch.manual_seed(0)
    net = Supernet(space).train()
    cfg = TrainConfig(steps=10, n_random=2).resolved(space)
    opt = torch.optim.SGD(net.parameters(), lr=0.3)
    kw = {} if make_forward is None else {"forward": make_forward(net)}
    for xs, step in zip(batches, steps_of):
        members = sandwich(space, 0, step, cfg.steps, cfg.n_random, cfg.bit_stages)
        if space.is_encdec:
            src, tgt = xs
            inputs, target = (src, tgt[:, :-1]), tgt[:, 1:]
        else:
            inputs, target = (xs[0][:, :-1],), xs[0][:, 1:]
        sandwich_step(net, net, opt, members, inputs, target, cfg, 0, space.vocab_size, **kw)
    return net


def _lm_every_regime() -> dict:
    """The tiny lm space with every quantizer regime: binary, ternary, 2-bit and LSQ weights,
    LSQ (4-bit), min-max (8-bit) and float activations."""
    return {**lm_space(), "dropout": 0.0,
            "quantization": dict(weight_bits=[1, 1.58, 2, 4, 16], act_bits=[4, 8, 16])}


@pytest.mark.parametrize("space_of", [pytest.param(mt_space, marks=pytest.mark.slow), _lm_every_regime],
                         ids=["mt", "lm"])
def test_bucketed_members_train_as_eager(space_of):
    space = SearchSpace.from_dict(space_of())
    # three batch shapes; steps 2 (float only), 3 and 9 (all bit-widths); one bucket per
    # dimension, so the smaller widths and head counts run masked in the largest shape
    shapes = ((3, 7, 9), (4, 5, 6), (2, 11, 8)) if space.is_encdec else ((3, 9), (4, 6), (2, 12))
    batches = _batches(space, shapes)
    steps_of = (2, 3, 9)
    eager = _train(space, None, batches, steps_of)
    bucketed = _train(space, lambda net: BucketedForward(net, BucketPlan.from_space(space, 1), backend="aot_eager"),
                      batches, steps_of)
    moved = 0
    for (name, p), q in zip(eager.named_parameters(), bucketed.parameters()):
        # equal to rounding, except where rounding moved a value across a quantization
        # boundary (a wider matmul sums in another order): at most 1 element in 1,000
        off = ~torch.isclose(q, p, rtol=1e-5, atol=1e-6)
        assert int(off.sum()) <= p.numel() // 1000 and float((q - p).abs().max()) < 1e-3, name
        moved += "log_factor" in name and bool((p != 0).any())
    assert moved > 5  # the learned scales of the low bit-widths trained too


@pytest.mark.slow
def test_a_bucketed_run_compiles_one_graph_per_block_shape_and_no_more():
    torch._dynamo.reset()
    space = SearchSpace.from_dict(mt_space())
    torch.manual_seed(0)
    net = Supernet(space).train()
    fwd = BucketedForward(net, BucketPlan.from_space(space, 1), backend="aot_eager")
    before = compile_counts().get("bucketed_members", 0)

    def run(archs, batches):
        for arch, inputs in zip(archs, batches):
            fwd(net, Member("random", arch), inputs).float().logsumexp(-1).mean().backward()
        return compile_counts()["bucketed_members"] - before

    # widths 32/48 on each side, 4 heads and FFN 64 as the one bucket, no dropout: encoder
    # self-attention 2 (encoder width), decoder self-attention 2, cross-attention 2 x 2, FFN 2
    # (encoder and decoder FFNs of one width are one shape) = 10 graphs
    base = space.sample(3)
    cover = [replace(base, encoder_embed_dim=e, decoder_embed_dim=d) for e in (32, 48) for d in (32, 48)]
    assert run(cover, _batches(space, [(3, 7, 9)] * 4)) == 10
    # sandwiches at every bit-width stage, other batch shapes: nothing new
    members = [m.arch for step in (1, 9) for m in sandwich(space, 5, step, 10, 3, (0.2, 0.5))]
    shapes = [(2 + i % 3, 5 + i % 7, 4 + i % 5) for i in range(len(members))]
    assert run(members, _batches(space, shapes, seed=2)) == 10


def test_bucketed_layers_hold_the_bucket_shape_and_a_set_arch_restores_the_exact_one():
    space = SearchSpace.from_dict(mt_space())
    net = Supernet(space)
    small = space.with_bits(space.smallest(), 4, 8)
    configure_buckets(net, small, BucketPlan.from_space(space, 1))
    layer = net.model.decoder_layers[0]
    assert (layer.ffn.fc1.out_features, layer.self_attn.heads, layer.self_attn.q.out_features) == (64, 4, 32)
    assert torch.equal(layer.ffn.fc1.bucket.out_mask, torch.tensor([1.0] * 32 + [0.0] * 32))
    assert float(layer.ffn.fc2.bucket.n_cols) == 32
    assert layer.ffn.fc1.bucket.log_factor is layer.ffn.fc1.wq.log_factor["b4"]
    net.set_arch(small)
    assert (layer.ffn.fc1.out_features, layer.self_attn.heads, layer.ffn.fc1.bucket) == (32, 2, None)


def test_plan_rounds_up_to_the_largest_choices():
    assert keep_largest([512, 2048, 1024], 2) == (1024, 2048)
    assert keep_largest([4], 3) == (4,)
    assert [round_up(v, (1024, 2048)) for v in (512, 1024, 1500, 2048)] == [1024, 1024, 2048, 2048]
    plan = BucketPlan.from_space(SearchSpace.load("multi30k"))
    assert plan.ffn == {"encoder": (1024, 2048), "decoder": (1024, 2048)}
    assert plan.heads == {"encoder": (4, 8), "decoder": (4, 8)}
    # 3 widths x 2 buckets: 6 FFN, 6 + 6 self-attention; 3 x 3 widths x 2 buckets: 18 cross
    assert len(block_shapes(SearchSpace.load("multi30k"), plan)) == 36
    tiny = SearchSpace.from_dict(mt_space())
    assert len(block_shapes(tiny, BucketPlan.from_space(tiny, 1))) == 10  # as the graph test counts
    fixed = SearchSpace.load("hat_wmt14")  # a fixed attention width: head counts stay exact
    assert BucketPlan.from_space(fixed).heads["encoder"] == tuple(sorted(set(fixed.side("encoder").heads)))


def test_a_padded_lm_batch_with_its_attention_mask_gives_the_eager_logits():
    # pad id 3 (not 0), padding at the start of one row and the end of another: the mask
    # reaches the compiled self-attention as a (B, 1, T, S) key mask
    space = SearchSpace.from_dict({**lm_space(), "dropout": 0.0})
    torch.manual_seed(0)
    net = Supernet(space, pad_id=3).train()
    fwd = BucketedForward(net, BucketPlan.from_space(space, 1), backend="eager")
    tokens = torch.randint(4, space.vocab_size, (3, 11), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(tokens)
    tokens[0, :3], mask[0, :3] = 3, 0
    tokens[1, -4:], mask[1, -4:] = 3, 0
    for arch in (space.largest(), space.with_bits(space.smallest(), 2, 8)):
        with torch.no_grad():
            want = net(tokens, mask, arch=arch)
            got = fwd(net, Member("random", arch), (tokens, mask))
        real = mask.bool()
        torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5)
