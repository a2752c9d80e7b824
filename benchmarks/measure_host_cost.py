"""Host cost of one supernet quality measurement: ATen ops and host milliseconds per arch.

What each search worker calls, ``SupernetQuality`` on a run folder, measured per arch:
``q.model(arch)`` (the sub-network extraction) and ``q.measure(arch)`` (extraction plus one
forward pass per validation batch -- per merged group of batches with ``--forward-tokens``,
the default on CUDA -- the loss read back once). For each: ATen ops counted by
``torch.profiler`` (every ``aten::`` event, nested ones included: what the dispatcher runs
on the host), the wall milliseconds and the host thread's CPU milliseconds (without the
profiler). Per loss batch = (measure - extract) / batches. The losses of every arch are kept
too, so two results (before/after a change) can be checked for identical numbers
(``--compare``: exit 1 when any loss differs by more than ``--rtol``).

    cosearch train --space multi30k --task translation --data /work/shared/data/multi30k \\
        --steps 3 --max-tokens 512 --out /tmp/m30k_tiny
    python benchmarks/measure_host_cost.py /tmp/m30k_tiny --label after \\
        --out benchmarks/results/measure_host_cost_cpu.json
    python benchmarks/measure_host_cost.py RUN --gpu --no-tf32 --forward-tokens 4096 --label fp32 \
        --out /tmp/host_cost_gpu.json                       # each batch alone, fp32: the reference
    python benchmarks/measure_host_cost.py RUN --gpu --forward-tokens 4096 --label tf32 --compare fp32 \
        --rtol 1e-4 --out /tmp/host_cost_gpu.json           # TF32 alone
    python benchmarks/measure_host_cost.py RUN --gpu --label tf32_merged --compare tf32 --rtol 1e-4 \
        --compare-se --out /tmp/host_cost_gpu.json          # what the search runs: TF32, merged forwards
"""
from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cosearch.search.quality import MeasureSettings, SupernetQuality  # noqa: E402


def aten_ops(fn) -> int:
    """ATen ops ``fn()`` dispatches (nested ones included)."""
    with profile(activities=[ProfilerActivity.CPU]) as p:
        fn()
    return sum(1 for e in p.events() if e.name.startswith("aten::"))


#: extraction's steps that ``--breakdown`` counts apart: (label, class, method); the rest of
#: extraction (slicing, copies, building the model) counts as ``other``
def _phases() -> tuple:
    from cosearch.model.modules import ElasticLinear
    from cosearch.model.quant import WeightQuantizer
    return (("weight_quantizer", WeightQuantizer, "frozen"), ("moe_mixture_and_router", ElasticLinear, "mixed_weight"))


@contextmanager
def _labelled(phases):
    """Each method of ``phases`` runs inside a profiler range named ``phase::LABEL``."""
    saved = [(cls, attr, cls.__dict__[attr]) for _, cls, attr in phases]
    for label, cls, attr in phases:
        def wrapped(*args, _f=getattr(cls, attr), _label=label, **kwargs):
            with record_function(f"phase::{_label}"):
                return _f(*args, **kwargs)
        setattr(cls, attr, wrapped)
    try:
        yield
    finally:
        for cls, attr, f in saved:
            setattr(cls, attr, f)


def extraction_breakdown(fn) -> dict[str, int]:
    """ATen ops of ``fn()`` (an extraction; counted as ``aten_ops`` counts them) by the phase
    that dispatched them: the innermost ``phase::`` range above each op, else ``other``."""
    with _labelled(_phases()), profile(activities=[ProfilerActivity.CPU]) as p:
        fn()
    counts: Counter = Counter()
    for e in p.events():
        if not e.name.startswith("aten::"):
            continue
        node, label = e.cpu_parent, "other"
        while node is not None and not node.name.startswith("phase::"):
            node = node.cpu_parent
        if node is not None:
            label = node.name.removeprefix("phase::")
        counts[label] += 1
    return dict(counts)


def timed(fn, sync) -> tuple[float, float]:
    """(wall ms, host thread CPU ms) of ``fn()``, the device drained before and after."""
    sync()
    w, c = time.perf_counter(), time.thread_time()
    fn()
    sync()
    return 1e3 * (time.perf_counter() - w), 1e3 * (time.thread_time() - c)


def archs_of(space, n: int, seed: int) -> list:
    """The largest and smallest arch, then random ones (seeds ``seed`` .. ``seed + n - 3``)."""
    return [space.largest(), space.smallest()] + [space.sample(seed + i) for i in range(max(0, n - 2))]


def measure(run: str, n: int, seed: int, max_batches: int, max_tokens: int, device: str, repeat: int,
            tf32: bool = True, forward_tokens: int | None = None, forward_cost: int | None = None,
            breakdown: bool = False) -> dict:
    q = SupernetQuality(run, MeasureSettings(max_batches=max_batches, max_tokens=max_tokens, device=device,
                                             tf32=tf32, forward_tokens=forward_tokens, forward_cost=forward_cost))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    nb = len(q.batches)
    archs = archs_of(q.run.space, n, seed)
    q.measure(archs[0])  # warm-up: first-call allocations and kernel choices
    rows = []
    for a in archs:
        ex_ops = aten_ops(lambda: q.model(a))
        me_ops = aten_ops(lambda: q.measure(a))
        ex = min(timed(lambda: q.model(a), sync) for _ in range(repeat))
        me = min(timed(lambda: q.measure(a), sync) for _ in range(repeat))
        got = q.measure(a)
        rows.append({"arch": a.to_dict(), "loss": got["loss"], "loss_se": got["loss_se"],
                     "extract_ops": ex_ops, "measure_ops": me_ops, "batch_ops": (me_ops - ex_ops) / nb,
                     "extract_ms": ex[0], "extract_cpu_ms": ex[1], "measure_ms": me[0], "measure_cpu_ms": me[1],
                     "batch_ms": (me[0] - ex[0]) / nb})
        if breakdown:
            rows[-1]["extract_breakdown"] = extraction_breakdown(lambda: q.model(a))
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]
           if k not in ("arch", "loss", "loss_se", "extract_breakdown")}
    if breakdown:
        labels = sorted({k for r in rows for k in r["extract_breakdown"]})
        med["extract_breakdown"] = {k: statistics.median(r["extract_breakdown"].get(k, 0) for r in rows) for k in labels}
    return {"batches": nb, "tokens_per_batch": max_tokens, "archs": len(rows), "median": med, "rows": rows,
            "matmul": q.settings.matmul, "forwards": len(q.merged_sets[0]),
            "tokens_per_forward": q.settings.tokens_per_forward, "forward_cost": q.settings.cost_per_forward,
            "positions": positions(q.merged_sets[0])}


def positions(merged) -> int:
    """Token positions the forwards compute, padding included (every 2-D input but the mask)."""
    return sum(v.numel() for m in merged for k, v in m.batch.items()
               if torch.is_tensor(v) and v.dim() == 2 and k != "attention_mask")


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    from git_version import code_version
    return {**info, **code_version()}


def compare(a: dict, b: dict, key: str = "loss") -> float:
    """Largest relative difference of ``key`` (``loss``, ``loss_se``) between two results, which
    must hold the same archs (inf where they do not: a comparison over no common arch proves
    nothing)."""
    la = {json.dumps(r["arch"], sort_keys=True): r[key] for r in a["rows"]}
    lb = {json.dumps(r["arch"], sort_keys=True): r[key] for r in b["rows"]}
    if not lb or set(lb) != set(la):
        return float("inf")
    return max(abs(lb[k] - la[k]) / max(abs(la[k]), 1e-30) for k in lb)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a trained supernet run folder")
    p.add_argument("--archs", type=int, default=12, help="largest, smallest and random archs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-batches", type=int, default=6, help="validation batches (multi30k valid: 6 of 4,096)")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=3, help="timings per arch (the fastest is kept)")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--no-tf32", action="store_true", help="fp32 matmuls on the GPU too (the search uses TF32)")
    p.add_argument("--forward-tokens", type=int, help="tokens per merged forward pass (default: the search's: "
                   "16,384 on CUDA, each batch alone on CPU; --max-tokens: each batch alone)")
    p.add_argument("--forward-cost", type=int, help="a forward's fixed cost in token positions, which decides "
                   "the merge (default: the search's, 4,096)")
    p.add_argument("--breakdown", action="store_true",
                   help="count extraction's ATen ops by step too: weight quantizers, MoS mixtures (with their "
                        "routers), other")
    p.add_argument("--label", default="run", help="the key this result is stored under in --out")
    p.add_argument("--out", help="JSON file to add the result to (other labels are kept)")
    p.add_argument("--compare", help="a label in --out whose losses this run must reproduce")
    p.add_argument("--rtol", type=float, default=0.0, help="allowed relative loss difference for --compare")
    p.add_argument("--compare-se", action="store_true",
                   help="--compare the per-batch standard errors too (a merge that sent rows to the wrong "
                        "batch keeps the loss and changes these)")
    a = p.parse_args(argv)
    res = measure(a.run, a.archs, a.seed, a.max_batches, a.max_tokens, "cuda" if a.gpu else "cpu", a.repeat,
                  not a.no_tf32, a.forward_tokens, a.forward_cost, a.breakdown)
    res.update(machine=machine(), seed=a.seed, run=a.run, device="cuda" if a.gpu else "cpu")
    old = json.loads(Path(a.out).read_text()) if a.out and Path(a.out).is_file() else {}
    rc = 0
    if a.compare:
        if a.compare not in old:
            raise SystemExit(f"--compare {a.compare}: no such label in {a.out} (labels: {', '.join(old) or 'none'})")
        for key in ("loss", "loss_se") if a.compare_se else ("loss",):
            worst = compare(old[a.compare], res, key)
            res[f"max_rel_{key}_diff_vs_{a.compare}"] = worst
            rc |= int(worst > a.rtol)
            print(f"largest relative {key} difference vs {a.compare}: {worst:.3g} (allowed {a.rtol:g})")
    m = res["median"]
    print(f"{res['archs']} archs, {res['batches']} batches in {res['forwards']} forwards: median extract {m['extract_ops']:.0f} ops "
          f"{m['extract_ms']:.1f} ms, per batch {m['batch_ops']:.0f} ops {m['batch_ms']:.1f} ms, "
          f"measure {m['measure_ops']:.0f} ops {m['measure_ms']:.1f} ms ({m['measure_cpu_ms']:.1f} host CPU ms)")
    if a.breakdown:
        print("extraction ops by step (median):", m["extract_breakdown"])
    if a.out:
        old[a.label] = res
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
