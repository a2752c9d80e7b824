"""JSON that every reader accepts: Python's ``json.dumps`` writes ``NaN`` and ``Infinity``,
which are not JSON (other tools refuse the file). A value that is not a finite number is
written as null instead."""
from __future__ import annotations

import json
import math


def finite_json(v):
    """``v`` with every nan / inf float (in dicts, lists and tuples, at any depth) as None."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: finite_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite_json(x) for x in v]
    return v


def dumps(v, **kwargs) -> str:
    """``json.dumps`` of :func:`finite_json` of ``v``, refusing anything non-finite left."""
    return json.dumps(finite_json(v), allow_nan=False, **kwargs)
