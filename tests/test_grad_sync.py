"""One gradient all-reduce per sandwich step (``cosearch.training.grad_sync``): two gloo ranks
end with bit-identical weights, equal (to rounding) to one process that trains on both
ranks' rows at once, and with the same optimizer state; full runs resume to the same weights."""
from __future__ import annotations

import json

import pytest
import torch
import torch.multiprocessing as mp
from train_fixtures import lm_space, write_lm_text

from cosearch.model.supernet import Supernet
from cosearch.space import SearchSpace
from cosearch.training.grad_sync import data_parallel
from cosearch.training.sandwich import sandwich
from cosearch.training.train import DistInfo, TrainConfig, make_optimizer, run_worker, sandwich_step, train

WORLD = 2
#: steps 2 (float only), 5 (>= 4 bits) and 9 (all bit-widths) of 10
STEPS = (2, 5, 9)


def _space() -> SearchSpace:
    return SearchSpace.from_dict({**lm_space(), "dropout": 0.0})


def _global_batches() -> list[torch.Tensor]:
    """Per step 4 rows of 13 tokens, no padding: every rank's half holds as many target
    tokens as the other, so the mean of the two ranks' losses is the loss of all 4 rows."""
    g = torch.Generator().manual_seed(7)
    return [torch.randint(1, _space().vocab_size, (2 * WORLD, 13), generator=g) for _ in STEPS]


def _train_steps(rank: int | None, out: str, init: str | None = None) -> None:
    """Three sandwich steps: as rank ``rank`` of two (gloo) on its rows, or (None) alone on all rows."""
    torch.set_num_threads(1)
    if rank is not None:
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        space = _space()
        torch.manual_seed(0)
        net = Supernet(space).train()
        cfg = TrainConfig(steps=10, n_random=2).resolved(space)
        opt = make_optimizer(net, cfg)
        model = data_parallel(net, torch.device("cpu")) if rank is not None else net
        for step, rows in zip(STEPS, _global_batches()):
            if rank is not None:
                rows = rows.chunk(WORLD)[rank]
            members = sandwich(space, 0, step, cfg.steps, cfg.n_random, cfg.bit_stages)
            sandwich_step(model, net, opt, members, (rows[:, :-1],), rows[:, 1:], cfg, 0, space.vocab_size,
                          ddp=rank is not None)
        names = {id(p): n for n, p in net.named_parameters()}
        torch.save({"params": {n: p.detach() for n, p in net.named_parameters()},
                    "with_state": sorted(names[id(p)] for p in opt.state)}, out)
    finally:
        if rank is not None:
            dist.destroy_process_group()


def _spawn(target, args_of, n: int = WORLD) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=args_of(r)) for r in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0] * n


def test_two_ranks_match_each_other_and_one_process_on_both_ranks_rows(tmp_path):
    init = f"file://{tmp_path / 'store'}"
    outs = [str(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    _spawn(_train_steps, lambda r: (r, outs[r], init))
    _train_steps(None, str(tmp_path / "single.pt"))
    ranks = [torch.load(o) for o in outs]
    single = torch.load(tmp_path / "single.pt")
    # a parameter no member used (a bit-width's scale before its stage) gets no optimizer state
    assert ranks[0]["with_state"] == ranks[1]["with_state"] == single["with_state"]
    assert any("log_factor" in n for n in single["params"]) and not all(
        n in single["with_state"] for n in single["params"] if "log_factor" in n)
    for name, p in single["params"].items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
        if name.endswith("k.bias"):
            # zero gradient in exact arithmetic (softmax ignores a shift shared by a row's
            # logits): it holds rounding noise, which AdamW scales up to lr-sized steps
            continue
        torch.testing.assert_close(ranks[0]["params"][name], p, rtol=1e-5, atol=1e-6, msg=name)


# --------------------------------------------------------------------------- whole runs
def _worker(rank: int, init: str, job: dict, stop_at, out: str) -> None:
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        result = run_worker(job, DistInfo(rank=rank, world=WORLD), progress=False, stop_at=stop_at)
    finally:
        dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump(result, f)


def _process_runner(tmp_path, tag: str):
    """A Ray-free ``train`` runner: two spawned gloo processes running ``run_worker``."""
    results = []

    def runner(job: dict, progress: bool, stop_at) -> dict:
        init = f"file://{tmp_path / f'store_{tag}_{len(results)}'}"
        outs = [str(tmp_path / f"{tag}_{len(results)}_rank{r}.json") for r in range(WORLD)]
        _spawn(_worker, lambda r: (r, init, job, stop_at, outs[r]))
        got = [json.loads(open(o).read()) for o in outs]
        results.append(got)
        return got[0]
    return runner, results


@pytest.mark.slow
def test_two_process_runs_keep_ranks_identical_and_resume_to_the_same_weights(tmp_path):
    data = write_lm_text(tmp_path / "t.txt", lines=200)
    kw = dict(steps=6, max_tokens=128, n_random=1, log_every=2, ckpt_every=2, progress=False)
    runner, whole = _process_runner(tmp_path, "whole")
    s = train(lm_space(), "lm", data, tmp_path / "whole", workers=WORLD, runner=runner, **kw)
    assert s.finished and s.workers == WORLD
    assert whole[0][0]["state_digest"] == whole[0][1]["state_digest"] == s.state_digest

    runner, parts = _process_runner(tmp_path, "killed")
    first = train(lm_space(), "lm", data, tmp_path / "killed", workers=WORLD, runner=runner, stop_at=3, **kw)
    assert not first.finished
    again = train(lm_space(), "lm", data, tmp_path / "killed", workers=WORLD, runner=runner, **kw)
    assert again.start_step == 2 and again.finished
    assert parts[1][0]["state_digest"] == parts[1][1]["state_digest"] == s.state_digest
