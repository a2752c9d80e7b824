"""onnxruntime against PyTorch on CPU for low-bit ONNX exports: size, parity, tokens/s.

Two exports of randomly initialised supernets (speed and parity do not depend on training):

* ``multi30k`` largest sub-network at W4A8 (16-bit embeddings, as the preset says), with a
  tokenizer trained on the Multi30k training text; greedy translation of the first
  ``--sentences`` test sentences (test_2016_flickr.en) with both engines: identical
  outputs are counted, and decoder tokens/s measured (batches as `cosearch translate`
  forms them, every row of a batch counts until the batch is done);
* ``tiny_lm`` largest at W4A8 with a tokenizer trained on tinyshakespeare: greedy
  generation of ``--new-tokens`` tokens after a prompt, batch 1, with the KV cache.

Writes benchmarks/results/export_onnx.json.

    OMP_NUM_THREADS=1 python benchmarks/export_onnx.py [--sentences 100] [--new-tokens 200]
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

from cosearch.data.readers import read_lines, read_parallel, read_text
from cosearch.data.tokenizer import TokenizerSettings, train_tokenizer
from cosearch.training.evaluate import decode_max_len, greedy_decode
from cosearch.export import export, open_exported
from cosearch.deploy.generate import sample_tokens, translate_lines
from cosearch.space import SearchSpace
from cosearch.model.supernet import Supernet

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"  # next to the checkout


class Counting:
    """Counts decoder positions (rows x steps) of the model it wraps."""

    def __init__(self, net):
        self.net, self.positions = net, 0

    def encode(self, src):
        return self.net.encode(src)

    def decode_step(self, tokens, memory, cache, step):
        self.positions += tokens.shape[0] * tokens.shape[1]
        return self.net.decode_step(tokens, memory, cache, step)


def sizes(out: Path) -> dict:
    cfg = json.loads((out / "config.json").read_text())
    check = cfg["onnx_check"]
    st = (out / "model.safetensors").stat().st_size
    return {"safetensors_bytes": st, "onnx_bytes": check["bytes"], "onnx_over_safetensors": check["bytes"] / st,
            "onnx_files": check["files"], "parity_at_export": {k: check[k] for k in (
                "batch", "lengths", "batches", "max_abs_diff", "p99_abs_diff", "quantization_change", "argmax_agreement",
                "positions_over_atol", "positions_over_tolerance", "positions", "tolerance", "kv_cache_max_abs_diff",
                "ok")}}


def translation(data: Path, work: Path, sentences: int) -> dict:
    space = SearchSpace.load("multi30k")
    pairs = read_parallel(data, "en", "de", "train")
    tok = train_tokenizer([s for s, _ in pairs] + [t for _, t in pairs],
                          TokenizerSettings(vocab_size=min(8000, space.vocab_size)))
    tok_file = work / "m30k"
    tok.save(tok_file)
    torch.manual_seed(0)
    arch = space.with_bits(space.largest(), weight_bits=4, act_bits=8)
    t0 = time.perf_counter()
    out = export(work / "m30k-w4a8", supernet=Supernet(space).eval(), arch=arch, task="translation",
                 tokenizer=tok_file / "tokenizer.model", onnx=True)
    export_s = time.perf_counter() - t0
    exp = open_exported(out)
    lines = read_lines(data / "test_2016_flickr.en.gz")[:sentences] if (data / "test_2016_flickr.en.gz").exists() \
        else read_lines(data / "test_2016_flickr.en")[:sentences]
    row = {"space": "multi30k", "arch": "largest", "bits": "W4A8", "params": space.param_count(arch),
           "export_with_onnx_s": export_s, **sizes(out), "sentences": len(lines)}
    # the `cosearch translate --beam 1` path on both engines
    texts = {}
    for engine in ("torch", "onnx"):
        t0 = time.perf_counter()
        texts[engine] = list(translate_lines(exp, lines, beam=1, engine=engine))
        row[f"translate_{engine}_s"] = time.perf_counter() - t0
    row["identical_translations"] = sum(a == b for a, b in zip(texts["torch"], texts["onnx"]))
    # decoder tokens/s: one batch of all sentences, as translate_lines batches them
    ids = [tok.encode(s)[: space.spec.max_positions - 1] + [tok.eos_id] for s in lines]
    src = torch.full((len(ids), max(map(len, ids))), tok.pad_id)
    for i, x in enumerate(ids):
        src[i, : len(x)] = torch.tensor(x)
    ml = decode_max_len(src, tok.pad_id, space.spec.max_positions)
    hyps = {}
    for engine, net in (("torch", exp.model), ("onnx", exp.onnx_model())):
        for batch in (len(ids), 1):
            counted = Counting(net)
            rows = [src] if batch > 1 else [src[i:i + 1] for i in range(min(10, len(ids)))]
            t0 = time.perf_counter()
            got = [h for r in rows for h in greedy_decode(counted, r, tok.bos_id, tok.eos_id, ml, tok.vocab_size)]
            dt = time.perf_counter() - t0
            key = f"{engine}_batch{batch if batch > 1 else 1}"
            row[f"{key}_decoder_tokens_per_s"] = counted.positions / dt
            hyps[key] = got
    row["greedy_ids_identical_batch"] = hyps["torch_batch%d" % len(ids)] == hyps["onnx_batch%d" % len(ids)]
    return row


def language_model(data: Path, work: Path, new_tokens: int) -> dict:
    space = SearchSpace.load("tiny_lm")
    text = read_text(data)
    tok = train_tokenizer([text], TokenizerSettings(vocab_size=space.vocab_size, keep_whitespace=True))
    tok_file = work / "lm"
    tok.save(tok_file)
    torch.manual_seed(0)
    arch = space.with_bits(space.largest(), weight_bits=4, act_bits=8)
    out = export(work / "tiny-w4a8", supernet=Supernet(space).eval(), arch=arch, task="lm",
                 tokenizer=tok_file / "tokenizer.model", onnx=True)
    exp = open_exported(out)
    row = {"space": "tiny_lm", "arch": "largest", "bits": "W4A8", "params": space.param_count(arch), **sizes(out)}
    prompt = tok.encode("ROMEO:\nWhat light through yonder window breaks?\n")
    toks = {}
    for engine, net in (("torch", exp.model), ("onnx", exp.onnx_model())):
        t0 = time.perf_counter()
        toks[engine] = sample_tokens(net, prompt, new_tokens, tok.vocab_size, space.spec.max_positions, temperature=0)
        row[f"{engine}_batch1_tokens_per_s"] = len(toks[engine]) / (time.perf_counter() - t0)
    row["new_tokens"] = new_tokens
    row["greedy_tokens_identical"] = toks["torch"] == toks["onnx"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=100)
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--multi30k", default=str(DATA / "multi30k"))
    ap.add_argument("--text", default=str(DATA / "tinyshakespeare" / "input.txt"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import onnxruntime
    rows = []
    with tempfile.TemporaryDirectory() as d:
        rows.append(language_model(Path(args.text), Path(d), args.new_tokens))
        print(json.dumps(rows[-1]))
        rows.append(translation(Path(args.multi30k), Path(d), args.sentences))
        print(json.dumps(rows[-1]))
    result = {"benchmark": "export_onnx", "threads": torch.get_num_threads(),
              "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, Python {platform.python_version()}, "
                         f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}",
              "load_average": os.getloadavg()[0], "rows": rows}
    path = Path(__file__).parent / "results" / "export_onnx.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
