"""The README's "Using an export from Python" section runs as written."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "### Using an export from Python"


def _python_block(heading: str) -> str:
    text = README.read_text()
    start = text.index("```python", text.index(heading)) + len("```python")
    return text[start:text.index("```", start)]


def test_readme_api_section_runs_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from cosearch.cli import main
    from test_export_cli import make_run
    code = _python_block(HEADING)
    for family, out, extra in (("encoder_decoder", "models/m30k", ["--onnx"]),
                               ("decoder_only", "cosearch_demo/export", [])):
        run, net = make_run(tmp_path / "runs", family)
        arch = net.space.with_bits(net.space.sample(2), weight_bits=4).to_json()
        assert main(["export", str(run), "--arch", arch, "--out", str(tmp_path / out), *extra]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 4
    translations = [ast.literal_eval(line) for line in printed[:2]]
    assert [len(t) for t in translations] == [2, 1] and all(isinstance(x, str) for t in translations for x in t)
    assert ast.literal_eval(printed[3]) and len(ast.literal_eval(printed[3])) == 3  # one text per prompt
