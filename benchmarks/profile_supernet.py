"""Where the supernet's extra time goes on a GPU (torch.profiler), largest arch, bf16.

    python3 benchmarks/profile_supernet.py [SPACE=multi30k] [BATCH=128] [PATH=both|reference|fused]
"""
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cosearch.model.fused import use_fused  # noqa: E402
from cosearch.space import SearchSpace  # noqa: E402
from cosearch.model.supernet import Supernet  # noqa: E402

space = SearchSpace.load(sys.argv[1] if len(sys.argv) > 1 else "multi30k")
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 128
paths = ["reference", "fused"] if len(sys.argv) <= 3 or sys.argv[3] == "both" else [sys.argv[3]]
dev = torch.device("cuda")
net = Supernet(space).to(dev)
arch = space.largest()
x = [torch.randint(3, space.vocab_size, (batch, 30), device=dev) for _ in range(2)]
sub = net.extract(arch).to(dev)


def step(m, **kw):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = m(*x, **kw)
    out.float().logsumexp(-1).mean().backward()


runs = [(net, {"arch": arch}, f"supernet ({p})", p) for p in paths] + [(sub, {}, "standalone", paths[-1])]
for m, kw, name, path in runs:
    use_fused(m, path == "fused")
    for _ in range(3):
        step(m, **kw)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step(m, **kw)
        torch.cuda.synchronize()
    ka = prof.key_averages()
    cuda_total = sum(e.self_device_time_total for e in ka) / 5 / 1e3
    n_kernels = sum(e.count for e in ka if e.self_device_time_total > 0) / 5
    print(f"== {name}: GPU busy {cuda_total:.1f} ms/step, {n_kernels:.0f} kernel launches/step")
    print(ka.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60))
