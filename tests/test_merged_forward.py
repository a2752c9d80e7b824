"""Validation batches merged into fewer, larger forward passes (how a GPU measures quality)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cosearch.data.batches import merge_batches
from cosearch.search.quality import MeasureSettings, SupernetQuality
from cosearch.training.train import train

from train_fixtures import mt_space, write_word_translation

pytestmark = pytest.mark.xdist_group("merged_forward")

T = torch.tensor


def test_neighbouring_batches_merge_up_to_the_token_limit_with_their_padding():
    b0 = {"src": T([[5, 6, 0], [7, 0, 0]]), "attention_mask": T([[1, 1, 0], [1, 0, 0]]), "ntokens": 3, "index": T([4, 1])}
    b1 = {"src": T([[8, 8, 8, 8]]), "attention_mask": T([[1, 1, 1, 1]]), "ntokens": 4, "index": T([0])}
    b2 = {"src": T([[1] * 5] * 3), "attention_mask": T([[1] * 5] * 3), "ntokens": 15, "index": T([2, 3, 5])}
    g = merge_batches([b0, b1, b2], max_tokens=12, pad_id=9)  # 3 rows x 4 = 12 fit; 6 x 5 = 30 do not
    assert len(g) == 2
    assert g[0].batch["src"].tolist() == [[5, 6, 0, 9], [7, 0, 0, 9], [8, 8, 8, 8]]  # widened with pad_id
    assert g[0].batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]  # masked: 0
    assert g[0].owner.tolist() == [0, 0, 1] and g[1].owner.tolist() == [2, 2, 2]
    assert g[0].batch["ntokens"] == 7 and g[0].batch["index"].tolist() == [4, 1, 0]
    assert g[1].batch["src"].tolist() == [[1] * 5] * 3
    # the widest row of the group counts, wherever it is: 4 rows x 5 > 16
    assert [m.owner.tolist() for m in merge_batches([b2, b1], max_tokens=16)] == [[0, 0, 0], [1]]
    # a merge pays when the padding it adds (here 4 positions: b0's 2 rows x 2 keys widened
    # by 1) costs less than the forward it saves
    assert [m.owner.tolist() for m in merge_batches([b0, b1], 12, forward_cost=3)] == [[0, 0], [1]]
    assert [m.owner.tolist() for m in merge_batches([b0, b1], 12, forward_cost=5)] == [[0, 0, 1]]
    # a limit below every pair keeps each batch alone, as it was
    assert [m.owner.tolist() for m in merge_batches([b0, b1, b2], max_tokens=4)] == [[0, 0], [1], [2, 2, 2]]


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mt")
    data = write_word_translation(root / "data", n_train=300, n_eval=120)
    train(mt_space(), "translation", data, root / "run", steps=6, max_tokens=256, lr=3e-3, ckpt_every=6,
          log_every=3, progress=False)
    return root / "run"


def test_merged_forwards_give_the_batches_losses_and_standard_error(mt_run, monkeypatch):
    from cosearch.training import evaluate as ev
    calls, real = [], ev.merged_batch_losses
    monkeypatch.setattr(ev, "merged_batch_losses", lambda *a, **k: calls.append(1) or real(*a, **k))
    alone = SupernetQuality(mt_run, MeasureSettings(max_batches=5, max_tokens=48))
    merged = SupernetQuality(mt_run, MeasureSettings(max_batches=5, max_tokens=48, forward_tokens=4096))
    assert [len(s) for s in alone.batch_sets] == [5] and [len(s) for s in alone.merged_sets] == [5]
    assert [len(s) for s in merged.merged_sets] == [1]  # five batches of different widths, one forward
    assert len({b["src"].shape[1] for b in alone.batch_sets[0]}) > 1  # so the merge pads some rows
    # the forward cost decides the merge: free forwards never pay for padding, so none merge
    free = SupernetQuality(mt_run, MeasureSettings(max_batches=5, max_tokens=48, forward_tokens=4096,
                                                   forward_cost=0))
    assert [len(s) for s in free.merged_sets] == [5]
    space = alone.run.space
    rng = np.random.default_rng(3)
    for arch in (space.largest(), space.smallest(), space.sample(rng), space.sample(rng)):
        a, m = alone.measure(arch), merged.measure(arch)
        assert m["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert m["loss_se"] == pytest.approx(a["loss_se"], rel=1e-4)  # per batch, not per forward
    assert len(calls) == 4  # the merged measurements went through the merged forwards, the others not


def test_the_environment_sets_the_merge_of_a_search_and_its_workers_get_the_values(monkeypatch, tmp_path):
    from cosearch.errors import UserError
    from cosearch.search.quality import SupernetSpec, forward_settings_from_env
    from cosearch.search.config import SearchConfig
    from cosearch.search.study import _quality_factory
    from cosearch.space import SearchSpace
    monkeypatch.delenv("COSEARCH_FORWARD_TOKENS", raising=False)
    monkeypatch.delenv("COSEARCH_FORWARD_COST", raising=False)
    assert forward_settings_from_env() == {"forward_tokens": None, "forward_cost": None}
    monkeypatch.setenv("COSEARCH_FORWARD_TOKENS", "65536")
    monkeypatch.setenv("COSEARCH_FORWARD_COST", " 16384 ")
    assert forward_settings_from_env() == {"forward_tokens": 65536, "forward_cost": 16384}
    # the search's factory carries them in its settings: a worker never reads the environment
    spec, _ = _quality_factory(SearchConfig(run_dir=tmp_path, gpu=True), SearchSpace.load("tiny_lm"), bleu=False)
    assert isinstance(spec, SupernetSpec)
    monkeypatch.delenv("COSEARCH_FORWARD_TOKENS")
    monkeypatch.delenv("COSEARCH_FORWARD_COST")
    s = spec.for_worker(1).settings
    assert (s.forward_tokens, s.forward_cost, s.tokens_per_forward, s.cost_per_forward) == (65536, 16384, 65536, 16384)
    for name in ("COSEARCH_FORWARD_TOKENS", "COSEARCH_FORWARD_COST"):
        for bad in ("0", "-5", "lots", "1.5"):
            monkeypatch.setenv(name, bad)
            with pytest.raises(UserError, match=rf"\${name}='{bad}'"):
                forward_settings_from_env()
            with pytest.raises(UserError, match=rf"\${name}="):
                _quality_factory(SearchConfig(run_dir=tmp_path), SearchSpace.load("tiny_lm"), bleu=False)
        monkeypatch.delenv(name)
