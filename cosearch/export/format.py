"""The weight file of an exported model: ``model.safetensors`` with packed integer codes.

For every tensor of a standalone ``Transformer`` (``build_standalone``):

* a quantized weight (a ``QLinear`` or the token table below 16 bits) is stored as
  ``NAME.codes``, a 1-D uint8 buffer of its integer codes packed at their bit-width
  (``cosearch.export.packing``), next to its float32 per-row scale ``PREFIX.weight_scale``;
  its shape and bits are in the header metadata (``quantized``, a JSON object);
* a 16-bit weight is stored as float16 (the supernet already rounds it to fp16);
* biases, norms and activation clipping factors are float32.

Codes plus scales reproduce the fake-quantized weights bit-exactly, so a loaded model
computes what the supernet's sub-network computes. Reading goes through safetensors and
JSON only: nothing is unpickled. Every defect (bad header, missing or extra tensor, wrong
shape, dtype or code count) raises a one-line ``UserError`` naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import UserError
from ..model.modules import PlainEmbedding, QLinear, Transformer
from .packing import pack_codes, packed_nbytes, unpack_codes
from ..model.quant import dequantize_codes, quantize_codes
from ..space import canonical_bits

FORMAT = "cosearch-weights/1"
CODES_SUFFIX = ".codes"


def _quantized_modules(model: Transformer) -> dict[str, tuple[torch.nn.Module, float]]:
    """{weight name: (module, bits)} of every weight stored as integer codes or fp16."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, QLinear):
            out[f"{name}.weight"] = (mod, canonical_bits(mod.weight_bits))
        elif isinstance(mod, PlainEmbedding):
            out[f"{name}.weight"] = (mod, canonical_bits(mod.bits))
    return out


def encode_weights(model: Transformer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, header metadata) that ``save_file`` writes for ``model``."""
    weights = _quantized_modules(model)
    tensors, quantized = {}, {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if name in weights:
            mod, bits = weights[name]
            if bits == 16:
                tensors[name] = t.to(torch.float16).contiguous()
                continue
            scale = mod.weight_scale.detach().cpu()
            codes = quantize_codes(t, bits, scale)
            if not torch.equal(dequantize_codes(codes, bits, scale), t.float()):
                # codes * scales must be the weights exactly: a bug upstream otherwise
                raise ValueError(f"{name}: weight is not on its {bits}-bit grid")
            tensors[name + CODES_SUFFIX] = torch.from_numpy(pack_codes(codes.numpy(), bits))
            quantized[name] = {"shape": list(t.shape), "bits": bits}
        else:
            tensors[name] = t.to(torch.float32).contiguous()
    return tensors, {"format": FORMAT, "quantized": json.dumps(quantized, sort_keys=True)}


def save_weights(model: Transformer, path: str | Path) -> None:
    """Write ``model``'s weights to ``path`` (the caller makes it atomic)."""
    tensors, meta = encode_weights(model)
    save_file(tensors, str(path), metadata=meta)


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; the export folder is incomplete, export again") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a readable safetensors file ({first}); it is truncated "
                        "or damaged, export again") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: header metadata format is {meta.get('format')!r}, expected "
                        f"{FORMAT!r}; it was not written by cosearch export")
    try:
        quantized = json.loads(meta.get("quantized", "{}"))
        if not isinstance(quantized, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise UserError(f"{path}: header metadata 'quantized' is not a JSON object ({e})") from None
    return tensors, quantized


def load_weights(model: Transformer, path: str | Path) -> Transformer:
    """Fill ``model`` (a ``build_standalone`` of the exported arch) from ``path``."""
    path = Path(path)
    tensors, quantized = _read_file(path)
    weights = _quantized_modules(model)
    expected = model.state_dict()
    state = {}
    for name, ref in expected.items():
        bits = weights[name][1] if name in weights else None
        if bits is not None and bits < 16:
            state[name] = _decode_quantized(path, name, bits, ref, tensors, quantized)
            continue
        t = tensors.get(name)
        if t is None:
            raise UserError(f"{path}: tensor {name!r} is missing; the file does not match config.json")
        want = torch.float16 if bits == 16 else torch.float32
        if t.dtype != want or tuple(t.shape) != tuple(ref.shape):
            raise UserError(f"{path}: tensor {name!r} is {t.dtype} {list(t.shape)}, expected {want} "
                            f"{list(ref.shape)}; the file does not match config.json")
        state[name] = t.float()
    extra = sorted(set(tensors) - set(expected) - {n + CODES_SUFFIX for n in quantized})
    if extra or set(quantized) - set(state):
        what = extra[0] if extra else sorted(set(quantized) - set(state))[0]
        raise UserError(f"{path}: unexpected tensor {what!r}; the file does not match config.json")
    model.load_state_dict(state, strict=True)
    return model


def _decode_quantized(path: Path, name: str, bits: float, ref: torch.Tensor,
                      tensors: dict, quantized: dict) -> torch.Tensor:
    """The float32 weight of ``name`` from its packed codes and its scale."""
    info = quantized.get(name)
    codes = tensors.get(name + CODES_SUFFIX)
    if info is None or codes is None:
        raise UserError(f"{path}: quantized tensor {name!r} is missing; the file does not match config.json")
    shape, stored_bits = info.get("shape"), info.get("bits")
    if shape != list(ref.shape) or stored_bits is None or canonical_bits(stored_bits) != bits:
        raise UserError(f"{path}: {name!r} is stored as {stored_bits} bits {shape}, but config.json's "
                        f"arch needs {bits} bits {list(ref.shape)}")
    count = int(np.prod(shape))
    if codes.dtype != torch.uint8 or codes.dim() != 1 or codes.numel() != packed_nbytes(count, bits):
        raise UserError(f"{path}: {name!r} has {codes.numel()} code bytes ({codes.dtype}), expected "
                        f"{packed_nbytes(count, bits)} uint8 for {count} weights at {bits} bits")
    scale_name = name.rsplit(".", 1)[0] + ".weight_scale"
    scale = tensors.get(scale_name)
    if scale is None or scale.dtype != torch.float32 or tuple(scale.shape) != (shape[0], 1):
        raise UserError(f"{path}: scale {scale_name!r} is missing or not float32 [{shape[0]}, 1]")
    if not bool(torch.isfinite(scale).all()) or not bool((scale > 0).all()):
        raise UserError(f"{path}: scale {scale_name!r} holds non-positive or non-finite values")
    unpacked = torch.from_numpy(unpack_codes(codes.numpy(), bits, count)).reshape(shape)
    return dequantize_codes(unpacked, bits, scale)
