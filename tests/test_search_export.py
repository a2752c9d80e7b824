"""A real search folder names the run it measured, so export needs no --run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

import cosearch
from cosearch.cli import main
from cosearch.search import search
from cosearch.search.quality import SyntheticQuality
from cosearch.training.rundir import read_config, space_of

sys.path.insert(0, str(Path(__file__).parent))
from test_export_cli import make_run  # noqa: E402

pytestmark = pytest.mark.xdist_group("search")


def test_export_pick_from_a_search_folder_without_run(tmp_path):
    run, net = make_run(tmp_path, "decoder_only")
    space = space_of(read_config(run))
    res = search(run, hw="zcu102", quality=SyntheticQuality(space), out=tmp_path / "s", trials=12,
                 sampler="random", batch=6, progress=False, plots=False)
    cfg = json.loads((res.out / "search.json").read_text())
    assert cfg["run"] == str(run.resolve())

    assert main(["export", str(res.out), "--pick", "best-quality", "--out", str(tmp_path / "best")]) == 0
    exp = json.loads((tmp_path / "best" / "config.json").read_text())
    trials = pd.read_csv(res.out / "trials.csv")
    assert set(trials["source"]) == {"synthetic"}  # not "measured": no supernet was evaluated
    assert set(pd.read_csv(res.out / "pareto.csv")["source"]) == {"synthetic"}
    ok = trials[trials["feasible"] & (trials["source"] == "synthetic")]
    best = ok.sort_values("loss", kind="stable").iloc[0]
    assert exp["source"]["run"] == str(run.resolve()) and exp["source"]["trial"] == int(best["number"])
    assert cosearch.Arch.from_dict(exp["arch"]) == cosearch.Arch.from_dict(json.loads(best["arch"]))
    assert exp["search_metrics"]["loss"] == pytest.approx(best["loss"])


def test_synthetic_search_names_no_run(tmp_path):
    search(hw="zcu102", space="tiny_lm", quality="synthetic", out=tmp_path / "s", trials=4,
           sampler="random", batch=4, progress=False, plots=False)
    assert json.loads((tmp_path / "s" / "search.json").read_text())["run"] is None


def test_export_finds_a_custom_accelerator_file(tmp_path):
    run, _ = make_run(tmp_path, "decoder_only")
    preset = Path(cosearch.__file__).resolve().parent.parent / "hw_models" / "zcu102.yaml"
    hw = tmp_path / "my_board.yaml"
    hw.write_text(preset.read_text().replace("name: zcu102", "name: my_board", 1))
    space = space_of(read_config(run))
    res = search(run, hw=str(hw), quality=SyntheticQuality(space), out=tmp_path / "s", trials=6,
                 sampler="random", batch=6, progress=False, plots=False)
    assert json.loads((res.out / "search.json").read_text())["hardware"] == str(hw.resolve())
    assert main(["export", str(res.out), "--pick", "best-quality", "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "config.json").read_text())["hardware"]["name"] == "my_board"
