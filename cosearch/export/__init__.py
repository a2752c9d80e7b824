"""Exported sub-networks: self-contained, deployable folders, and loading them back.

Modules: ``folder`` (write/read an export folder), ``format`` (the packed safetensors
weights), ``packing`` (bit-packing of integer codes), ``run`` (export from a run, a
supernet or a search trial), ``pick`` (choosing a search trial), ``onnx_graph`` (the
low-bit ONNX graphs), ``onnx_runtime`` (running them with onnxruntime).

Attributes load on first use (PEP 562), so ``import cosearch`` does not import torch.
"""
from __future__ import annotations

import importlib

_ATTRS = {
    "export": "run", "load_supernet": "run", "arch_from": "run", "hardware_report": "run",
    "write_export": "folder", "open_exported": "folder", "read_config": "folder",
    "Exported": "folder", "FORMAT": "folder", "FORMAT_VERSION": "folder",
    "CONFIG": "folder", "WEIGHTS": "folder", "SCHEDULE": "folder", "TOKENIZER": "folder",
}

__all__ = ["load_exported", *_ATTRS]


def load_exported(out):
    """The exported model in folder ``out`` as a plain ``nn.Module`` (a ``Transformer``, eval
    mode). Its ``exported`` attribute is the whole export (``Exported``: config, space,
    arch, tokenizer), so ``generate_text`` / ``translate_lines`` accept the model as is."""
    from .folder import open_exported
    exp = open_exported(out)
    exp.model.exported = exp
    return exp.model


def __getattr__(name: str):
    module = _ATTRS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
