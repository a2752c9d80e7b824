"""The package's layers import one way: space -> model / data / hardware -> training ->
search -> export -> deploy -> demo and the CLI. A module may import its own layer and the
layers below it, never one above; and the cost engine and the search loop stay torch-free."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cosearch"

#: top-level modules every layer may use
FOUNDATION = {"errors", "atomic", "threads", "presets", "space", "version", "jobs", "inputs", "outdirs", "strict_json"}
#: what each layer may import besides itself and the foundation
ALLOWED = {
    "foundation": set(),
    "hardware": set(),
    "model": set(),
    "data": set(),
    "training": {"model", "data"},
    "search": {"model", "data", "training", "hardware"},
    "export": {"model", "data", "training", "hardware", "search"},
    "deploy": {"model", "data", "training", "hardware", "search", "export"},
    "fidelity": {"model", "data", "training", "hardware"},
}
#: the application layer (CLI, demo, package root) may import anything
APP = {"cli", "commands", "demo", "__init__"}


def layer_of(module: str) -> str:
    """``cosearch.training.train`` -> ``training``; ``cosearch.space`` -> ``foundation``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "app"
    head = parts[1]
    if head in FOUNDATION:
        return "foundation"
    if head in APP:
        return "app"
    if head not in ALLOWED:
        raise AssertionError(f"{module}: add its layer to tests/test_layering.py")
    return head


def imports_of(path: Path) -> set[str]:
    """The cosearch modules ``path`` imports (relative imports resolved)."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    pkg = list(rel.parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("cosearch"):
                continue
            subs = [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
            out.update(subs or [target])
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("cosearch"))
    return out


def _is_module(name: str) -> bool:
    p = PKG.parent / Path(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def violations() -> list[str]:
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.parts[-1] == "__init__" else rel.parts)
        mine = layer_of(module)
        if mine == "app":
            continue
        for target in imports_of(path):
            theirs = layer_of(target)
            if theirs in (mine, "foundation") or theirs in ALLOWED[mine]:
                continue
            bad.append(f"{module} ({mine}) imports {target} ({theirs})")
    return bad


def test_imports_go_one_way():
    assert violations() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    # the checker itself must catch an upward import (a model module importing training)
    fake = tmp_path / "cosearch"
    (fake / "model").mkdir(parents=True)
    (fake / "training").mkdir()
    for d in (fake, fake / "model", fake / "training"):
        (d / "__init__.py").write_text("")
    (fake / "training" / "train.py").write_text("")
    (fake / "model" / "modules.py").write_text("from ..training.train import x\nfrom ..space import y\n")
    (fake / "space.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    assert violations() == ["cosearch.model.modules (model) imports cosearch.training.train (training)"]


@pytest.mark.parametrize("module", ["cosearch", "cosearch.hardware", "cosearch.search.study",
                                    "cosearch.search.proposers", "cosearch.space"])
def test_the_cost_engine_and_the_search_loop_import_no_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
