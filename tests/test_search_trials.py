"""Every trial is a distinct design, --trials N gives N, settings are checked up front."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cosearch.cli import main
from cosearch.errors import UserError
from cosearch.search import SearchConfig, search
from cosearch.search.objectives import CostModel
from cosearch.search.params import Design
from cosearch.search.quality import SyntheticQuality
from cosearch.space import SearchSpace

from train_fixtures import lm_space

pytestmark = pytest.mark.xdist_group("search")


def micro_space(ffn=(32, 64), layers=(1,)) -> SearchSpace:
    """A space of len(ffn) * ... archs: small enough to exhaust."""
    d = lm_space()
    d["decoder"] = dict(embed_dim=[16], layers=list(layers), ffn_dim=list(ffn), heads=[2], head_dim=8)
    d["quantization"] = dict(weight_bits=[8], act_bits=[8])
    return SearchSpace.from_dict(d)


def run(tmp_path, **kw):
    cfg = SearchConfig(hw="zcu102", space="tiny_lm", quality="synthetic", out=tmp_path / "s", trials=20,
                       sampler="random", progress=False, batch=10, plots=False)
    return search(config=cfg, **kw)


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random", "evolution"])
def test_every_trial_is_a_distinct_arch(tmp_path, sampler):
    # a small space of 2 layer counts: many parameter sets decode to one arch
    sp = micro_space(ffn=(32, 64, 128), layers=(1, 2))  # 3 + 9 = 12 archs
    r = search(hw="zcu102", space=sp, quality=SyntheticQuality(sp), out=tmp_path / "s", trials=10,
               sampler=sampler, population=4, batch=4, progress=False, plots=False,
               evolution=None if sampler != "evolution" else __import__(
                   "cosearch.search.evolution", fromlist=["x"]).EvolutionSettings(
                   population=4, parents=2, mutants=2, crossovers=2))
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert len(df) == r.trials == 10
    assert df["digest"].nunique() == 10


def _proposer(sp, total, sampler, server=False):
    """An OptunaProposer on a fresh in-memory study of ``sp``."""
    import optuna

    from cosearch.search.params import ParamSpace
    from cosearch.search.proposers import OptunaProposer
    store = optuna.storages.InMemoryStorage()
    st = optuna.create_study(storage=store, study_name="s", directions=["minimize"])
    return OptunaProposer(st, store, ParamSpace.build(sp), total, sampler, seed=0, server=server)


def _finish(prop, props, value=1.0):
    """Reserve and record ``props`` with one objective value each (as the search loop does)."""
    from cosearch.search.objectives import Outcome
    prop.reserve(props, [{}] * len(props), [{}] * len(props))
    prop.record(props, [Outcome([value], {}) for _ in props], [{"source": "synthetic"}] * len(props))


def test_a_repeated_proposal_is_replaced_by_an_unseen_neighbour():
    import optuna
    from optuna.trial import TrialState

    from cosearch.search.params import trial_attrs, trial_params
    sp = micro_space(ffn=(32, 64, 128), layers=(1, 2))  # 12 archs: TPE repeats itself soon
    prop = _proposer(sp, 10, optuna.samplers.TPESampler(seed=0, constant_liar=True))
    while prop.left() > 0:
        _finish(prop, prop.ask(4))
    mirror = prop.mirror.get_trials(deepcopy=False)
    repeats = [t for t in mirror if t.user_attrs.get("duplicate")]
    assert repeats and all(t.state == TrialState.FAIL for t in repeats)
    # the study itself never sees a repeat: only the replacements, each a distinct design
    ts = prop.study.get_trials(deepcopy=False)
    assert all(t.state == TrialState.COMPLETE for t in ts) and len(ts) == 10
    assert len({prop.pspace.design(trial_params(t)).key() for t in ts}) == 10
    neighbours = [t for t in ts if trial_attrs(t).get("fallback") == "neighbour"]
    assert neighbours
    for t in neighbours:  # one gene away from a repeated proposal
        p = trial_params(t)
        assert any(sum(p[k] != d.params[k] for k in p) == 1 for d in repeats)


def test_evolution_with_batches_in_flight_measures_each_arch_once(tmp_path):
    # two measuring workers: the next generation is built while a batch is still measured
    from cosearch.search.evolution import EvolutionSettings
    sp = micro_space(ffn=(32, 64, 128), layers=(1, 2))
    r = search(hw="zcu102", space=sp, quality=SyntheticQuality(sp), out=tmp_path / "s", trials=10, seed=0,
               sampler="evolution", batch=2, workers=2, gpu=True, progress=False, plots=False,
               evolution=EvolutionSettings(population=4, parents=2, mutants=2, crossovers=2))
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert len(df) == df["digest"].nunique() == r.trials == 10


def test_processes_of_one_search_may_use_their_own_seeds(tmp_path):
    run(tmp_path, trials=4, seed=1)
    assert run(tmp_path, trials=8, seed=2).trials == 8  # resumed, not refused


@pytest.mark.parametrize("synthetic", [True, False])
def test_a_stand_in_source_is_labelled_synthetic_whatever_its_name(tmp_path, synthetic):
    sp = micro_space()

    class Source(SyntheticQuality):
        name = "my-source"
    Source.synthetic = synthetic
    search(hw="zcu102", space=sp, quality=Source(sp), out=tmp_path / "s", trials=2, progress=False, plots=False)
    assert set(pd.read_csv(tmp_path / "s" / "trials.csv")["source"]) == {"synthetic" if synthetic else "measured"}


@pytest.mark.parametrize("queued,k", [({"fallback": "neighbour"}, 2), ({"retry_of": 7}, 1), (None, 1)])
def test_a_trial_reserved_after_another_machine_took_the_last_slots_is_failed(queued, k):
    # on a server database (no file lock) another machine may finish trials between our count
    # and our reservation: counted again after reserving, ours beyond the total are failed;
    # a queued trial (a replacement, a retry) claimed in that round too
    import optuna
    from optuna.trial import TrialState, create_trial

    from cosearch.search.params import pack, trial_attrs
    from cosearch.search.proposers import queue
    sp = micro_space(ffn=(32, 64, 128), layers=(1, 2))
    prop = _proposer(sp, 2, optuna.samplers.RandomSampler(seed=0), server=True)
    if queued is not None:
        queue(prop.study, prop.pspace.params_of(Design(sp.largest())), queued)  # number 0
    props = prop.ask(k)
    assert len(props) == k
    for arch in (sp.smallest(), sp.sample(3)):  # the other machine
        prop.study.add_trial(create_trial(values=[1.0], user_attrs=pack(
            {"key": Design(arch).key(), "owner": "elsewhere:1", "genes": prop.pspace.params_of(Design(arch))})))
    prop.reserve(props, [{}] * k, [{}] * k)
    ts = prop.study.get_trials(deepcopy=False)
    assert len([t for t in ts if t.state in (TrialState.COMPLETE, TrialState.RUNNING)]) == 2
    over = [t for t in ts if trial_attrs(t).get("over_budget")]
    assert len(over) == k and all(t.state == TrialState.FAIL for t in over)
    assert not prop.inflight


def test_a_claim_failed_by_a_search_opening_the_study_is_dropped_and_its_retry_runs_it():
    # a search opening the study fails RUNNING trials without an owner; one that reads the
    # study between our claim (WAITING -> RUNNING) and our owner line fails ours and queues
    # the design again. Our round goes on without it; the retry evaluates it, once.
    import optuna
    from optuna.trial import TrialState

    from cosearch.search.objectives import Outcome
    from cosearch.search.params import trial_attrs
    from cosearch.search.proposers import fail_stale, queue
    from cosearch.search.trial_batch import TrialBatch
    sp = micro_space(ffn=(32, 64, 128), layers=(1, 2))
    prop = _proposer(sp, 3, optuna.samplers.RandomSampler(seed=0))
    queue(prop.study, prop.pspace.params_of(Design(sp.largest())), {})  # number 0: claimed first
    props = prop.ask(3)
    claimed = next(p for p in props if p.trial.number == 0 or p.design.key() == Design(sp.largest()).key())
    # the other search's view: our claim without its owner (as in the instant before it is set)
    design = prop.storage.get_trial(claimed.trial_id).user_attrs["design"]
    prop.storage.set_trial_user_attr(claimed.trial_id, "design", {k: v for k, v in design.items() if k != "owner"})
    assert fail_stale(prop.study, unowned=True) == 1
    kept = prop.reserve(props, [{}] * 3, [{}] * 3)
    assert claimed not in kept and len(kept) == 2 and claimed.trial_id not in prop.inflight
    # the batch keeps its other designs' costs aligned (the lost one need not be the last)
    batch = TrialBatch(props, {"latency_ms": np.arange(3.0)}, True, np.array([True, False, True]))
    batch.design_attrs()  # built at the reservation, before keep
    batch.keep(kept)
    from cosearch.search.params import arch_digest
    assert [a["digest"] for a in batch.design_attrs()] == [arch_digest(p.design.arch) for p in kept]
    idx = [props.index(p) for p in kept]
    assert batch.props == kept and list(batch.cost_metrics["latency_ms"]) == [float(i) for i in idx]
    assert list(batch.measure) == [[True, False, True][i] for i in idx]
    prop.record(kept, [Outcome([1.0], {}) for _ in kept], [{"source": "synthetic"}] * 2)
    while prop.left() > 0:  # the retry is claimed next
        _finish(prop, prop.ask(prop.left()))
    done = prop.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(done) == 3 and len({trial_attrs(t)["key"] for t in done}) == 3
    assert any(trial_attrs(t).get("retry_of") == 0 for t in done)
    assert not prop.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_trials_n_runs_exactly_n(tmp_path, n):
    r = run(tmp_path, trials=n, sampler="nsga2")
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert r.trials == len(df) == df["digest"].nunique() == n
    # the seeded extremes are counted once they run: the largest arch comes first
    sp = SearchSpace.load("tiny_lm")
    assert df["arch"].iloc[0] == sp.largest().to_json()


def test_trials_of_the_whole_space_and_beyond(tmp_path):
    sp = micro_space()  # exactly 2 archs
    r = search(hw="zcu102", space=sp, quality=SyntheticQuality(sp), out=tmp_path / "s", trials=2,
               sampler="random", progress=False, plots=False)
    assert r.trials == 2 and pd.read_csv(tmp_path / "s" / "trials.csv")["digest"].nunique() == 2
    with pytest.raises(UserError, match="--trials 3 exceeds the 2 distinct designs"):
        search(hw="zcu102", space=sp, quality=SyntheticQuality(sp), out=tmp_path / "t", trials=3,
               progress=False, plots=False)
    with pytest.raises(UserError, match="--trials 0"):
        run(tmp_path, trials=0)


def test_resume_checks_the_sampler_and_a_damaged_search_json(tmp_path, capsys):
    run(tmp_path, trials=4, sampler="random")
    with pytest.raises(UserError, match="sampler='random'.*sampler='tpe'"):
        run(tmp_path, trials=6, sampler="tpe")
    saved = json.loads((tmp_path / "s" / "search.json").read_text())
    del saved["sampler"]  # a search.json written before the sampler was recorded still resumes
    (tmp_path / "s" / "search.json").write_text(json.dumps(saved))
    assert run(tmp_path, trials=6, sampler="random").trials == 6
    (tmp_path / "s" / "search.json").write_text("{ damaged")
    rc = main(["search", "--space", "tiny_lm", "--synthetic-quality", "--hw", "zcu102", "--trials", "4",
               "--sampler", "random", "--out", str(tmp_path / "s"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "search.json is damaged" in err[0]


def test_unknown_objective_and_impossible_trials_exit_2(tmp_path, capsys):
    base = ["search", "--space", "tiny_lm", "--synthetic-quality", "--hw", "zcu102", "--out", str(tmp_path / "s")]
    assert main(base + ["--objectives", "quality,speed"]) == 2
    assert main(base + ["--trials", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "unknown objective 'speed'" in err[0] and "--trials -1" in err[1]
    assert not (tmp_path / "s").exists()


def test_hypervolume_reference_is_fixed_by_space_and_hardware(tmp_path):
    a = run(tmp_path / "a", trials=12, seed=0)
    b = run(tmp_path / "b", trials=12, seed=1, sampler="nsga2")
    sa = json.loads((tmp_path / "a" / "s" / "summary.json").read_text())
    sb = json.loads((tmp_path / "b" / "s" / "summary.json").read_text())
    assert sa["hypervolume_reference"] == sb["hypervolume_reference"] == a.hypervolume_reference
    sp = SearchSpace.load("tiny_lm")
    largest = CostModel(sp, "zcu102", "decode")([Design(sp.largest())])
    assert a.hypervolume_reference == [math.log(sp.vocab_size), 1.1 * float(largest["latency_ms"][0]),
                                       1.1 * float(largest["size_mb"][0])]
    assert sa["hypervolume"] == a.hypervolume and sb["hypervolume"] == b.hypervolume > 0


class TwoMetrics:
    """Loss and a BLEU-like score that disagree in scale (a predicted loss stored as BLEU shows)."""

    name = "two-metrics"

    def __init__(self, space):
        self.q = SyntheticQuality(space)

    def __call__(self, archs):
        loss = self.q(archs)["loss"]
        return {"loss": loss, "bleu": 100.0 - 10.0 * loss}


@pytest.mark.slow
def test_predictor_with_bleu_predicts_bleu_from_measured_points_only(tmp_path):
    sp = SearchSpace.load("tiny_lm")
    r = search(hw="zcu102", space=sp, quality=TwoMetrics(sp), objectives="bleu,latency,size",
               out=tmp_path / "s", trials=100, sampler="random", batch=20, predictor=True,
               predictor_warmup=30, predictor_refit=20, progress=False, plots=False)
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    pred, meas = df[df["source"] == "predicted"], df[df["source"] == "measured"]
    assert len(pred) > 0 and len(meas) >= 30
    assert (pred["bleu"] == pred["predicted_bleu"]).all() and pred["loss"].isna().all()
    assert pred["bleu"].between(meas["bleu"].min() - 10, meas["bleu"].max() + 10).all()
    assert r.predictor["metric"] == "bleu" and r.predictor["kendall"] > 0.3
    assert np.allclose(meas["bleu"], 100.0 - 10.0 * meas["loss"])


def test_predictor_never_overrides_or_recounts_an_arch_already_measured(tmp_path):
    # 12 archs x accelerator knobs: most trials repeat a measured arch with other knobs
    sp = micro_space(ffn=(32, 64, 128), layers=(1, 2))
    r = search(hw="zcu102", space=sp, quality=TwoMetrics(sp), objectives="bleu,latency,size", cosearch_hw=True,
               out=tmp_path / "s", trials=60, sampler="random", batch=10, predictor=True, predictor_warmup=4,
               predictor_refit=4, progress=False, plots=False)
    df = pd.read_csv(tmp_path / "s" / "trials.csv").sort_values("number")
    measured_before: set = set()
    for digest, source in zip(df["digest"], df["source"]):
        assert not (digest in measured_before and source == "predicted")
        if source == "measured":
            measured_before.add(digest)
    assert r.predictor["n"] <= len(measured_before)  # held-out pairs: one per first measurement at most
    # exactly: one predictor point per measured arch, and one held-out pair per arch first
    # measured with a prediction, even where a batch held several designs of it (other knobs)
    first = df[df["source"] == "measured"].drop_duplicates("digest")
    assert r.predictor["measured"] == len(measured_before)
    assert r.predictor["n"] == first["predicted_bleu"].notna().sum() > 0


def test_a_resumed_predictor_has_one_point_per_measured_arch(tmp_path):
    sp = micro_space(ffn=(32, 64, 128), layers=(1, 2))
    kw = dict(hw="zcu102", space=sp, quality=TwoMetrics(sp), objectives="bleu,latency,size", cosearch_hw=True,
              out=tmp_path / "s", sampler="random", batch=10, predictor=True, predictor_warmup=4,
              predictor_refit=4, progress=False, plots=False)
    search(trials=30, **kw)
    r = search(trials=40, **kw)  # resumed: the first 30 trials' measured archs come back from the study
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert r.predictor["measured"] == df.loc[df["source"] == "measured", "digest"].nunique()


def test_the_screen_front_holds_every_measured_design(tmp_path, monkeypatch):
    # a design whose arch was measured before (other knobs) is no new predictor point, but it
    # is measured: it joins the front that decides which candidates are worth measuring
    from optuna.trial import TrialState

    from cosearch.search import screen as screen_mod
    from cosearch.search.front import pareto_mask, to_minimize
    screens = []
    init = screen_mod.Screen.__init__

    def keep(self, *a, **kw):
        init(self, *a, **kw)
        screens.append(self)
    monkeypatch.setattr(screen_mod.Screen, "__init__", keep)
    sp = micro_space(ffn=(32, 64, 128), layers=(1, 2))
    r = search(hw="zcu102", space=sp, quality=TwoMetrics(sp), objectives="bleu,latency,size", cosearch_hw=True,
               out=tmp_path / "s", trials=60, sampler="random", batch=10, predictor=True, predictor_warmup=4,
               predictor_refit=4, progress=False, plots=False)
    from cosearch.search.params import trial_attrs
    ts = [t for t in r.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
          if trial_attrs(t)["source"] == "measured" and all(v <= 0 for v in (t.constraints or {}).values())]
    pts = to_minimize(np.array([t.values for t in ts]), [d.name.lower() for d in r.study.directions])
    want = sorted(map(tuple, np.round(pts[pareto_mask(pts)], 9)))
    assert len(screens) == 1 and sorted(map(tuple, np.round(screens[0].front, 9))) == want


@pytest.mark.slow
def test_gpu_flag_path_measures_in_worker_processes_on_cpu(tmp_path):
    # gpu=True with the synthetic quality: the process pool (what --gpu uses), without a GPU
    r = run(tmp_path, trials=12, workers=2, gpu=True, batch=3)
    df = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert r.trials == 12 and r.measured == df["digest"].nunique() == 12
    q = SyntheticQuality(SearchSpace.load("tiny_lm"))
    from cosearch.space import Arch
    assert df["quality"].tolist() == pytest.approx([q.loss(Arch.from_json(a)) for a in df["arch"]])


def test_postgres_without_its_driver_names_the_extra(monkeypatch):
    import importlib.util

    from cosearch.search.storage import open_storage
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psycopg2" else real(name, *a))
    with pytest.raises(UserError, match=r"needs the psycopg2 driver: pip install 'cosearch\[postgres\]'"):
        open_storage("postgresql://u@localhost/db", None)


def test_search_leaves_optunas_log_level_alone(tmp_path):
    import optuna
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    try:
        run(tmp_path, trials=2)
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(before)
