"""The README, true from a fresh clone: its tour's imports run as written (the export API
block: tests/test_readme_api.py), the folders the tour writes are ignored by git, and the
Multi30k fetch script does what it says (against a local mirror: no network here)."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
MULTI30K = Path(os.environ.get("COSEARCH_SHARED_DATA", REPO.parent / "shared" / "data")) / "multi30k"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_tour_imports_run_as_written():
    """The tour's Python block (every command's function) imports as written; the "Using an
    export from Python" block runs in tests/test_readme_api.py."""
    code = blocks("python")[0]
    assert "from cosearch.demo import run_demo" in code
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]


def tour_outputs() -> set[str]:
    """The first folder of every path the README's bash blocks write (--out, fetch targets)."""
    out = set()
    for block in blocks("bash"):
        words = shlex.split(block.replace("\\\n", " "), comments=True)
        for flag, value in zip(words, words[1:]):
            if flag == "--out" or flag.endswith("fetch_multi30k.sh"):
                if not value.startswith(("/", "-")):
                    out.add(Path(value).parts[0])
    return out


def test_the_tours_output_folders_are_ignored_by_git():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    outs = tour_outputs()
    assert {"runs", "search", "models", "data"} <= outs, outs
    r = subprocess.run(["git", "check-ignore", *[f"{o}/x" for o in sorted(outs | {"cosearch_demo"})]],
                       cwd=REPO, capture_output=True, text=True)
    ignored = {Path(x).parts[0] for x in r.stdout.split()}
    assert ignored == outs | {"cosearch_demo"}, f"not ignored: {sorted(outs - ignored)}"


def test_the_readme_names_the_data_source_not_a_local_folder():
    assert "../shared" not in README
    assert "github.com/multi30k/dataset" in README and "fetch_multi30k.sh" in README


# --------------------------------------------------------------------------- fetch_multi30k.sh
def _fetch(dest: Path, mirror: Path) -> subprocess.CompletedProcess:
    if shutil.which("curl") is None and shutil.which("wget") is None:
        pytest.skip("neither curl nor wget")
    return subprocess.run(["bash", str(REPO / "benchmarks" / "fetch_multi30k.sh"), str(dest)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MULTI30K_URL": mirror.resolve().as_uri()})


@pytest.mark.skipif(not MULTI30K.is_dir(), reason="no local Multi30k copy to stand in for the network")
def test_fetch_script_gives_the_folder_train_reads(tmp_path):
    """With a local copy standing in for github.com/multi30k/dataset: every file arrives,
    and the folder is what `cosearch train --task translation --data` reads. (The
    download from GitHub itself cannot be tested offline.)"""
    from cosearch.data.readers import read_parallel
    r = _fetch(tmp_path / "m30k", MULTI30K)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(read_parallel(tmp_path / "m30k", "en", "de", "train")) == 29000
    assert len(read_parallel(tmp_path / "m30k", "en", "de", "valid")) == 1014
    assert len(read_parallel(tmp_path / "m30k", "en", "de", "test")) == 1000
    again = _fetch(tmp_path / "m30k", tmp_path / "nowhere")  # all there: nothing fetched again
    assert again.returncode == 0, again.stderr[-2000:]


@pytest.mark.skipif(not MULTI30K.is_dir(), reason="no local Multi30k copy to stand in for the network")
def test_fetch_script_refuses_a_wrong_file(tmp_path):
    mirror = shutil.copytree(MULTI30K, tmp_path / "mirror")
    import gzip
    (mirror / "val.de.gz").write_bytes(gzip.compress(b"only one line\n"))
    r = _fetch(tmp_path / "m30k", mirror)
    assert r.returncode != 0 and "val.de.gz has 1 lines, expected 1014" in r.stderr
    assert not (tmp_path / "m30k" / "val.de.gz").exists() and not list((tmp_path / "m30k").glob("*.part"))
