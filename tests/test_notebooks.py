"""The notebooks in notebooks/ run top to bottom on CI's small settings, without errors."""
import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"


def _execute(name: str, tmp_path: Path, monkeypatch) -> tuple[list, Path]:
    """Run a temp copy of notebooks/NAME.ipynb with COSEARCH_NOTEBOOK_SMALL=1; its files go to tmp."""
    work = tmp_path / "work"
    monkeypatch.setenv("COSEARCH_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("COSEARCH_NOTEBOOK_WORK", str(work))
    # the kernel runs in tmp: make it import this checkout's cosearch, whatever is pip-installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel is one more process on CI's 2 cores
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the figures
    copy = tmp_path / f"{name}.ipynb"
    shutil.copy(NOTEBOOKS / f"{name}.ipynb", copy)
    nb = nbformat.read(copy, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs, work


def _text(outputs: list) -> str:
    parts = []
    for o in outputs:
        if o.output_type == "stream":
            parts.append(o.text)
        elif "data" in o:
            parts.append(o.data.get("text/plain", ""))
    return "\n".join(parts)


def _pngs(outputs: list) -> int:
    return sum(1 for o in outputs if "data" in o and "image/png" in o.data)


@pytest.mark.slow
def test_quickstart_notebook_runs_the_whole_tour(tmp_path, monkeypatch):
    outputs, work = _execute("quickstart", tmp_path, monkeypatch)
    text = _text(outputs)
    assert "SMALL = True" in text
    assert (work / "run" / "metrics.jsonl").is_file()
    front = (work / "search" / "pareto.csv").read_text().splitlines()
    assert len(front) >= 2  # header + at least one feasible sub-network
    assert (work / "search" / "pareto_latency.png").stat().st_size > 1000
    assert any((work / "export").glob("*.safetensors"))
    assert "parameters" in text and "def " in text
    assert _pngs(outputs) >= 2  # the training curve and the Pareto front(s)


@pytest.mark.slow
def test_hardware_notebook_plots_and_batch_matches_single_costs(tmp_path, monkeypatch):
    outputs, work = _execute("hardware_model", tmp_path, monkeypatch)
    text = _text(outputs)
    assert "2,000 architectures costed" in text
    assert "cost_batch matches cost" in text
    assert _pngs(outputs) == 3  # bits sweep, array-size sweep, size-vs-latency scatter
