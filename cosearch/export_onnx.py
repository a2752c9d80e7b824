"""ONNX export of an exported model: the dequantized float forward at a fixed length.

The graph holds float32 weights (codes times scales, already computed) and the same
activation fake quantization as the PyTorch model, so both give the same logits. It is
checked against onnxruntime when that is installed, else against ONNX's own reference
evaluator (slower, but always there with the ``onnx`` package).
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .modules import Transformer

#: Tolerance of the ONNX check (float32 graphs, different kernels).
ONNX_ATOL = 1e-4


@contextlib.contextmanager
def _static_causal_flag():
    """While tracing, ``causal and T > 1`` in modules.Attention is a traced tensor, which
    ``scaled_dot_product_attention`` refuses; the length is fixed, so make it a bool."""
    orig = F.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        return orig(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=bool(is_causal), **kw)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = orig


def example_inputs(model: Transformer, length: int) -> tuple[torch.Tensor, ...]:
    """Token ids (batch 1, ``length``) to trace with: (src, tgt_in) or (tokens,)."""
    g = torch.Generator().manual_seed(0)
    vocab = model.embed.weight.shape[0]
    x = torch.randint(4, max(vocab, 5), (1, length), generator=g)
    return (x, x.clone()) if model.family == "encoder_decoder" else (x,)


def input_names(model: Transformer) -> list[str]:
    return ["src", "tgt_in"] if model.family == "encoder_decoder" else ["tokens"]


def to_onnx(model: Transformer, path: str | Path, length: int = 32, opset: int = 17) -> bytes:
    """Write ``model`` (eval mode) as ONNX for inputs of shape (1, ``length``) to ``path``."""
    model = model.eval()
    inputs = example_inputs(model, length)
    buf = io.BytesIO()
    with warnings.catch_warnings(), _static_causal_flag(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about the fixed length are expected
        torch.onnx.export(model, inputs, buf, dynamo=False, input_names=input_names(model),
                          output_names=["logits"], opset_version=opset)
    data = buf.getvalue()
    Path(path).write_bytes(data)
    return data


def check_onnx(model: Transformer, onnx_bytes: bytes, length: int = 32) -> dict:
    """Run the ONNX graph and the model on the same input; returns
    ``{"runtime": ..., "max_abs_diff": ...}`` (``ValueError`` beyond ``ONNX_ATOL``)."""
    inputs = example_inputs(model, length)
    feed = {n: t.numpy() for n, t in zip(input_names(model), inputs)}
    try:
        import onnxruntime as ort
        sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        got, runtime = sess.run(None, feed)[0], f"onnxruntime {ort.__version__}"
    except ImportError:
        import onnx
        from onnx.reference import ReferenceEvaluator
        got = ReferenceEvaluator(onnx.load_from_string(onnx_bytes)).run(None, feed)[0]
        runtime = f"onnx.reference (onnxruntime not installed) {onnx.__version__}"
    with torch.no_grad():
        ref = model.eval()(*inputs).numpy()
    diff = float(np.abs(got - ref).max())
    if not diff <= ONNX_ATOL:
        raise ValueError(f"the ONNX graph differs from the model by {diff:.3g} (> {ONNX_ATOL})")
    return {"runtime": runtime, "max_abs_diff": diff, "length": length}
