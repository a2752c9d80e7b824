"""Find preset YAML files (``spaces/``, ``hw_models/``) by name or path."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import UserError
from .inputs import MAX_JSON_DEPTH, json_depth, read_text, regular_file

#: ``spaces/`` and ``hw_models/`` ship inside the package (links to the repository's
#: top-level folders in a checkout), so installed and editable copies find them alike.
PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent


def preset_dir(kind: str) -> Path:
    return PACKAGE_DIR / kind


def list_presets(kind: str) -> list[str]:
    d = preset_dir(kind)
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def resolve(name_or_path: str | Path, kind: str) -> Path:
    """A preset name (``multi30k``) or a path to a YAML file -> an existing path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or os.path.lexists(p):
        if not os.path.lexists(p):
            raise UserError(f"{p}: no such file; give a path to a YAML file or one of the presets: "
                            f"{', '.join(list_presets(kind))}")
        try:  # a folder, FIFO, device or link loop: named as such
            return regular_file(p, "YAML file")
        except UserError as e:
            raise UserError(f"{e}, or one of the presets: {', '.join(list_presets(kind))}") from None
    cand = preset_dir(kind) / f"{name_or_path}.yaml"
    if cand.is_file():
        return cand
    raise UserError(f"unknown {kind} preset {str(name_or_path)!r}; choose one of "
                    f"{', '.join(list_presets(kind)) or '(none)'} or give a path to a YAML file")


def read_yaml(path: Path):
    """Parse a YAML file; every way it can fail is a one-line UserError naming the file."""
    text = read_text(path, "YAML file")
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        data = None
        depth = MAX_JSON_DEPTH + 1
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        raise UserError(f"{path}:{where} not valid YAML ({getattr(e, 'problem', None) or e})") from None
    else:
        depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise UserError(f"{path}: nested more than {MAX_JSON_DEPTH} levels deep; no cosearch YAML nests "
                        "like that, give the right file")
    return data


def load_preset_yaml(name_or_path: str | Path, kind: str):
    """A preset name or YAML path -> (parsed data, the path it came from)."""
    path = resolve(name_or_path, kind)
    return read_yaml(path), path
