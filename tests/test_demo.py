"""`cosearch demo` end to end, on tiny settings (the real demo runs the same stages)."""
from pathlib import Path

import pytest

from cosearch.demo import DemoSettings, run_demo
from cosearch.export import load_exported


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(tmp_path, capsys):
    s = DemoSettings(out=tmp_path / "demo", steps=16, trials=16, corpus_bytes=80_000, max_tokens=512)
    files = run_demo(s, progress=True)
    for key in ("metrics", "trials", "pareto", "sample"):
        assert Path(files[key]).is_file(), key
    assert files["plots"] and all(p.stat().st_size > 1000 for p in files["plots"])
    model = load_exported(files["export"])
    assert sum(p.numel() for p in model.parameters()) > 0
    assert Path(files["sample"]).read_text().startswith("def ")
    out = capsys.readouterr().out
    assert "exported model" in out and "[5/5]" in out
    # a second run finds everything done and resumes instead of failing
    again = run_demo(s, progress=False)
    assert again["export"] == files["export"]
