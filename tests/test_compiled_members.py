"""The sandwich's fixed members (largest, smallest) through one compiled supernet model, the
random members eagerly: same training step as all-eager, and no graph per random arch."""
from __future__ import annotations

import pytest
import torch
from train_fixtures import lm_space, mt_space

from cosearch.model.compiled_members import (COMPILE_ENV, MemberForward, compile_choice, eager_forward,
                                             member_forward)
from cosearch.errors import UserError
from cosearch.model.fused import compile_counts, use_fused
from cosearch.training.sandwich import sandwich
from cosearch.space import SearchSpace
from cosearch.model.supernet import Supernet
from cosearch.training.train import TrainConfig, make_optimizer, sandwich_step


def _train(space, forward, fused_path: bool, batches, steps_of, distill: float = 0.5) -> Supernet:
    torch.manual_seed(0)
    net = use_fused(Supernet(space).train(), fused_path)
    cfg = TrainConfig(steps=10, n_random=2, distill=distill).resolved(space)
    opt = make_optimizer(net, cfg)
    fwd = forward(net) if forward is not None else None
    for (src, tgt), step in zip(batches, steps_of):
        members = sandwich(space, 0, step, cfg.steps, cfg.n_random, cfg.bit_stages)
        kw = {} if fwd is None else {"forward": fwd}
        sandwich_step(net, net, opt, members, (src, tgt[:, :-1]), tgt[:, 1:], cfg, 0, space.vocab_size, **kw)
    return net


def _batches(space) -> list[tuple]:
    """Three (source, target) batches of three shapes."""
    g = torch.Generator().manual_seed(1)
    return [tuple(torch.randint(1, space.vocab_size, (b, n), generator=g) for n in (s, t))
            for b, s, t in ((3, 7, 9), (4, 5, 6), (2, 11, 8))]


# distill 0.5 (``_train``'s default) keeps the teacher's KL term in the compiled members under
# test. At 0 (the default since 2026-12-05) the two trajectories drift apart on these batches (8e-4
# in one 4-bit quantizer scale after three steps): most likely rounding-level weight differences
# flip a rounding in the quantizer, and AdamW turns the gradient jump into a step. From the same
# weights the gradients agree: the test after this one checks that at distill 0.
@pytest.mark.parametrize("fused_path", [False, True])
def test_compiled_fixed_members_train_as_eager_and_compile_once_per_fixed_arch(fused_path):
    torch._dynamo.reset()
    space = SearchSpace.from_dict(mt_space(dropout=0.0))
    # three batch shapes, and steps 2 (float only), 3 and 9 (all bit-widths): random members
    # differ at every step, the smallest changes its bits once
    batches = _batches(space)
    steps_of = (2, 9, 9)
    eager = _train(space, None, fused_path, batches, steps_of)
    before = compile_counts().get("fixed_members", 0)
    # aot_eager: no compiler (the traced graph runs op by op, with AOT autograd's backward)
    compiled = _train(space, lambda net: MemberForward(net, backend="aot_eager"), fused_path, batches, steps_of)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        if name.endswith("k.bias"):
            # its gradient is zero in exact arithmetic (softmax ignores a shift shared by a
            # row's logits), so it holds rounding noise, which AdamW scales up to lr-sized steps
            continue
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    # largest (float), smallest at float (step 2) and at its lowest bits (step 9): three graphs,
    # one per fixed arch; new batch shapes and the four random archs compile nothing
    assert compile_counts()["fixed_members"] - before == 3


def test_compiled_members_give_eager_gradients_from_the_same_weights_without_distillation():
    space = SearchSpace.from_dict(mt_space(dropout=0.0))
    batches = _batches(space)
    # two eager steps (float, then all bit-widths), then the third from these very weights
    state = _train(space, None, False, batches[:2], (2, 9), distill=0.0).state_dict()
    cfg = TrainConfig(steps=10, n_random=2, distill=0.0).resolved(space)
    members = sandwich(space, 0, 9, cfg.steps, cfg.n_random, cfg.bit_stages)
    src, tgt = batches[2]
    grads = []
    for compiled in (False, True):
        torch._dynamo.reset()
        net = Supernet(space).train()
        net.load_state_dict(state)
        got = {}

        class Capture(torch.optim.SGD):  # the step's gradients, read when it steps (lr 0: no move)
            def step(self, closure=None, _net=net, _got=got):
                _got.update({n: p.grad.clone() for n, p in _net.named_parameters() if p.grad is not None})
                return super().step(closure)

        kw = {"forward": MemberForward(net, backend="aot_eager")} if compiled else {}
        sandwich_step(net, net, Capture(net.parameters(), lr=0.0), members, (src, tgt[:, :-1]), tgt[:, 1:], cfg, 0,
                      space.vocab_size, **kw)
        grads.append(got)
    eager, compiled = grads
    assert eager.keys() == compiled.keys() and len(eager) > 50
    for name, ge in eager.items():
        if name.endswith("k.bias"):  # a gradient that is zero in exact arithmetic (see above)
            continue
        # float32 rounding of the router MLPs reaches 2e-4 of a tensor's largest gradient
        assert float((ge - compiled[name]).abs().max()) <= 1e-3 * float(ge.abs().max()) + 1e-12, name


def test_the_environment_picks_the_member_forward(monkeypatch):
    net = Supernet(SearchSpace.from_dict(mt_space()))
    monkeypatch.delenv(COMPILE_ENV, raising=False)
    assert compile_choice() == ""
    monkeypatch.setenv(COMPILE_ENV, "fixed")
    assert compile_choice() == "fixed"
    assert not isinstance(member_forward(net), MemberForward)  # CPU: never compiled by default
    assert isinstance(member_forward(net, compile_fixed=True), MemberForward)
    monkeypatch.setenv(COMPILE_ENV, "all")
    assert compile_choice() == "all"
    assert member_forward(net) is eager_forward  # CPU: never compiled by default
    monkeypatch.setenv(COMPILE_ENV, "every")
    with pytest.raises(UserError, match=f"{COMPILE_ENV}='every' is invalid"):
        compile_choice()


def test_pad_length_pads_to_the_multiple_with_the_pad_id():
    from cosearch.model.compiled_members import pad_length
    x = torch.arange(1, 11).view(2, 5)
    assert torch.equal(pad_length(x, 0, 4), torch.tensor([[1, 2, 3, 4, 5, 0, 0, 0], [6, 7, 8, 9, 10, 0, 0, 0]]))
    assert pad_length(x, 0, 5) is x


def _ddp_rank(rank: int, world: int, init: str, compiled: bool, out: str) -> None:
    """One DDP rank (gloo): two sandwich steps on this rank's batches; saves its weights."""
    import torch.distributed as dist

    from cosearch.training.grad_sync import data_parallel
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        space = SearchSpace.from_dict(mt_space(dropout=0.0))
        torch.manual_seed(0)
        net = Supernet(space).train()
        cfg = TrainConfig(steps=10, n_random=2, distill=0.5).resolved(space)  # as _train's default
        opt = make_optimizer(net, cfg)
        model = data_parallel(net, torch.device("cpu"))  # as cosearch.training.train.run_worker
        kw = {"forward": MemberForward(net, backend="aot_eager")} if compiled else {}
        g = torch.Generator().manual_seed(10 + rank)  # each rank its own batches
        for step, (b, s, t) in zip((2, 9), ((3, 7, 9), (2, 5, 11))):
            src, tgt = (torch.randint(1, space.vocab_size, (b, n), generator=g) for n in (s, t))
            members = sandwich(space, 0, step, cfg.steps, cfg.n_random, cfg.bit_stages)
            sandwich_step(model, net, opt, members, (src, tgt[:, :-1]), tgt[:, 1:], cfg, 0, space.vocab_size,
                          ddp=True, **kw)
        torch.save({n: p.detach() for n, p in net.named_parameters()}, out)
    finally:
        dist.destroy_process_group()


def _ddp_run(tmp_path, compiled: bool) -> list[dict]:
    import torch.multiprocessing as mp
    tag = "compiled" if compiled else "eager"
    init = f"file://{tmp_path / f'store_{tag}'}"
    outs = [str(tmp_path / f"{tag}_rank{r}.pt") for r in range(2)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_ddp_rank, args=(r, 2, init, compiled, outs[r])) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    return [torch.load(o) for o in outs]


@pytest.mark.slow
def test_compiled_fixed_members_under_ddp_keep_ranks_equal_and_match_eager(tmp_path):
    """Under DDP every member runs on the bare module (compiled or not) and one all-reduce
    follows: the gradients are averaged over both ranks, as all-eager."""
    eager = _ddp_run(tmp_path, compiled=False)
    compiled = _ddp_run(tmp_path, compiled=True)
    for name in eager[0]:
        assert torch.equal(compiled[0][name], compiled[1][name]), name  # the ranks agree exactly
        assert torch.equal(eager[0][name], eager[1][name]), name
        if not name.endswith("k.bias"):  # see the single-process test
            torch.testing.assert_close(compiled[0][name], eager[0][name], rtol=1e-5, atol=1e-6, msg=name)


def _no_compile(monkeypatch):
    """``torch.compile`` as the identity: the padding and routing run, without a compiler."""
    monkeypatch.setattr(torch, "compile", lambda model, **kw: model)


@pytest.mark.parametrize("space_of", [mt_space, lm_space])
def test_padded_compiled_gives_the_unpadded_logits_of_both_families(monkeypatch, space_of):
    # eval (no dropout); real pad tokens at the ends of some rows, as in a batch; pad_id 3:
    # not the default 0, so padding with a wrong id changes the encoder's logits
    _no_compile(monkeypatch)
    from cosearch.model.compiled_members import padded_compiled
    space = SearchSpace.from_dict(space_of())
    torch.manual_seed(0)
    net = Supernet(space, pad_id=3).eval()
    run = padded_compiled(net.model, 3)
    g = torch.Generator().manual_seed(2)
    lens = (13, 11) if space.is_encdec else (13,)
    inputs = tuple(torch.randint(4, space.vocab_size, (3, n), generator=g) for n in lens)
    for x in inputs:
        x[0, -4:] = 3
    for arch in (space.largest(), space.smallest()):
        net.set_arch(arch)
        with torch.no_grad():
            torch.testing.assert_close(run(*inputs), net.model(*inputs), rtol=1e-5, atol=1e-5)


def test_padded_compiled_feeds_the_model_pad_id_padded_contiguous_dynamic_inputs(monkeypatch):
    _no_compile(monkeypatch)
    from cosearch.model.compiled_members import padded_compiled
    seen = []

    def model(*xs):
        seen.append(xs)
        return xs[-1].float()[..., None].expand(-1, -1, 5)  # "logits" along the last input

    run = padded_compiled(model, pad_id=7)
    src, tgt = torch.ones(2, 11, dtype=torch.long), torch.ones(2, 14, dtype=torch.long)[:, :-1]
    out = run(src[:, :8], tgt[:, :8])  # 8: already a multiple, no padding
    assert out.shape == (2, 8, 5)
    out = run(src, tgt)
    (ps, pt) = seen[-1]
    assert ps.shape == (2, 16) and pt.shape == (2, 16)
    assert torch.equal(ps[:, 11:], torch.full((2, 5), 7)) and torch.equal(pt[:, 13:], torch.full((2, 3), 7))
    assert all(x.is_contiguous() for x in (*seen[0], ps, pt))  # a sliced tgt[:, :-1] too
    for x in (*seen[0], ps, pt):  # batch and length dynamic from the first call
        assert {0, 1} <= set(getattr(x, "_dynamo_weak_dynamic_indices", ()))
    assert out.shape == (2, 13, 5)  # the real target positions, the first ones
    assert torch.equal(out, torch.ones(2, 13, 5))


def test_the_same_fixed_arch_twice_in_a_row_compiles_one_graph():
    # set_arch keeps the arch-code cache when the arch is unchanged (an eager member of the
    # same arch before, or the largest-only timing); Dynamo guards on that cache
    torch._dynamo.reset()
    from cosearch.training.sandwich import Member
    space = SearchSpace.from_dict(mt_space())
    net = Supernet(space).eval()
    graphs: list = []

    def counting_eager(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    fwd = MemberForward(net, backend=counting_eager)
    largest = Member("largest", space.largest())
    inputs = (torch.randint(1, space.vocab_size, (2, 5)), torch.randint(1, space.vocab_size, (2, 6)))
    with torch.no_grad():
        fwd(net, largest, inputs)
        net(*inputs, arch=space.largest())  # eager, same arch: fills the cache
        fwd(net, largest, inputs)
        fwd(net, largest, inputs)
    assert len(graphs) == 1
