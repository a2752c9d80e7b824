"""The code version a benchmark ran at, for its JSON (one helper for every script)."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


#: results the benchmarks write (tracked): a changed one is output, not a change of the code
RESULTS = "benchmarks/results"


def code_version(root: Path = ROOT) -> dict:
    """The commit the code ran at, and whether tracked files other than results differed from
    it (a device run gets a copy of the working tree, committed or not; a result JSON an
    earlier script of the same session rewrote is not the code); {} outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout
    try:
        return {"commit": git("rev-parse", "--short", "HEAD").strip(),
                "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".",
                                                 f":(exclude){RESULTS}").strip())}
    except (OSError, subprocess.CalledProcessError):
        return {}
