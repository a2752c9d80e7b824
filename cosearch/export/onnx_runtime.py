"""Running an export's ONNX graphs with onnxruntime, and checking them against torch.

``OnnxTransformer`` offers the methods the decoders of ``cosearch.training.evaluate`` and
``cosearch.deploy.generate`` call on a ``Transformer`` (``encode``, ``decode_step``, a cache that
``Transformer.reorder_cache`` reorders), so beam search, greedy decoding and sampling run
unchanged on onnxruntime. ``parity`` compares the graphs with the torch model on several
batches and reports; it never raises on a difference.

Why a tolerance that knows about quantization: activations are rounded per token, so a
different float summation order can flip one code; the flipped value moves the next
layer's inputs by ~1e-3, which flips more codes there, and so on. In a deep model the
two engines' logits then differ by about as much as quantizing the activations at all
changes them (measured: multi30k largest W4A8, random weights, 1.0-1.4x), while with
16-bit activations they agree to 1e-5. So a position passes when its difference is
within ``FLOAT_ATOL`` plus ``QUANT_NOISE_FACTOR`` times the torch model's own change from
float to quantized activations at that position.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..model.modules import QLinear, Transformer
from .onnx_graph import DECODER_FILE, DECODER_ONLY_FILE, ENCODER_FILE

#: Logits may differ by float summation order; beyond this a difference counts as a
#: rounding flip of an activation code (reported, not fatal).
FLOAT_ATOL = 1e-3
#: Quantization-aware tolerance: a position's logits may differ by this many times the
#: largest change that activation quantization makes to them (see the module doc).
QUANT_NOISE_FACTOR = 2.0


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("onnxruntime is not installed; pip install 'cosearch[onnx]' to run ONNX exports") from None
    return onnxruntime


def session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session of ``path`` (threads: OMP_NUM_THREADS, else onnxruntime's
    default); a file onnxruntime cannot load is a one-line ``UserError``."""
    ort = _ort()
    opts = ort.SessionOptions()
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        opts.intra_op_num_threads = opts.inter_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...), not OSError
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise UserError(f"{path}: onnxruntime cannot load it ({first[:200]}); the file is damaged or "
                        "truncated, export again with --onnx") from None


@dataclass
class CrossCache:
    """Encoder output for the decoder graph: cross-attention keys/values per decoder layer
    and the source mask (B, S) int64."""

    kv: list  # [(key, value)] numpy (B, H, S*, D)
    mask: np.ndarray

    def index_select(self, idx: torch.Tensor) -> "CrossCache":
        i = idx.numpy()
        return CrossCache([(k[i], v[i]) for k, v in self.kv], self.mask[i])


class OnnxTransformer:
    """An export's ONNX graphs behind the decoding interface of ``Transformer``."""

    def __init__(self, folder: str | Path, files: dict, family: str, pad_id: int, threads: int | None = None,
                 max_positions: int | None = None):
        self.family, self.pad_id = family, int(pad_id)
        self.max_positions = max_positions
        folder = Path(folder)
        self.decoder = session(folder / files["decoder"], threads)
        self.encoder = session(folder / files["encoder"], threads) if family == "encoder_decoder" else None
        self.past = [(i.name, i.shape) for i in self.decoder.get_inputs() if i.name.startswith("past_key_values")
                     and ".encoder." not in i.name]

    def eval(self) -> "OnnxTransformer":
        return self

    def _empty_past(self, batch: int) -> dict:
        return {name: np.zeros((batch, shape[1], 0, shape[3]), np.float32) for name, shape in self.past}

    def encode(self, src: torch.Tensor) -> CrossCache:
        self._check_positions(src.shape[1])
        ids = src.numpy().astype(np.int64)
        outs = self.encoder.run(None, {"input_ids": ids})
        return CrossCache(list(zip(outs[0::2], outs[1::2])), (ids != self.pad_id).astype(np.int64))

    def _check_positions(self, end: int) -> None:
        if self.max_positions is not None and end > self.max_positions:
            raise UserError(f"the input reaches position {end} but this model was trained for at most "
                            f"max_positions {self.max_positions}; shorten the input (or the generation)")

    def _run(self, tokens: torch.Tensor, memory: CrossCache | None, past: dict, step: int,
             attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None):
        b, t = tokens.shape
        feed = {"input_ids": tokens.numpy().astype(np.int64), **past}
        if memory is not None:
            self._check_positions(step + t)
            feed["encoder_attention_mask"] = memory.mask
            for i, (k, v) in enumerate(memory.kv):
                feed[f"past_key_values.{i}.encoder.key"], feed[f"past_key_values.{i}.encoder.value"] = k, v
        else:  # as Transformer: no mask = no padding; positions from the mask
            from ..model.modules import positions_from_mask
            if attention_mask is None:
                attention_mask = torch.ones(b, step + t, dtype=torch.int64)
            if position_ids is None:
                position_ids = positions_from_mask(attention_mask, t)
            self._check_positions(int(position_ids.max()) + 1 if position_ids.numel() else 0)
            feed["attention_mask"] = attention_mask.numpy().astype(np.int64)
            feed["position_ids"] = position_ids.numpy().astype(np.int64)
        logits, *present = self.decoder.run(None, feed)
        return logits, present

    def decode_step(self, tokens: torch.Tensor, memory: CrossCache | None, cache: dict, step: int,
                    attention_mask: torch.Tensor | None = None,
                    position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """As ``Transformer.decode_step``: logits (B, vocab) of the last position; ``cache``
        (torch tensors, so ``Transformer.reorder_cache`` applies) is updated in place."""
        if cache:
            past = {name: cache[name].numpy() for name, _ in self.past}
        else:
            past = self._empty_past(tokens.shape[0])
        logits, present = self._run(tokens, memory, past, step, attention_mask, position_ids)
        for (name, _), value in zip(self.past, present):
            cache[name] = torch.from_numpy(value)
        return torch.from_numpy(logits[:, -1])

    def __call__(self, *inputs: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Full-sequence logits, as ``Transformer.forward`` (empty cache)."""
        if self.family == "encoder_decoder":
            memory, tokens = self.encode(inputs[0]), inputs[1]
        else:
            memory, (tokens, *rest) = None, inputs
            if rest:
                attention_mask, *rest = rest
            if rest:
                (position_ids,) = rest
        logits, _ = self._run(tokens, memory, self._empty_past(tokens.shape[0]), 0, attention_mask, position_ids)
        return torch.from_numpy(logits)


def onnx_files(config: dict) -> dict | None:
    """{"decoder": file[, "encoder": file]} from an export's config.json, or None."""
    files = (config.get("files") or {}).get("onnx")
    return files if isinstance(files, dict) and "decoder" in files else None


def file_names(family: str) -> dict:
    if family == "encoder_decoder":
        return {"encoder": ENCODER_FILE, "decoder": DECODER_FILE}
    return {"decoder": DECODER_ONLY_FILE}


# --------------------------------------------------------------------------- parity
def _inputs(model: Transformer, seed: int, batch: int, length: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    vocab = model.embed.weight.shape[0]
    lo = min(4, vocab - 1)
    x = torch.randint(lo, vocab, (batch, length), generator=g)
    if model.family != "encoder_decoder":
        return (x,)
    src = x.clone()
    for b in range(1, batch):  # ragged sources: pad the tails
        src[b, length - b * length // (batch + 1):] = model.pad_id
    return src, torch.randint(lo, vocab, (batch, max(1, length - 2)), generator=g)


@contextmanager
def float_activations(model: Transformer):
    """``model`` with every activation quantizer switched off (16 bits) inside the block."""
    saved = [(m, m.act_bits, m.aq.bit_choices) for m in model.modules() if isinstance(m, QLinear)]
    try:
        for m, _, choices in saved:
            m.act_bits, m.aq.bit_choices = 16, (*choices, 16)
        yield model
    finally:
        for m, bits, choices in saved:
            m.act_bits, m.aq.bit_choices = bits, choices


#: progress ticks of ``parity`` with its default arguments (a progress bar's total)
PARITY_STEPS = 5


@torch.no_grad()
def parity(model: Transformer, onnx_model: OnnxTransformer, batch: int = 3, lengths=(5, 13),
           seeds=(0, 1), kv_steps: int = 4, tick=None) -> dict:
    """Compare ONNX and torch on ``len(seeds) * len(lengths)`` random batches (full
    sequences) and on ``kv_steps`` cached decoding steps. Returns what it measured: max
    and 99th-percentile absolute logit differences, the median change activation
    quantization makes (``quantization_change``), the share of positions whose argmax
    agrees, positions with a difference over ``FLOAT_ATOL`` (rounding flips) and over the
    quantization-aware tolerance, and ``ok``: greedy tokens identical everywhere (cached
    steps included) and every full-sequence position within that tolerance."""
    model = model.eval()
    diffs, changes, agree, total, flipped, over = [], [], 0, 0, 0, 0
    for seed in seeds:
        for length in lengths:
            x = _inputs(model, seed, batch, length)
            ref, got = model(*x), onnx_model(*x)
            with float_activations(model):
                change = (model(*x) - ref).abs().amax(-1)
            changes.append(change.reshape(-1))
            d = (ref - got).abs()
            diffs.append(d.reshape(-1))
            agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
            total += ref.shape[0] * ref.shape[1]
            worst = d.amax(-1)
            flipped += int((worst > FLOAT_ATOL).sum())
            over += int((worst > FLOAT_ATOL + QUANT_NOISE_FACTOR * change).sum())
            if tick:
                tick()
    # KV cache: step by step through both caches from the same tokens
    x = _inputs(model, 7, batch, kv_steps + 1)
    memory_t = model.encode(x[0]) if model.family == "encoder_decoder" else None
    memory_o = onnx_model.encode(x[0]) if model.family == "encoder_decoder" else None
    tokens = x[-1]
    cache_t, cache_o, kv_diff, kv_agree, kv_total = {}, {}, 0.0, 0, 0
    for t in range(min(kv_steps, tokens.shape[1])):
        step = tokens[:, t:t + 1]
        a = model.decode_step(step, memory_t, cache_t, t)
        b = onnx_model.decode_step(step, memory_o, cache_o, t)
        kv_diff = max(kv_diff, float((a - b).abs().max()))
        kv_agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        kv_total += a.shape[0]
    if tick:
        tick()
    d = torch.cat(diffs)
    report = {"batch": batch, "lengths": list(lengths), "batches": len(seeds) * len(lengths),
              "max_abs_diff": float(d.max()), "p99_abs_diff": float(torch.quantile(d[:1_000_000], 0.99)),
              "quantization_change": float(torch.cat(changes).median()),
              "argmax_agreement": agree / total, "positions": total,
              "positions_over_atol": flipped, "atol": FLOAT_ATOL, "positions_over_tolerance": over,
              "tolerance": f"{FLOAT_ATOL} + {QUANT_NOISE_FACTOR:g} x the change activation quantization makes "
                           "at the position",
              "kv_cache_steps": kv_steps, "kv_cache_max_abs_diff": kv_diff,
              "kv_cache_argmax_agreement": kv_agree / max(kv_total, 1)}
    report["ok"] = agree == total and over == 0 and kv_agree == kv_total
    return report
