"""Export and load speed, and weight-file size against the predicted size.

For the largest sub-network of a preset space (random supernet weights) at several weight
bit-widths: seconds to export (extract + pack + write) and to load (read + unpack +
dequantize), file size / predicted size, and the greedy/beam translation speed of the
loaded model. Writes benchmarks/results/export_load.json.

    python benchmarks/export_load.py [--space multi30k] [--bits 16 8 4 2 1.58]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from cosearch.export import export, load_exported
from cosearch.space import SearchSpace
from cosearch.model.supernet import Supernet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="multi30k")
    ap.add_argument("--bits", type=float, nargs="+", default=[16, 8, 4, 2, 1.58])
    ap.add_argument("--sentences", type=int, default=16)
    args = ap.parse_args()
    torch.manual_seed(0)
    space = SearchSpace.load(args.space)
    net = Supernet(space).eval()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for bits in args.bits:
            arch = space.with_bits(space.largest(), weight_bits=bits)
            t0 = time.perf_counter()
            out = export(Path(d) / f"b{bits}", supernet=net, arch=arch)
            t1 = time.perf_counter()
            model = load_exported(out)
            t2 = time.perf_counter()
            size = os.path.getsize(out / "model.safetensors")
            pred = space.size(arch).weight_bits / 8
            row = {"bits": bits, "params": space.param_count(arch), "file_bytes": size,
                   "predicted_bytes": pred, "ratio": size / pred, "export_s": t1 - t0, "load_s": t2 - t1}
            if space.is_encdec:
                from cosearch.training.evaluate import beam_search
                src = torch.randint(4, space.vocab_size, (args.sentences, 20))
                t3 = time.perf_counter()
                beam_search(model, src, 4, 2, 3, 30, space.vocab_size)
                row["beam4_sentences_per_s_30_tokens"] = args.sentences / (time.perf_counter() - t3)
            rows.append(row)
            print(json.dumps(row))
    result = {"benchmark": "export_load", "space": args.space, "arch": "largest",
              "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, Python {platform.python_version()}, "
                         f"torch {torch.__version__}", "load_average": os.getloadavg()[0], "rows": rows}
    path = Path(__file__).parent / "results" / "export_load.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
