"""Every third-party module that cosearch/, benchmarks/ and tests/ import is declared in
pyproject.toml (dependencies or an extra). CI installs into a fresh virtual environment,
so an undeclared import would fail there too, but only where it runs; this names it."""
from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parent.parent
SCANNED = ("cosearch", "benchmarks", "tests")
#: import name -> distribution, for modules of extras that may not be installed here
KNOWN = {"yaml": "pyyaml", "zigzag": "zigzag-dse", "psycopg2": "psycopg2-binary", "xdist": "pytest-xdist",
         "sklearn": "scikit-learn", "PIL": "pillow", "google": "protobuf", "IPython": "ipython"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions(pyproject: Path = REPO / "pyproject.toml") -> set[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {normalise(re.split(r"[\[<>=!~; ]", r.strip(), maxsplit=1)[0]) for r in reqs}


def imported_modules(root: Path = REPO) -> dict[str, Path]:
    """Top-level names of absolute imports -> the first file importing them."""
    files = [f for d in SCANNED if (root / d).is_dir() for f in sorted((root / d).rglob("*.py"))]
    local = {"cosearch"} | {f.stem for f in files}  # tests import their helper modules by name
    found: dict[str, Path] = {}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in (n.split(".")[0] for n in names):
                if top not in local and top not in sys.stdlib_module_names and not top.startswith("_"):
                    found.setdefault(top, f.relative_to(root))
    return found


def undeclared(root: Path = REPO) -> list[str]:
    declared = declared_distributions(root / "pyproject.toml")
    installed = packages_distributions()
    out = []
    for module, f in sorted(imported_modules(root).items()):
        dists = {normalise(d) for d in installed.get(module, [])} | {normalise(KNOWN.get(module, module))}
        if not dists & declared:
            out.append(f"{module} (imported in {f})")
    return out


def test_every_third_party_import_is_declared():
    missing = undeclared()
    assert not missing, "add to pyproject.toml dependencies or an extra: " + ", ".join(missing)


def test_the_check_finds_an_undeclared_import(tmp_path):
    (tmp_path / "cosearch").mkdir()
    (tmp_path / "cosearch" / "x.py").write_text("import numpy\nfrom scipy import stats\nimport os\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["numpy>=1"]\n')
    assert undeclared(tmp_path) == ["scipy (imported in cosearch/x.py)"]
