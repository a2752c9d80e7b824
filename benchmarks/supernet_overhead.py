"""Forward+backward time of a sub-network inside the supernet vs. its extracted module.

The ratio is the price of routing (MoS mixture), slicing and weight fake-quantization
during supernet training. Run:

    python benchmarks/supernet_overhead.py --device cpu  --out benchmarks/results/supernet_overhead_cpu.json
    python benchmarks/supernet_overhead.py --device cuda --out benchmarks/results/supernet_overhead_h100.json

``--path both`` (the default) times the reference weight path and the fused one
(``cosearch.model.fused``; torch.compile on CUDA) in the same process, so before/after come
from one card; the extracted model uses the same activation-quantizer path.
``--path bucketed`` runs the member the way ``COSEARCH_COMPILE_MEMBERS=all`` trains it
(``cosearch.model.bucketed_members``: attention and FFN blocks compiled at width buckets,
bit-widths as tensors) against the eager extracted model; ``--compile-extracted`` also
times the extracted model compiled whole (``paths[...][cfg]["standalone_compiled_ms"]``).
``--path all`` times bucketed, reference and fused in one process (one card, one JSON).
Each row also gives target tokens per second (``batch * len`` per forward+backward), and the
JSON is rewritten after every row, so a run stopped by a time limit keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cosearch.model.fused import compile_counts, use_fused  # noqa: E402
from cosearch.space import SearchSpace  # noqa: E402
from cosearch.model.supernet import Supernet  # noqa: E402


def time_fwd_bwd(model, inputs, arch, device, amp, repeats, warmup=3):
    """Median seconds of one forward+backward of ``model(*inputs, arch=arch)`` (``arch``
    None: ``model(*inputs)``)."""
    def step():
        kw = {"arch": arch} if arch is not None else {}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(*inputs, **kw)
        out.float().logsumexp(-1).mean().backward()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def path_agreement(net, inputs, arch, device, amp) -> dict:
    """Fused vs reference on one forward+backward (same dropout masks): the largest logit
    difference relative to the largest logit, and the worst relative L2 difference of a
    parameter's gradient (parameters with a gradient norm below 1e-6 left out: key biases
    have a zero gradient in exact arithmetic)."""
    res = []
    for path in ("reference", "fused"):
        use_fused(net, path == "fused")
        net.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = net(*inputs, arch=arch)
        out.float().logsumexp(-1).mean().backward()
        res.append((out.detach().float(), {n: p.grad.detach().float().clone() for n, p in net.named_parameters()
                                           if p.grad is not None}))
    (o0, g0), (o1, g1) = res
    rel = [((g1[n] - g0[n]).norm() / g0[n].norm()).item() for n in g0 if n in g1 and g0[n].norm() > 1e-6]
    net.zero_grad(set_to_none=True)
    return {"max_logit_diff_rel": ((o1 - o0).abs().max() / o0.abs().max()).item(),
            "worst_grad_rel_l2": max(rel), "median_grad_rel_l2": sorted(rel)[len(rel) // 2],
            "same_parameters_with_grad": g0.keys() == g1.keys()}


def bucketed_model(net, backend: str):
    """``model(*inputs, arch=a)`` through ``BucketedForward`` (the compiled, bucketed member)."""
    from cosearch.model.bucketed_members import BucketedForward
    from cosearch.training.sandwich import Member
    fwd = BucketedForward(net, backend=backend)

    def model(*inputs, arch):
        return fwd(net, Member("random", arch), tuple(inputs))
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="multi30k")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=None, help="sentences per batch")
    ap.add_argument("--len", type=int, default=30, help="tokens per sentence")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--path", default="both", choices=["both", "all", "reference", "fused", "bucketed"],
                    help="weight path: reference (eager), fused (torch.compile on CUDA), both (those two), "
                    "bucketed (the member as COSEARCH_COMPILE_MEMBERS=all trains it), or all three")
    ap.add_argument("--configs", nargs="+", default=None, help="only these sub-networks (default: all four)")
    ap.add_argument("--compile-extracted", action="store_true",
                    help="also time the extracted model compiled whole (padded_compiled)")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend of the bucketed path")
    a = ap.parse_args()
    dev = torch.device(a.device)
    amp = dev.type == "cuda"
    batch = a.batch or (128 if dev.type == "cuda" else 8)
    repeats = a.repeats or (20 if dev.type == "cuda" else 3)
    torch.manual_seed(0)
    space = SearchSpace.load(a.space)
    net = Supernet(space).to(dev).train()
    V = space.vocab_size
    inputs = [torch.randint(3, V, (batch, a.len), device=dev)]
    if space.is_encdec:
        inputs.append(torch.randint(3, V, (batch, a.len), device=dev))
    configs = {
        "largest_float": space.largest(),
        "largest_w4a8": space.with_bits(space.largest(), 4, 8 if 8 in space.spec.quantization.act_bits else 16),
        "largest_ternary_a8": space.with_bits(space.largest(), 1.58 if 1.58 in space.spec.quantization.weight_bits else 16, 8 if 8 in space.spec.quantization.act_bits else 16),
        "random": space.sample(0),
    }
    if a.configs:
        unknown = sorted(set(a.configs) - set(configs))
        if unknown:
            ap.error(f"unknown --configs {unknown}; choose from {sorted(configs)}")
        configs = {k: v for k, v in configs.items() if k in a.configs}
    # "all" runs bucketed first: its compile time is the unknown, so a time limit cuts the known paths
    paths = {"both": ["reference", "fused"], "all": ["bucketed", "reference", "fused"]}.get(a.path, [a.path])
    tokens = batch * a.len  # target tokens per forward+backward
    rows = {path: {} for path in paths}
    bucket_graphs = {}
    for path in paths:
        use_fused(net, path == "fused")
        model = net
        if path == "bucketed":
            model = bucketed_model(net, a.backend)
        for name, arch in configs.items():
            t0 = time.perf_counter()
            sup = time_fwd_bwd(model, inputs, arch, dev, amp, repeats)
            sup_wall = time.perf_counter() - t0
            sub = use_fused(net.extract(arch).to(dev).train(), path == "fused")
            alone = time_fwd_bwd(sub, inputs, None, dev, amp, repeats)
            row = {"supernet_ms": round(sup * 1e3, 3), "standalone_ms": round(alone * 1e3, 3),
                   "ratio": round(sup / alone, 3), "params": space.param_count(arch),
                   "supernet_tokens_per_s": round(tokens / sup), "standalone_tokens_per_s": round(tokens / alone),
                   "supernet_wall_s_with_compile": round(sup_wall, 1)}
            if a.compile_extracted:
                from cosearch.model.compiled_members import padded_compiled
                comp = time_fwd_bwd(padded_compiled(sub, net.pad_id, count_as="extracted"), inputs, None, dev, amp,
                                    repeats)
                row.update(standalone_compiled_ms=round(comp * 1e3, 3), ratio_vs_compiled=round(sup / comp, 3))
            rows[path][name] = row
            if path == "bucketed":
                bucket_graphs[name] = compile_counts().get("bucketed_members", 0)
            print(f"{path:9s} {name:20s} supernet {sup*1e3:9.2f} ms  standalone {alone*1e3:9.2f} ms  "
                  f"ratio {sup/alone:5.2f}  {tokens/sup:10.0f} tok/s" + (
                      f"  vs compiled {row['ratio_vs_compiled']:5.2f}" if "ratio_vs_compiled" in row else ""),
                  flush=True)
            write(a.out, info(a, batch, amp, rows, path, {}, bucket_graphs))
    agreement = {}
    if "reference" in paths and "fused" in paths:
        for name in [n for n in ("largest_w4a8", "random") if n in configs]:
            agreement[name] = path_agreement(net, inputs, configs[name], dev, amp)
            print(f"fused vs reference, {name}: {agreement[name]}", flush=True)
    write(a.out, info(a, batch, amp, rows, paths[-1], agreement, bucket_graphs))


def info(a, batch, amp, rows, last_path, agreement, bucket_graphs) -> dict:
    """The JSON record: machine, versions, every path's rows so far."""
    return {"space": a.space, "device": a.device, "batch": batch, "len": a.len, "amp_bf16": amp,
            "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else None,
            "threads": torch.get_num_threads(), "results": rows[last_path], "paths": rows,
            "compiled_graphs": compile_counts(), "fused_vs_reference": agreement,
            "bucketed_graphs_after": bucket_graphs}


def write(out, record: dict) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
