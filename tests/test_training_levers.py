"""Training levers behind options: the router term, worst-of-pool sampling, a fixed teacher."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from cosearch.cli import main
from cosearch.errors import UserError
from cosearch.model.supernet import Supernet, expert_specialisation
from cosearch.space import SearchSpace
from cosearch.training.router_balance import router_mutual_information
from cosearch.training.sandwich import Member, candidate_pools, sandwich, worst_of_pools
from cosearch.training.train import TrainConfig, sandwich_step, train

from train_fixtures import lm_space, one_thread, write_lm_text  # noqa: F401

FAST = dict(max_tokens=64, max_len=16, log_every=1, ckpt_every=2, progress=False)


# --------------------------------------------------------------------------- router term
def test_router_mutual_information_by_hand():
    """Two archs, one layer-wise MoS linear with 2 experts: arch 1 routes [s, 1-s] with
    s = sigmoid(2L), arch 2 routes [1/2, 1/2]. I = H(mean) - mean H, written out."""
    space = SearchSpace.from_dict(lm_space(mode="layer", experts=2, router_hidden=4, sublayers=["ffn"]))
    net = Supernet(space)
    mixed = [m for m in net.elastic_linears() if m.router is not None]
    L, n = 0.7, space.encoding_size()
    for m in mixed:  # logits [L, -L] * code[0]
        m.router = nn.Linear(n, 2)
        with torch.no_grad():
            m.router.weight.zero_()
            m.router.bias.zero_()
            m.router.weight[0, 0], m.router.weight[1, 0] = L, -L
    codes = torch.zeros(2, n)
    codes[0, 0] = 1.0
    s = 1 / (1 + math.exp(-2 * L))

    def h(*p):
        return -sum(x * math.log(x) for x in p)
    mean = (s + 0.5) / 2
    expected = h(mean, 1 - mean) - (h(s, 1 - s) + h(0.5, 0.5)) / 2
    assert float(router_mutual_information(net, codes).detach()) == pytest.approx(expected, rel=1e-5)
    assert len(mixed) == 2 * len(net.model.decoder_layers)  # fc1 and fc2 of every layer


def test_the_router_term_keeps_mixtures_arch_dependent(one_thread):
    """Same steps, same seed: with the term the routers' spread across archs ends higher."""
    space = SearchSpace.from_dict(lm_space(mode="layer", experts=2, router_hidden=8))
    probes = [space.largest(), space.smallest()] + [space.sample(s) for s in range(4)]
    x = torch.randint(3, space.vocab_size, (4, 12), generator=torch.Generator().manual_seed(0))
    from cosearch.training.router_balance import balance_loss

    def spread(weight):
        torch.manual_seed(0)
        net = Supernet(space)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for step in range(1, 16):
            members = sandwich(space, 0, step, 15, n_random=1, stages=None)
            sandwich_step(net, net, opt, members, (x,), x, TrainConfig(), 0, space.vocab_size,
                          extra_loss=balance_loss(net, weight, 0, step))
        return expert_specialisation(net, probes)["router_spread"]
    assert spread(1.0) > 1.5 * spread(0.0)


# --------------------------------------------------------------------------- deep random members
def test_deep_random_members_take_every_stacks_most_layers_and_leave_the_rest_as_drawn():
    from train_fixtures import mt_space
    space = SearchSpace.from_dict(mt_space())  # encoder and decoder of 1 or 2 layers
    for step in range(20):
        plain = sandwich(space, 3, step, 20, n_random=3)
        deep = sandwich(space, 3, step, 20, n_random=3, deep_random=1)
        assert deep[:2] == plain[:2]  # largest and smallest untouched
        first = deep[2].arch
        assert (len(first.encoder), len(first.decoder)) == (2, 2)
        # the same draws: the plain member's layers are the deep one's first layers, with the
        # same widths (bits are drawn per layer afterwards, so they may shift)
        drawn = plain[2].arch
        assert (first.encoder_embed_dim, first.decoder_embed_dim) == (drawn.encoder_embed_dim, drawn.decoder_embed_dim)
        for side in ("encoder", "decoder"):
            ours, theirs = getattr(first, side), getattr(drawn, side)
            assert [(la.ffn_dim, la.heads) for la in ours[:len(theirs)]] == [(la.ffn_dim, la.heads) for la in theirs]
    assert sandwich(space, 3, 5, 20, n_random=3, deep_random=0) == sandwich(space, 3, 5, 20, n_random=3)
    # only the first is forced: the other random members keep their drawn depths
    for k in (3, 4):  # the second and the third random member
        rest = [sandwich(space, 3, step, 20, n_random=3, deep_random=1)[k].arch for step in range(20)]
        assert any((len(a.encoder), len(a.decoder)) != (2, 2) for a in rest)
    # every random member deep when all are asked for; uniform draws hit depth 2 in only some
    every = [m.arch for step in range(20) for m in sandwich(space, 3, step, 20, n_random=2, deep_random=2)[2:]]
    assert all((len(a.encoder), len(a.decoder)) == (2, 2) for a in every)
    uniform = [m.arch for step in range(20) for m in sandwich(space, 3, step, 20, n_random=2)[2:]]
    assert any((len(a.encoder), len(a.decoder)) != (2, 2) for a in uniform)


def test_the_default_sandwich_draws_what_it_drew_before_deep_random_existed():
    import hashlib
    from train_fixtures import mt_space
    # digests of 40 steps of members (seed 7, three random), computed at 655c77c, before the
    # flag: a changed random stream would change every run's members, and resumes with them
    for space, digest in ((lm_space(), "32a20d633d793e26"), (mt_space(), "176fed565962c5cf")):
        space = SearchSpace.from_dict(space)
        for kw in ({}, {"deep_random": 0}):
            text = json.dumps([[m.role, m.arch.to_json()] for step in range(40)
                               for m in sandwich(space, 7, step, 40, n_random=3, **kw)])
            assert hashlib.sha256(text.encode()).hexdigest()[:16] == digest


def test_deep_random_is_checked_and_resumes_to_the_same_weights(tmp_path, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    kw = dict(FAST, steps=4, deep_random=1, seed=2)
    full = train(lm_space(), "lm", data, tmp_path / "a", **kw)
    train(lm_space(), "lm", data, tmp_path / "b", stop_at=2, **kw)
    resumed = train(lm_space(), "lm", data, tmp_path / "b", **kw)
    assert resumed.start_step == 2 and resumed.state_digest == full.state_digest
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["deep_random"] == 1
    plain = train(lm_space(), "lm", data, tmp_path / "p", **dict(kw, deep_random=0))
    assert plain.state_digest != full.state_digest  # the deep members are applied, not only recorded
    with pytest.raises(UserError, match=r"deep_random.*between 0 and n_random \(2\)"):
        train(lm_space(), "lm", data, tmp_path / "c", **dict(kw, deep_random=3))
    with pytest.raises(UserError, match="do not combine"):  # the pool would swap the deep member away
        train(lm_space(), "lm", data, tmp_path / "c", **dict(kw, sample_pool=2))
    assert not (tmp_path / "c").exists()


def test_one_deep_member_is_the_default_where_a_sandwich_can_take_it(tmp_path, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    kw = dict(FAST, steps=4, seed=2)

    def cfg(name):
        return json.loads((tmp_path / name / "config.json").read_text())["train"]
    default = train(lm_space(), "lm", data, tmp_path / "d", **kw)
    assert cfg("d")["deep_random"] == 1
    one = train(lm_space(), "lm", data, tmp_path / "one", **dict(kw, deep_random=1))
    none = train(lm_space(), "lm", data, tmp_path / "zero", **dict(kw, deep_random=0))
    assert default.state_digest == one.state_digest != none.state_digest
    # no random member to make deep, or a pool that would swap it away: none, and no refusal
    train(lm_space(), "lm", data, tmp_path / "nr0", **dict(kw, n_random=0))
    train(lm_space(), "lm", data, tmp_path / "pool", **dict(kw, sample_pool=2))
    assert cfg("nr0")["deep_random"] == 0 and cfg("pool")["deep_random"] == 0
    # one standalone arch has no sandwich
    space = SearchSpace.from_dict(lm_space())
    train(space, "lm", data, tmp_path / "arch", arch=space.smallest(), **kw)
    assert cfg("arch")["deep_random"] == 0
    # with one random member it would be the only one: uniform (never measured deep)
    train(lm_space(), "lm", data, tmp_path / "nr1", **dict(kw, n_random=1))
    assert cfg("nr1")["deep_random"] == 0
    # the command line leaves it to the same default
    cli = ["train", "--space", "tiny_lm", "--task", "lm", "--data", str(data), "--steps", "1", "--max-tokens", "64",
           "--max-len", "16", "--no-progress"]
    assert main([*cli, "--out", str(tmp_path / "cli")]) == 0 and cfg("cli")["deep_random"] == 1
    # another sandwich on an existing run is refused naming what changed, not the carried default
    with pytest.raises(UserError, match="made with n_random=2, but this command gives n_random=0"):
        train(lm_space(), "lm", data, tmp_path / "d", **dict(kw, n_random=0))
    with pytest.raises(UserError, match="made with sample_pool=1, but this command gives sample_pool=2"):
        train(lm_space(), "lm", data, tmp_path / "d", **dict(kw, sample_pool=2))


def test_a_run_from_before_deep_members_resumes_as_it_was_made(tmp_path, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    kw = dict(FAST, steps=4, seed=2)
    full = train(lm_space(), "lm", data, tmp_path / "full", **dict(kw, deep_random=0))
    train(lm_space(), "lm", data, tmp_path / "old", stop_at=2, **dict(kw, deep_random=0))
    path = tmp_path / "old" / "config.json"  # as written before the setting existed
    config = json.loads(path.read_text())
    del config["train"]["deep_random"]
    path.write_text(json.dumps(config))
    with pytest.raises(UserError, match="deep_random"):  # asked for another recipe: refused
        train(lm_space(), "lm", data, tmp_path / "old", **dict(kw, deep_random=1))
    resumed = train(lm_space(), "lm", data, tmp_path / "old", **kw)  # the same command, no flag
    assert resumed.start_step == 2 and resumed.state_digest == full.state_digest
    # and a run made with 0 on purpose resumes with 0 when the flag is left out
    train(lm_space(), "lm", data, tmp_path / "new", stop_at=2, **dict(kw, deep_random=0))
    assert train(lm_space(), "lm", data, tmp_path / "new", **kw).state_digest == full.state_digest


# --------------------------------------------------------------------------- shallow random members
def test_shallow_random_members_take_every_stacks_fewest_layers_after_the_deep_ones():
    from train_fixtures import mt_space
    space = SearchSpace.from_dict(mt_space())  # encoder and decoder of 1 or 2 layers
    depths = []
    for step in range(20):
        plain = sandwich(space, 3, step, 20, n_random=3, deep_random=1)
        mixed = sandwich(space, 3, step, 20, n_random=3, deep_random=1, shallow_random=1)
        assert mixed[:3] == plain[:3]  # largest, smallest and the deep member untouched
        shallow, drawn = mixed[3].arch, plain[3].arch
        assert (len(shallow.encoder), len(shallow.decoder)) == (1, 1)
        # the same draws: the shallow member keeps the drawn widths of its first layers
        assert (shallow.encoder_embed_dim, shallow.decoder_embed_dim) == (drawn.encoder_embed_dim,
                                                                          drawn.decoder_embed_dim)
        assert (shallow.decoder[0].ffn_dim, shallow.decoder[0].heads) == (drawn.decoder[0].ffn_dim,
                                                                          drawn.decoder[0].heads)
        depths.append((len(drawn.encoder), len(drawn.decoder)))
        depths.append(tuple(len(getattr(mixed[4].arch, side)) for side in ("encoder", "decoder")))
    # uniform draws (the plain member, and the mixed sandwich's last one) are not all shallow
    assert any(d != (1, 1) for d in depths)
    every = [m.arch for step in range(20)
             for m in sandwich(space, 3, step, 20, n_random=2, deep_random=0, shallow_random=2)[2:]]
    assert all((len(a.encoder), len(a.decoder)) == (1, 1) for a in every)
    assert sandwich(space, 3, 5, 20, n_random=3, shallow_random=0) == sandwich(space, 3, 5, 20, n_random=3)
    with pytest.raises(ValueError, match="both deepest and shallowest"):
        space.sample(0, deepest=True, shallowest=True)


def test_shallow_random_is_checked_recorded_and_resumed(tmp_path, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    kw = dict(FAST, steps=4, seed=2, deep_random=0, shallow_random=1)

    def cfg(name):
        return json.loads((tmp_path / name / "config.json").read_text())["train"]
    full = train(lm_space(), "lm", data, tmp_path / "a", **kw)
    assert cfg("a")["shallow_random"] == 1
    plain = train(lm_space(), "lm", data, tmp_path / "p", **dict(kw, shallow_random=0))
    assert plain.state_digest != full.state_digest  # applied, not only recorded
    # left out on the rerun of a killed run: resumed with the recorded member, same weights
    train(lm_space(), "lm", data, tmp_path / "b", stop_at=2, **kw)
    resumed = train(lm_space(), "lm", data, tmp_path / "b", **dict(kw, shallow_random=None))
    assert resumed.start_step == 2 and resumed.state_digest == full.state_digest
    # beyond the random members the deep ones leave
    with pytest.raises(UserError, match=r"shallow_random=2 is invalid.*n_random - deep_random \(2 - 1\): lower "
                                        "--shallow-random, lower --deep-random or raise --n-random"):
        train(lm_space(), "lm", data, tmp_path / "c", **dict(kw, deep_random=1, shallow_random=2))
    with pytest.raises(UserError, match=r"shallow_random=3 is invalid.*\(2 - 0\): lower --shallow-random or raise"):
        train(lm_space(), "lm", data, tmp_path / "c", **dict(kw, shallow_random=3))
    with pytest.raises(UserError, match=r"shallow_random=-1 is invalid; it must be between 0 and n_random - "
                                        r"deep_random \(2 - 0\)$"):
        train(lm_space(), "lm", data, tmp_path / "c", **dict(kw, shallow_random=-1))
    # asked for with the automatic deep member left out: that one is 0 (they pull depth opposite ways)
    train(lm_space(), "lm", data, tmp_path / "auto", **dict(kw, deep_random=None))
    assert (cfg("auto")["deep_random"], cfg("auto")["shallow_random"]) == (0, 1)
    # a rerun with another sandwich is refused naming the change, not the carried member
    with pytest.raises(UserError, match="made with n_random=2, but this command gives n_random=0"):
        train(lm_space(), "lm", data, tmp_path / "a", **dict(kw, n_random=0, shallow_random=None))
    with pytest.raises(UserError, match="--shallow-random 1 and --sample-pool 2 do not combine"):
        train(lm_space(), "lm", data, tmp_path / "c", **dict(kw, sample_pool=2))
    space = SearchSpace.from_dict(lm_space())
    with pytest.raises(UserError, match="a standalone --arch run has none"):
        train(space, "lm", data, tmp_path / "c", arch=space.smallest(), **dict(kw, deep_random=None))
    assert not (tmp_path / "c").exists()
    # another flag on an existing run is refused naming the change
    with pytest.raises(UserError, match="made with shallow_random=1, but this command gives shallow_random=0"):
        train(lm_space(), "lm", data, tmp_path / "a", **dict(kw, shallow_random=0))
    # a run made before the setting existed resumes as made (0), and the CLI flag records it
    train(lm_space(), "lm", data, tmp_path / "old", stop_at=2, **dict(kw, shallow_random=0))
    path = tmp_path / "old" / "config.json"
    config = json.loads(path.read_text())
    del config["train"]["shallow_random"]
    path.write_text(json.dumps(config))
    old = train(lm_space(), "lm", data, tmp_path / "old", **dict(kw, shallow_random=None))
    assert old.start_step == 2 and old.state_digest == plain.state_digest
    cli = ["train", "--space", "tiny_lm", "--task", "lm", "--data", str(data), "--steps", "1", "--max-tokens", "64",
           "--max-len", "16", "--no-progress", "--deep-random", "0", "--shallow-random", "2"]
    assert main([*cli, "--out", str(tmp_path / "cli")]) == 0 and cfg("cli")["shallow_random"] == 2


# --------------------------------------------------------------------------- worst-of-pool
def test_candidate_pools_hold_archs_of_about_the_members_size():
    space = SearchSpace.from_dict(lm_space())
    members = sandwich(space, 0, 90, 100, n_random=2)
    pools = candidate_pools(space, members, 0, 90, 100, pool=4)
    assert len(pools) == 2 and [p[0] for p in pools] == [m.arch for m in members[2:]]
    for pool in pools:
        assert 2 <= len(pool) <= 4
        sizes = [space.weight_size_bits(a) for a in pool]
        assert max(sizes) <= 1.15 * sizes[0] and min(sizes) >= sizes[0] / 1.15
    assert pools == candidate_pools(space, members, 0, 90, 100, pool=4)  # a function of (seed, step)
    assert candidate_pools(space, members, 0, 90, 100, pool=1) == [[m.arch] for m in members[2:]]


def test_worst_of_pools_takes_the_highest_loss_and_keeps_the_fixed_members():
    space = SearchSpace.from_dict(lm_space())
    a, b, c, d = (space.sample(i) for i in range(4))
    members = [Member("largest", space.largest()), Member("smallest", space.smallest()),
               Member("random", a), Member("random", c)]
    loss = {a: 1.0, b: 3.0, c: 2.0, d: 0.5}
    out = worst_of_pools(members, [[a, b], [c, d]], loss.__getitem__)
    assert [m.arch for m in out] == [space.largest(), space.smallest(), b, c]
    assert [m.role for m in out] == ["largest", "smallest", "random", "random"]
    # losses as tensors (what training passes) pick the same; ties take the first candidate
    assert worst_of_pools(members, [[a, b], [c, d]], lambda x: torch.tensor(loss[x])) == out
    assert [m.arch for m in worst_of_pools(members, [[a, b], [c, d]], lambda x: torch.tensor(1.0))][2:] == [a, c]


def test_worst_of_pool_training_runs_and_resumes_to_the_same_weights(tmp_path, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    kw = dict(FAST, steps=4, sample_pool=3, router_balance=0.1, seed=2)
    full = train(lm_space(), "lm", data, tmp_path / "a", **kw)
    train(lm_space(), "lm", data, tmp_path / "b", stop_at=2, **kw)
    resumed = train(lm_space(), "lm", data, tmp_path / "b", **kw)
    assert resumed.start_step == 2 and resumed.state_digest == full.state_digest
    with pytest.raises(UserError, match="sample_pool"):
        train(lm_space(), "lm", data, tmp_path / "c", **dict(kw, sample_pool=0))
    with pytest.raises(UserError, match="sample_pool"):  # 10^6 forwards a step would hang training
        train(lm_space(), "lm", data, tmp_path / "c", **dict(kw, sample_pool=65))


def test_distillation_is_off_by_default_and_a_run_made_with_it_resumes_without_the_flag(tmp_path, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    kw = dict(FAST, steps=4)
    new = train(lm_space(), "lm", data, tmp_path / "new", **kw)
    assert json.loads((tmp_path / "new" / "config.json").read_text())["train"]["distill"] == 0.0
    # a run made with 0.5 (the default before 2026-12-05), stopped at step 2, then its
    # command rerun without --distill (the CLI's None): it resumes as it was made
    train(lm_space(), "lm", data, tmp_path / "old", stop_at=2, distill=0.5, **kw)
    resumed = train(lm_space(), "lm", data, tmp_path / "old", distill=None, **kw)
    assert resumed.start_step == 2 and resumed.finished
    assert json.loads((tmp_path / "old" / "config.json").read_text())["train"]["distill"] == 0.5
    assert new.losses != resumed.losses  # the 0.5 is applied, not only recorded
    with pytest.raises(UserError, match="made with distill=0.5"):  # an explicit other weight is refused
        train(lm_space(), "lm", data, tmp_path / "old", distill=0.0, **kw)


# --------------------------------------------------------------------------- teacher
def test_cli_distilled_standalone_records_its_teacher(tmp_path, capsys, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    sup = tmp_path / "sup"
    common = ["--space", "tiny_lm", "--task", "lm", "--data", str(data), "--steps", "2", "--max-tokens", "64",
              "--max-len", "16", "--no-progress"]
    assert main(["train", *common, "--out", str(sup)]) == 0
    capsys.readouterr()
    kd = tmp_path / "kd"
    assert main(["train", *common, "--out", str(kd), "--arch", "smallest", "--teacher", str(sup), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["finished"]
    assert json.loads((kd / "config.json").read_text())["teacher"] == str(sup.resolve())
    # the supernet trained without distillation (the default); the teacher run with 0.5
    assert json.loads((sup / "config.json").read_text())["train"]["distill"] == 0.0
    assert json.loads((kd / "config.json").read_text())["train"]["distill"] == 0.5
    metrics = [json.loads(x) for x in (kd / "metrics.jsonl").read_text().splitlines()]
    assert "kd_standalone" in metrics[-1] and metrics[-1]["kd_standalone"] > 0
    # refused before anything is written: no --arch, not a run, a run of another task
    assert main(["train", *common, "--out", str(tmp_path / "x1"), "--teacher", str(sup)]) == 2
    assert main(["train", *common, "--out", str(tmp_path / "x2"), "--arch", "smallest", "--teacher",
                 str(tmp_path)]) == 2
    assert main(["train", *common, "--out", str(tmp_path / "x3"), "--arch", "smallest", "--teacher", str(sup),
                 "--distill", "0"]) == 2
    err = capsys.readouterr().err
    assert "give --arch too" in err and "not a cosearch run" in err and "--distill 0 would learn nothing" in err
    assert not any((tmp_path / x).exists() for x in ("x1", "x2", "x3"))


def test_levers_that_would_do_nothing_are_refused_before_any_work(tmp_path, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    with_mos, no_mos = SearchSpace.from_dict(lm_space()), SearchSpace.from_dict(lm_space(mode="none", experts=1))
    cases = [(with_mos, dict(arch=with_mos.smallest(), sample_pool=2), "a standalone --arch run has none"),
             (with_mos, dict(arch=with_mos.smallest(), router_balance=0.1), "a standalone --arch run has none"),
             (with_mos, dict(arch=with_mos.smallest(), deep_random=1), "a standalone --arch run has none"),
             (no_mos, dict(router_balance=0.1), "has mos mode 'none'")]
    for i, (space, kw, msg) in enumerate(cases):
        with pytest.raises(UserError, match=msg):
            train(space, "lm", data, tmp_path / f"r{i}", steps=1, **FAST, **kw)
        assert not (tmp_path / f"r{i}").exists()


def test_a_negative_seed_is_one_line_and_writes_nothing(tmp_path, capsys, one_thread):
    data = write_lm_text(tmp_path / "t.txt")
    out = tmp_path / "r"
    assert main(["train", "--space", "tiny_lm", "--task", "lm", "--data", str(data), "--out", str(out),
                 "--steps", "1", "--max-tokens", "64", "--max-len", "16", "--no-progress", "--seed", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed -1 is invalid" in err[0] and not out.exists()
