"""Co-search: hypervolume, parameters <-> designs, objectives, constraints, the loop, results."""
from __future__ import annotations

import json

import numpy as np
import optuna
import pandas as pd
import pytest

from cosearch.cli import main
from cosearch.errors import UserError
from cosearch.search import search
from cosearch.search.constraints import Bounds, check_reachable
from cosearch.search.front import pareto_mask
from cosearch.search.hypervolume import hypervolume, hypervolume_history
from cosearch.search.objectives import CostModel, parse_objectives
from cosearch.search.params import HW_PREFIX, Design, ParamSpace, trial_params
from cosearch.search.predictor import QualityPredictor, cross_validate, rank_correlation
from cosearch.search.quality import CachedQuality, SyntheticQuality
from cosearch.search.storage import open_storage
from cosearch.space import SearchSpace

pytestmark = pytest.mark.xdist_group("search")


@pytest.fixture(scope="module")
def space():
    return SearchSpace.load("tiny_lm")


def run(tmp_path, **kw):
    args = dict(hw="zcu102", space="tiny_lm", quality="synthetic", out=tmp_path / "s", trials=20,
                sampler="random", progress=False, batch=10, plots=False)
    args.update(kw)
    return search(**args)


# --------------------------------------------------------------------------- hypervolume
def test_hypervolume_of_hand_computed_fronts():
    # 2-D staircase: rectangles 3x1 + 2x1 + 1x1 under reference (4, 4)
    assert hypervolume(np.array([[1, 3], [2, 2], [3, 1]]), [4, 4]) == pytest.approx(6.0)
    # a dominated point and a point beyond the reference add nothing
    assert hypervolume(np.array([[1, 3], [2, 2], [3, 1], [2.5, 2.5], [5, 0]]), [4, 4]) == pytest.approx(6.0)
    # 3-D: two boxes [0,2]^2x[0,1] and [0,1]^3 overlap in [0,1]^3: 4 + 1 - 1... union = 4 + (2*2*2 - ...)
    pts = np.array([[0, 0, 1], [1, 1, 0]])
    # box A: [0,2]x[0,2]x[1,2] = 4; box B: [1,2]x[1,2]x[0,2] = 2; overlap [1,2]x[1,2]x[1,2] = 1
    assert hypervolume(pts, [2, 2, 2]) == pytest.approx(5.0)
    assert hypervolume(np.zeros((0, 2)), [1, 1]) == 0.0


def test_hypervolume_history_counts_only_feasible_points():
    loss = np.array([[1, 3], [0, 0], [2, 2], [3, 1]])
    feas = np.array([True, False, True, True])
    assert hypervolume_history(loss, feas, [4, 4]).tolist() == pytest.approx([3, 3, 5, 6])
    assert hypervolume_history(loss, feas, [4, 4], at=[2, 4]).tolist() == pytest.approx([3, 6])


def test_pareto_mask_keeps_nondominated_rows():
    assert pareto_mask(np.array([[1, 2], [2, 1], [2, 2], [1, 2]])).tolist() == [True, True, False, True]


# --------------------------------------------------------------------------- params
def test_every_gene_is_a_parameter_and_designs_round_trip(space):
    ps = ParamSpace.build(space)
    assert len(ps.distributions()) == len(space.genes())  # inactive layers included: fixed space
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = space.sample(rng)
        d = Design(a)
        assert ps.design(ps.params_of(d, rng=1)) == d
    with pytest.raises(UserError, match="another search space"):
        ps.design({"decoder.embed_dim": 64})


def test_accelerator_knobs_are_parameters():
    sp = SearchSpace.load("tiny_lm")
    from cosearch.hardware import load_hardware
    ps = ParamSpace.build(sp, load_hardware("tpu_like"), cosearch_hw=True)
    knobs = [n for n in ps.names() if n.startswith(HW_PREFIX)]
    assert "hw.rows" in knobs and "hw.dataflow" in knobs
    p = ps.random_params(np.random.default_rng(0))
    d = ps.design(p)
    assert d.hw_dict["rows"] == p["hw.rows"]
    assert ps.params_of(d)["hw.rows"] == p["hw.rows"]


# --------------------------------------------------------------------------- objectives / constraints
def test_objective_names_are_checked():
    assert [o.name for o in parse_objectives("quality, latency,size")] == ["quality", "latency", "size"]
    assert parse_objectives("bleu,energy")[0].direction == "maximize"
    for bad, msg in [("quality,speed", "unknown objective 'speed'"), ("", "empty"),
                     ("size,size", "twice"), ("quality,bleu", "not both")]:
        with pytest.raises(UserError, match=msg):
            parse_objectives(bad)


def test_unreachable_bounds_report_the_best_reachable_value(space):
    costs = CostModel(space, "zcu102", "decode")
    best = float(costs([Design(space.smallest())])["latency_ms"][0])
    r = check_reachable(space, costs, Bounds(latency_max=best * 1.01), {}, samples=200)
    assert r.min_latency_ms <= best
    with pytest.raises(UserError, match=r"--latency-max 0.001 ms cannot be met on zcu102: .* takes [0-9.]+ ms"):
        check_reachable(space, costs, Bounds(latency_max=0.001), {}, samples=200)
    with pytest.raises(UserError, match="area applies to ASIC"):
        check_reachable(space, costs, Bounds(area_max=10), {}, samples=10)
    asic = CostModel(space, "tpu_like", "decode")
    with pytest.raises(UserError, match=r"--area-max 1 mm\^2 cannot be met .* smallest accelerator tried is"):
        check_reachable(space, asic, Bounds(area_max=1), {}, samples=10)
    with pytest.raises(UserError, match="must be positive"):
        Bounds(latency_max=-1)


def test_search_errors_come_before_any_trial(tmp_path):
    with pytest.raises(UserError, match="cannot be met"):
        run(tmp_path, latency_max=1e-4)
    assert not (tmp_path / "s").exists()
    with pytest.raises(UserError, match="cannot be opened"):
        run(tmp_path, storage=f"sqlite:///{tmp_path}/no/such/dir/x.db")
    with pytest.raises(UserError, match="give an SQLAlchemy URL"):
        run(tmp_path, storage="not-a-url")
    with pytest.raises(UserError, match="--sampler"):
        run(tmp_path, sampler="cmaes")


def test_cli_errors_exit_2(tmp_path, capsys):
    rc = main(["search", "--space", "tiny_lm", "--synthetic-quality", "--hw", "zcu102", "--objectives",
               "quality,speed", "--out", str(tmp_path / "s")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown objective 'speed'" in err[0]
    rc = main(["search", "--space", "tiny_lm", "--synthetic-quality", "--hw", "zcu102",
               "--latency-max", "0.0001", "--out", str(tmp_path / "s")])
    assert rc == 2 and "takes" in capsys.readouterr().err


# --------------------------------------------------------------------------- the loop
def test_search_writes_results_and_resumes_to_a_total(tmp_path):
    r = run(tmp_path, trials=20, plots=True)
    assert r.trials == 20 and 0 < r.measured <= 20
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert len(df) == 20 and df["number"].is_unique
    # a synthetic quality is labelled as such, never as measured on a supernet
    assert set(df["source"]) == {"synthetic"}
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["measured"] == 20
    front = pd.read_csv(tmp_path / "s" / "pareto.csv")
    assert len(front) >= 2 and front["feasible"].all()
    # the front is exactly the non-dominated set of the trials
    mask = pareto_mask(df[["quality", "latency", "size"]].to_numpy())
    assert sorted(front["number"]) == sorted(df["number"][mask])
    # quality is the synthetic loss of the stored arch; costs agree with the cost engine
    sp = SearchSpace.load("tiny_lm")
    row = df.iloc[3]
    from cosearch.space import Arch
    a = Arch.from_json(row["arch"])
    assert row["quality"] == pytest.approx(SyntheticQuality(sp).loss(a))
    assert row["latency"] == pytest.approx(CostModel(sp, "zcu102", "decode")([Design(a)])["latency_ms"][0])
    for f in ("pareto_size.png", "pareto_latency.png", "hypervolume.png", "plots.html", "summary.json"):
        assert (tmp_path / "s" / f).stat().st_size > 1000 or f == "summary.json"
    # re-running the same command with a larger total adds only the difference
    r2 = run(tmp_path, trials=27)
    df2 = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert r2.trials == 27 and len(df2) == 27 and df2["number"].is_unique
    # archs of the first call are known on resume (synthetic rows too): only new ones are measured
    assert r2.measured == len(set(df2["digest"][20:]) - set(df["digest"]))
    assert set(df2["source"]) == {"synthetic"}
    # same total again: nothing to do
    assert run(tmp_path, trials=27).measured == 0
    # other settings on the same folder: refused, one line
    with pytest.raises(UserError, match="holds a search made with objectives"):
        run(tmp_path, trials=27, objectives="quality,latency")


def test_resumed_synthetic_search_measures_no_known_arch_again(tmp_path):
    """Synthetic rows count as measured on resume: with two archs (the anchors, scored by the
    first call) and many accelerator knobs, the second call scores no arch again."""
    two = SearchSpace.from_dict({
        "name": "two_archs", "family": "decoder_only", "vocab_size": 128, "max_positions": 32,
        "decoder": {"embed_dim": [16], "layers": [1], "ffn_dim": [32], "heads": [2], "head_dim": 8},
        "quantization": {"weight_bits": [4, 8], "act_bits": [8]}})
    assert two.cardinality() == 2
    first = run(tmp_path, space=two, trials=6, batch=6, cosearch_hw=True)
    assert first.measured == 2
    again = run(tmp_path, space=two, trials=12, batch=6, cosearch_hw=True)
    assert again.trials == 12 and again.measured == 0
    assert set(pd.read_csv(tmp_path / "s" / "trials.csv")["source"]) == {"synthetic"}


def test_constraints_keep_infeasible_trials_off_the_front(tmp_path):
    sp = SearchSpace.load("tiny_lm")
    costs = CostModel(sp, "zcu102", "decode")
    lat = costs([Design(sp.sample(i)) for i in range(200)])["latency_ms"]
    bound = float(np.median(lat))
    r = run(tmp_path, trials=40, latency_max=bound, sampler="nsga2", population=10)
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert (~df["feasible"]).any() and df["feasible"].any()
    assert (df["feasible"] == (df["latency_ms"] <= bound)).all()
    assert df["c_latency"].to_numpy() == pytest.approx(df["latency_ms"].to_numpy() - bound)
    front = pd.read_csv(tmp_path / "s" / "pareto.csv")
    assert front["feasible"].all() and (front["latency_ms"] <= bound).all()
    assert all(row["feasible"] for row in r.pareto)
    st = optuna.load_study(study_name="cosearch", storage=f"sqlite:///{tmp_path}/s/study.db")
    assert {t.number for t in st.best_trials} == set(front["number"])


def test_sequential_search_is_reproducible(tmp_path):
    a = run(tmp_path / "a", trials=25, sampler="nsga2", population=8, storage="memory", seed=3)
    b = run(tmp_path / "b", trials=25, sampler="nsga2", population=8, storage="memory", seed=3)
    pa = [trial_params(t) for t in a.study.get_trials()]
    assert pa == [trial_params(t) for t in b.study.get_trials()] and len(pa) == 25
    c = run(tmp_path / "c", trials=25, sampler="nsga2", population=8, storage="memory", seed=4)
    assert pa != [trial_params(t) for t in c.study.get_trials()]


def test_evolution_respects_the_latency_bound_before_measuring(tmp_path):
    sp = SearchSpace.load("tiny_lm")
    costs = CostModel(sp, "zcu102", "decode")
    lat = costs([Design(sp.sample(i)) for i in range(200)])["latency_ms"]
    bound = float(np.quantile(lat, 0.3))
    from cosearch.search.evolution import EvolutionSettings
    evo = EvolutionSettings(population=20, parents=5, mutants=10, crossovers=10)
    r = run(tmp_path, trials=60, sampler="evolution", latency_max=bound, evolution=evo, batch=20)
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert len(df) == 60 and df["number"].is_unique
    assert df["feasible"].mean() > 0.9  # HAT resamples candidates that break the bound
    assert df["digest"].is_unique  # no arch evaluated twice
    assert r.feasible == int(df["feasible"].sum())


def test_cosearch_hw_records_knobs_and_area_constraint(tmp_path):
    r = run(tmp_path, hw="tpu_like", cosearch_hw=True, trials=24, area_max=150,
            objectives="quality,latency,area")
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    knobs = df["hw_params"].map(json.loads)
    assert all("rows" in k for k in knobs) and knobs.map(lambda k: k["rows"]).nunique() > 1
    assert (df["feasible"] == ((df["area_mm2"] <= 150) & (df["c_hw_feasible"] <= 0))).all()
    assert r.trials == 24


def test_pareto_command_redraws(tmp_path, capsys):
    run(tmp_path, trials=15)
    (tmp_path / "s" / "pareto.csv").unlink()
    assert main(["pareto", str(tmp_path / "s"), "--no-html"]) == 0
    assert (tmp_path / "s" / "pareto.csv").is_file() and (tmp_path / "s" / "pareto_size.png").is_file()
    assert "Pareto-optimal of 15 trials" in capsys.readouterr().out
    assert main(["pareto", str(tmp_path / "nothing")]) == 2


# --------------------------------------------------------------------------- predictor and cache
def test_predictor_ranks_synthetic_quality(space):
    q = SyntheticQuality(space)
    archs = [space.sample(i) for i in range(160)]
    X, y = space.encode_many(archs), q(archs)["loss"]
    cv = cross_validate(X, y, folds=4, members=3, epochs=200)
    assert cv["spearman"] > 0.8 and cv["kendall"] > 0.6 and cv["n"] == 160
    p = QualityPredictor(members=2, epochs=100).fit(X[:100], y[:100])
    assert p.predict(X[100:]).shape == (60,) and (p.predict_std(X[100:]) >= 0).all()
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == {"n": 4, "spearman": 1.0, "kendall": 1.0}


def test_cache_measures_each_arch_once(space):
    calls = []

    class Counting:
        name = "count"

        def __call__(self, archs):
            calls.extend(archs)
            return {"loss": np.arange(len(archs), dtype=float)}

    c = CachedQuality(Counting())
    a, b = space.sample(1), space.sample(2)
    first = c([a, b, a])["loss"]
    assert first[0] == first[2] and len(calls) == 2
    c([b, a])
    assert len(calls) == 2 and c.measured == 2


@pytest.mark.slow
def test_predictor_screen_skips_measurements_and_reports_correlation(tmp_path):
    r = run(tmp_path, trials=120, sampler="random", predictor=True, predictor_warmup=40, predictor_refit=25,
            batch=20)
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert set(df["source"]) == {"synthetic", "predicted"}
    assert r.measured == df.loc[df["source"] == "synthetic", "digest"].nunique() < 110
    assert r.predictor is not None and r.predictor["n"] > 0 and r.predictor["spearman"] > 0.5
    assert r.predictor["metric"] == "loss" and r.predictor["kendall"] > 0.3
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["predictor"]["kendall"] == r.predictor["kendall"]
    # fitted on measured points only: every predicted row took its value from the predictor
    pred = df[df["source"] == "predicted"]
    assert (pred["quality"] == pred["predicted_loss"]).all()
    assert (pd.read_csv(tmp_path / "s" / "pareto.csv")["source"] == "synthetic").all()


def test_storage_kinds(tmp_path):
    assert isinstance(open_storage("memory", None), optuna.storages.InMemoryStorage)
    j = open_storage(f"journal:{tmp_path}/j.log", None)
    assert type(j).__name__ == "JournalStorage"
    s = open_storage(None, tmp_path / "o")
    assert s.url.startswith("sqlite:///") and (tmp_path / "o").is_dir()


def test_fast_arch_json_matches_arch_to_json():
    from cosearch.search.params import arch_digest, arch_json
    for name in ("tiny_lm", "multi30k"):
        sp = SearchSpace.load(name)
        for i in range(30):
            a = sp.sample(i)
            assert arch_json(a) == a.to_json() and arch_digest(a) == a.digest()
