"""benchmarks/git_version.py: the code version every benchmark JSON records."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from git_version import code_version  # noqa: E402


def test_the_commit_and_whether_tracked_files_differed(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    assert code_version(tmp_path) == {}  # not a checkout
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    sha = git("log", "-1", "--format=%h")
    (tmp_path / "new.txt").write_text("untracked files do not count\n")
    assert code_version(tmp_path) == {"commit": sha, "uncommitted_changes": False}
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "r.json").write_text("{}\n")
    git("add", "benchmarks/results/r.json")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "two")
    sha = git("log", "-1", "--format=%h")
    (results / "r.json").write_text('{"rewritten": 1}\n')  # a result an earlier script rewrote: not code
    assert code_version(tmp_path) == {"commit": sha, "uncommitted_changes": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_version(tmp_path) == {"commit": sha, "uncommitted_changes": True}


def test_the_benchmarks_record_it():
    """Each script's machine() carries it (in a child process: importing a script may set
    thread variables)."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    for script in ("fidelity", "measure_host_cost", "ray_gpu"):
        out = subprocess.run([sys.executable, "-c", f"import {script}; print({script}.machine()['commit'])"],
                             cwd=bench, capture_output=True, text=True, check=True).stdout.strip()
        assert out == code_version()["commit"], script
