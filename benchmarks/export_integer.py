"""Batched generation tokens/s: PyTorch vs onnxruntime float vs onnxruntime integer kernels.

For each model (randomly initialised supernets: speed and parity do not depend on
training) three exports of the same sub-network: ``--onnx`` (float arithmetic on rounded
activations, MatMulNBits weights) and ``--onnx --integer`` (MatMulInteger on the int8 codes),
plus the float graph with MatMulNBits' own int8 compute switched on (``accuracy_level=4``,
which re-quantizes activations per block, not per token: reported for speed and drift, not
offered as an export mode). Each runs ``cosearch.deploy.generate.sample_batch`` (what
``generate_text`` / ``cosearch generate`` run, minus tokenising) greedily on 8 prompts of
different lengths (3-40 tokens, tinyshakespeare lines), ``--new-tokens`` each, at batch 1
(prompt by prompt) and batch 8 (one left-padded batch). Reported: tokens/s, and whether
each engine's tokens equal PyTorch's (the fake-quant model) at batch 1 and batch 8, plus
the export's own parity check (max logit difference).

Models: the ``tiny_lm`` preset's largest sub-network (0.9 M parameters) and ``lm512``, a
decoder-only space defined here (6 layers, width 512, FFN 2048, 8000 tokens: ~27 M
parameters), both W4A8 and, for lm512, also W8A8 and ternary-A8.

Writes benchmarks/results/export_integer.json.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/export_integer.py [--new-tokens 32]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import onnx
import torch

from cosearch.data.readers import read_text
from cosearch.data.tokenizer import TokenizerSettings, train_tokenizer
from cosearch.deploy.generate import sample_batch
from cosearch.export import export, open_exported
from cosearch.model.supernet import Supernet
from cosearch.space import SearchSpace

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"  # next to the checkout
LM512 = {"name": "lm512", "family": "decoder_only", "vocab_size": 8000, "max_positions": 256, "dropout": 0.0,
         "decoder": {"embed_dim": [512], "layers": [6], "ffn_dim": [2048], "heads": [8], "head_dim": 64},
         "quantization": {"weight_bits": [1.58, 4, 8, 16], "act_bits": [8, 16], "embedding_bits": 16},
         "mos": {"mode": "none"}}


def with_accuracy_level(src: Path, dst: Path) -> Path:
    """A copy of export ``src`` whose MatMulNBits nodes compute in int8 (accuracy_level 4)."""
    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "model.onnx"))
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            node.attribute.append(onnx.helper.make_attribute("accuracy_level", 4))
    onnx.save(model, str(dst / "model.onnx"))
    return dst


def timed(net, prompts, batch: int, new_tokens: int, vocab: int, window: int, pad: int):
    """(tokens/s, generated ids per prompt) for greedy generation ``batch`` prompts at a time."""
    sample_batch(net, prompts[:1], 2, vocab, window, temperature=0, pad_id=pad)  # warm-up
    out, t0 = [], time.perf_counter()
    for i in range(0, len(prompts), batch):
        out += sample_batch(net, prompts[i:i + batch], new_tokens, vocab, window, temperature=0, pad_id=pad)
    dt = time.perf_counter() - t0
    return sum(map(len, out)) / dt, out


def bench(space: SearchSpace, bits: float, tok_file: Path, prompts: list[list[int]], work: Path,
          new_tokens: int, vocab: int, pad: int) -> dict:
    torch.manual_seed(0)
    net = Supernet(space).eval()
    arch = space.with_bits(space.largest(), weight_bits=bits, act_bits=8)
    tag = f"{space.name}-w{bits}a8"
    folders, export_s, checks = {}, {}, {}
    for mode, integer in (("float", False), ("integer", True)):
        t0 = time.perf_counter()
        folders[mode] = export(work / f"{tag}-{mode}", supernet=net, arch=arch, task="lm", tokenizer=tok_file,
                               onnx=True, onnx_integer=integer)
        export_s[mode] = round(time.perf_counter() - t0, 2)
        check = json.loads((folders[mode] / "config.json").read_text())["onnx_check"]
        checks[mode] = {k: check[k] for k in ("max_abs_diff", "argmax_agreement", "kv_cache_max_abs_diff", "ok",
                                              "bytes")}
    folders["float_acc4"] = with_accuracy_level(folders["float"], work / f"{tag}-acc4")
    exp = open_exported(folders["float"])
    engines = {"torch": exp.model, "onnx_float": exp.onnx_model(), "onnx_integer": open_exported(
        folders["integer"]).onnx_model(), "onnx_float_matmulnbits_int8": open_exported(folders["float_acc4"]).onnx_model()}
    window = space.spec.max_positions
    row = {"space": space.name, "arch": "largest", "bits": f"W{bits}A8", "params": space.param_count(arch),
           "export_s": export_s, "onnx_check": checks, "prompts": len(prompts),
           "prompt_tokens": [len(p) for p in prompts], "new_tokens": new_tokens, "engines": {}}
    ref = {}
    for name, model in engines.items():
        r, outs = {}, {}
        for batch in (1, 8):
            tps, outs[batch] = timed(model, prompts, batch, new_tokens, vocab, window, pad)
            r[f"batch{batch}_tokens_per_s"] = round(tps, 1)
            if name == "torch":
                ref[batch] = outs[batch]
            r[f"batch{batch}_rows_equal_torch"] = sum(a == b for a, b in zip(outs[batch], ref[batch]))
            r[f"batch{batch}_tokens_equal_torch"] = sum(x == y for a, b in zip(outs[batch], ref[batch])
                                                        for x, y in zip(a, b))
        r["batch8_rows_equal_own_batch1"] = sum(a == b for a, b in zip(outs[8], outs[1]))
        row["engines"][name] = r
        print(name, json.dumps(r), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--text", default=str(DATA / "tinyshakespeare" / "input.txt"))
    ap.add_argument("--models", default="tiny_lm,lm512", help="comma list of tiny_lm, lm512")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import onnxruntime
    text = read_text(Path(args.text))
    lines = [ln for ln in text.split("\n") if ln.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for name in args.models.split(","):
            space = SearchSpace.load("tiny_lm") if name == "tiny_lm" else SearchSpace.from_dict(LM512)
            tok = train_tokenizer([text], TokenizerSettings(vocab_size=space.vocab_size, keep_whitespace=True))
            tok.save(work / f"tok-{name}")
            starts, counts = (0, 7, 30, 51, 100, 203, 310, 500), (1, 2, 3, 1, 4, 2, 1, 3)
            prompts = [tok.encode("\n".join(lines[i:i + k]))[:40] for i, k in zip(starts, counts)]
            for bits in ((4,) if name == "tiny_lm" else (4, 8, 1.58)):
                rows.append(bench(space, bits, work / f"tok-{name}" / "tokenizer.model", prompts, work,
                                  args.new_tokens, tok.vocab_size, tok.pad_id))
    result = {"benchmark": "export_integer", "threads": torch.get_num_threads(),
              "machine": f"{platform.machine()} {os.cpu_count()}-core CPU ({_cpu()}), Python "
                         f"{platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}",
              "load_average_end": os.getloadavg()[0], "seed": 0, "rows": rows}
    path = Path(__file__).parent / "results" / "export_integer.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
