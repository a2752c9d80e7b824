"""Padding masks and position ids in the torch model: a batch of sequences of different
lengths, padded on either side, gives every token the logits it gets alone."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cosearch.errors import UserError
from cosearch.training.train import model_inputs

sys.path.insert(0, str(Path(__file__).parent))
from test_export import random_supernet, tiny_space  # noqa: E402

LENGTHS = (9, 4, 7, 1)


def _seqs(seed=0, vocab=50):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, vocab, (n,), generator=g) for n in LENGTHS]


def _pad(seqs, side):
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for b, s in enumerate(seqs):
        sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[b, sl], mask[b, sl] = s, 1
    return ids, mask


def _models(act_bits):
    space = tiny_space("decoder_only")
    net = random_supernet(space)
    arch = space.with_bits(space.sample(3), weight_bits=4, act_bits=act_bits)
    return net, arch, net.extract(arch).eval()


@pytest.mark.parametrize("act_bits", [16, 8, 4])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_logits_equal_unpadded(side, act_bits):
    net, arch, model = _models(act_bits)
    seqs = _seqs()
    ids, mask = _pad(seqs, side)
    with torch.no_grad():
        for run in (model, lambda *x: net(*x, arch=arch)):  # the standalone and the supernet
            out = run(ids, mask)
            for b, s in enumerate(seqs):
                alone = run(s[None])[0]
                assert torch.allclose(out[b][mask[b].bool()], alone, atol=1e-5, rtol=0), (side, b)


def test_padding_changes_logits_without_the_mask():
    """The comparison above can fail: without the mask, padding leaks into the tokens."""
    _, _, model = _models(16)
    seqs = _seqs()
    ids, mask = _pad(seqs, "left")
    with torch.no_grad():
        leaked = model(ids)[1][mask[1].bool()]
        alone = model(seqs[1][None])[0]
    assert (leaked - alone).abs().max() > 1e-2


def test_cached_decoding_of_a_padded_batch_equals_each_sequence_alone():
    _, _, model = _models(8)
    seqs = _seqs(1)
    ids, mask = _pad(seqs, "left")
    steps = torch.randint(4, 50, (len(seqs), 3), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cache = {}
        first = model.decode_step(ids, None, cache, 0, attention_mask=mask)
        got = [first]
        pos = mask.sum(1, keepdim=True)
        for t in range(steps.shape[1]):
            mask = torch.cat([mask, torch.ones(len(seqs), 1, dtype=torch.long)], 1)
            got.append(model.decode_step(steps[:, t:t + 1], None, cache, mask.shape[1] - 1,
                                         attention_mask=mask, position_ids=pos + t))
        for b, s in enumerate(seqs):
            full = model(torch.cat([s, steps[b]])[None])[0]
            want = full[len(s) - 1:]
            assert torch.allclose(torch.stack([g[b] for g in got]), want, atol=1e-5, rtol=0), b


def test_encoder_decoder_source_padding_is_masked():
    space = tiny_space("encoder_decoder")
    net = random_supernet(space)
    model = net.extract(space.with_bits(space.sample(2), weight_bits=4, act_bits=8)).eval()
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 50, (1, 5), generator=g)
    tgt = torch.randint(4, 50, (1, 6), generator=g)
    padded = torch.cat([src, torch.zeros(1, 4, dtype=torch.long)], 1)
    with torch.no_grad():
        assert torch.allclose(model(padded, tgt), model(src, tgt), atol=1e-5, rtol=0)


def test_no_mask_keeps_the_fast_causal_path(monkeypatch):
    """Training batches without padding must not pay for a mask: SDPA's is_causal path."""
    _, _, model = _models(8)
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kw):
        calls.append((attn_mask is None, is_causal))
        return real(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kw)
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    ids, mask = _pad(_seqs(), "left")
    with torch.no_grad():
        model(ids)
        assert calls and all(c == (True, True) for c in calls)
        calls.clear()
        model(ids, mask)
        assert calls and all(c == (False, False) for c in calls)


def test_lm_batches_with_a_mask_reach_the_model():
    _, _, model = _models(8)
    seqs = _seqs()
    ids, mask = _pad(seqs, "right")
    inputs, target = model_inputs({"input": ids, "target": ids, "attention_mask": mask})
    with torch.no_grad():
        assert torch.equal(model(*inputs), model(ids, attention_mask=mask))
    assert model_inputs({"input": ids, "target": ids})[0] == (ids,)


def test_positions_past_max_positions_are_one_line_errors(tmp_path):
    """A deployed (loaded) model refuses them; evaluation's extracted models do not."""
    from cosearch.export import export, load_exported
    net, arch, extracted = _models(8)
    model = load_exported(export(tmp_path / "e", supernet=net, arch=arch))
    limit = model.max_positions
    with torch.no_grad():
        extracted(torch.full((1, limit + 1), 5))  # scored as before (test sets are not cut)
    with torch.no_grad():
        model(torch.full((1, limit), 5))  # exactly the limit is fine
        with pytest.raises(UserError, match=f"max_positions {limit}"):
            model(torch.full((1, limit + 1), 5))
        with pytest.raises(UserError, match="max_positions"):
            model.decode_step(torch.full((1, 1), 5), None, {}, 0, position_ids=torch.tensor([[limit]]))
