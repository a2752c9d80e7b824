"""``cosearch space show``: JSON keys and values, text output, one-line errors with exit 2."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from cosearch.cli import main

REPO = Path(__file__).resolve().parent.parent
# tiny_lm by hand: per layer 3 FFN * 2 heads * 5 weight bits * 2 act bits = 60 choices,
# 1-4 layers, 3 widths.
TINY_CARD = 3 * sum(60**n for n in range(1, 5))
TINY_PARAMS_MIN = 1024 * 64 + (4 * (64 * 64 + 64) + (64 * 128 + 128) + (128 * 64 + 64) + 2 * 2 * 64) + 2 * 64
TINY_PARAMS_MAX = 924_416


def check_tiny_json(info: dict):
    assert info["cardinality_log10"] == pytest.approx(math.log10(TINY_CARD), abs=1e-3)
    assert info["params_min"] == TINY_PARAMS_MIN == 99_136
    assert info["params_max"] == TINY_PARAMS_MAX
    assert info["name"] == "tiny_lm" and info["family"] == "decoder_only"
    assert info["choices"]["decoder"]["embed_dim"] == [64, 96, 128]
    assert info["weight_mb_min"] < info["weight_mb_max"]


def test_show_json_in_process(capsys):
    assert main(["space", "show", "tiny_lm", "--json"]) == 0
    out, err = capsys.readouterr()
    check_tiny_json(json.loads(out))
    assert err == ""


def test_show_json_subprocess():
    r = subprocess.run([sys.executable, "-m", "cosearch.cli", "space", "show", "tiny_lm", "--json"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    check_tiny_json(json.loads(r.stdout))


def test_show_json_by_path(capsys):
    assert main(["space", "show", str(REPO / "spaces" / "multi30k.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert 30e6 <= info["params_max"] <= 50e6
    assert info["params_min"] < info["params_max"]


def test_show_text(capsys):
    assert main(["space", "show", "hat_wmt14"]) == 0
    out = capsys.readouterr().out
    assert "hat_wmt14" in out and "encoder_decoder" in out
    assert "[512, 640]" in out and "[1024, 2048, 3072]" in out and "qkv_dim 512" in out
    assert "cross-attends last [1, 2, 3]" in out
    assert "parameters:" in out and "sub-networks: 10^" in out


def test_bad_preset_exits_2_with_one_line(capsys):
    assert main(["space", "show", "no_such_space"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("cosearch space: error:")
    assert "no_such_space" in err and "tiny_lm" in err


def test_bad_preset_subprocess():
    r = subprocess.run([sys.executable, "-m", "cosearch.cli", "space", "show", "no_such_space"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "no_such_space" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_bad_yaml_file_exits_2(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\nfamily: decoder_only\nvocab_size: 10\n")
    assert main(["space", "show", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(p) in err and "decoder" in err


def test_missing_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["space", "show"])
    assert e.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
