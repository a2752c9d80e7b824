"""The one-all-reduce-per-step gradient sync on a device, without NCCL (issue 27, item 1).

Two gloo ranks share one device (gloo all-reduces CUDA tensors too, and unlike NCCL it lets
two ranks use one GPU), so a one-GPU machine checks the CUDA side of
``cosearch.training.grad_sync`` (expanded zero gradients, DDP's buckets, bf16 autocast) and,
with ``--compile-members all``, the bucketed compiled members under DDP: ``--steps`` sandwich
steps of ``train.sandwich_step`` on each rank's half of a random global batch, then the same
steps in this process on the whole batch. Reports whether the ranks' weights are
bit-identical and how far one process on the global batch is from them (bf16: not bitwise).

    python3 benchmarks/grad_sync_check.py --device cuda --space multi30k --out R.json   # ~1 min
    python3 benchmarks/grad_sync_check.py --device cpu --space tiny_lm --out R.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cosearch.model.supernet import Supernet  # noqa: E402
from cosearch.space import SearchSpace  # noqa: E402
from cosearch.training.grad_sync import data_parallel  # noqa: E402
from cosearch.training.sandwich import sandwich  # noqa: E402
from cosearch.training.train import TrainConfig, make_optimizer, sandwich_step  # noqa: E402

WORLD = 2


def batches(space, steps: int, rows: int, length: int, device) -> list:
    """Global batches of full rows (no padding: both halves hold as many target tokens)."""
    g = torch.Generator().manual_seed(7)
    return [torch.randint(4, space.vocab_size, (rows, length + 1), generator=g).to(device) for _ in range(steps)]


def train_steps(args, rank: int | None, out: str, init: str | None = None) -> None:
    """``args.steps`` sandwich steps as rank ``rank`` (or, None, alone on all rows)."""
    device = torch.device(args.device)
    if rank is not None:
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        os.environ["COSEARCH_COMPILE_MEMBERS"] = args.compile_members
        from cosearch.model.compiled_members import member_forward
        space = SearchSpace.from_dict({**SearchSpace.load(args.space).to_dict(), "dropout": 0.0})  # same on any split
        torch.manual_seed(0)
        net = Supernet(space, pad_id=0).to(device).train()
        cfg = TrainConfig(steps=10, n_random=2).resolved(space)
        opt = make_optimizer(net, cfg)
        model = data_parallel(net, device) if rank is not None else net
        forward = member_forward(net)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        for i, rows in enumerate(batches(space, args.steps, 2 * args.rows, args.len, device)):
            if rank is not None:
                rows = rows.chunk(WORLD)[rank]
            step = (2, 5, 9, 10)[i % 4]  # float, >= 3 bits, all bits
            members = sandwich(space, 0, step, cfg.steps, cfg.n_random, cfg.bit_stages, cfg.deep_random,
                               cfg.shallow_random)
            inputs = (rows[:, :-1], rows[:, :-1]) if space.is_encdec else (rows[:, :-1],)
            sandwich_step(model, net, opt, members, inputs, rows[:, 1:], cfg, 0, space.vocab_size, autocast,
                          ddp=rank is not None, forward=forward)
        torch.save({n: p.detach().cpu() for n, p in net.named_parameters()}, out)
    finally:
        if rank is not None:
            dist.destroy_process_group()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--space", default="multi30k")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rows", type=int, default=64, help="rows per rank")
    ap.add_argument("--len", type=int, default=32)
    ap.add_argument("--compile-members", default="", choices=["", "fixed", "all"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        outs = [f"{tmp}/rank{r}.pt" for r in range(WORLD)]
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=train_steps, args=(args, r, outs[r], f"file://{tmp}/store")) for r in range(WORLD)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        exit_codes = [p.exitcode for p in procs]
        res = {"space": args.space, "device": args.device, "compile_members": args.compile_members,
               "steps": args.steps, "rows_per_rank": args.rows, "len": args.len, "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
               "rank_exit_codes": exit_codes}
        if exit_codes == [0] * WORLD:
            train_steps(args, None, f"{tmp}/single.pt")
            ranks = [torch.load(o) for o in outs]
            single = torch.load(f"{tmp}/single.pt")
            res["ranks_bit_identical"] = all(torch.equal(ranks[0][n], ranks[1][n]) for n in single)
            # key biases left out: their gradient is zero in exact arithmetic, so they hold
            # rounding noise that AdamW scales up to lr-sized steps
            rel = {n: float((ranks[0][n] - p).norm() / p.norm().clamp_min(1e-12)) for n, p in single.items()
                   if not n.endswith("k.bias")}
            worst = max(rel, key=rel.get)
            res.update(single_vs_ranks_median_rel_l2=sorted(rel.values())[len(rel) // 2],
                       single_vs_ranks_worst_rel_l2=rel[worst], worst_parameter=worst)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0 if res.get("ranks_bit_identical") else 1


if __name__ == "__main__":
    sys.exit(main())
