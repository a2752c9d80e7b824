"""``cosearch.load_exported`` without importing torch at ``import cosearch`` time."""
from __future__ import annotations


def load_exported(out):
    """The exported model in folder ``out`` as a plain ``nn.Module`` (see cosearch.export)."""
    from .export import load_exported as _load
    return _load(out)
