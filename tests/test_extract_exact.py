"""Extraction and evaluation with fewer host ops give the very same numbers.

``Supernet.extract`` builds the sub-network without placeholder tensors and computes each
scale once; evaluation (no gradients) quantizes activations in place, skips no-op dropout
and slicing and shares the decoder's memory concatenation. Each is checked bit for bit
against what the code did before: a copy of the previous extraction (``reference_extract``
below) and the forward pass with gradients on (the training path, untouched).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cosearch.model.modules import ElasticLayerNorm, PlainEmbedding, QLinear
from cosearch.model.supernet import Supernet, build_standalone
from cosearch.space import SearchSpace
from test_supernet import CASES, inputs, small_space


@torch.no_grad()
def reference_extract(net: Supernet, arch):
    """The extraction before it was made cheaper: zero-initialised model, every tensor copied in."""
    net.set_arch(arch)
    sub = build_standalone(net.space, arch, pad_id=net.pad_id)
    sup_mods = dict(net.model.named_modules())
    for name, mod in sub.named_modules():
        src = sup_mods[name]
        if isinstance(mod, QLinear):
            w = src.mixed_weight()
            mod.weight.copy_(src.wq(w, src.weight_bits))
            if mod.weight_scale is not None:
                mod.weight_scale.copy_(src.wq.scale(w, src.weight_bits))
            if mod.bias is not None:
                mod.bias.copy_(src.bias[: mod.out_features])
            own = src.aq.state_dict()
            mod.aq.load_state_dict({k: v for k, v in own.items() if k in mod.aq.state_dict()}, strict=False)
        elif isinstance(mod, ElasticLayerNorm):
            mod.weight.copy_(src.weight[: mod.dim])
            mod.bias.copy_(src.bias[: mod.dim])
        elif isinstance(mod, PlainEmbedding):
            full = src.weight[:, : mod.dim]
            mod.weight.copy_(src.wq(full, src.bits))
            if mod.weight_scale is not None:
                mod.weight_scale.copy_(src.wq.scale(full, src.bits))
    return sub


def trained_like(net: Supernet, seed: int = 0) -> Supernet:
    """Random learned scales, clips, norms and biases (a fresh supernet has them all at init,
    where a wrong one could still agree)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "log_factor" in name or "log_clip" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias") or ".ln" in name or "norm" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return net.eval()


def assert_same_model(got: nn.Module, ref: nn.Module, net: Supernet) -> None:
    g, r = got.state_dict(), ref.state_dict()
    assert list(g) == list(r)  # the same tensors, in the same order (export writes them so)
    for k in r:
        assert g[k].dtype == r[k].dtype and g[k].device == r[k].device, k
        assert torch.equal(g[k], r[k]), (k, (g[k] - r[k]).abs().max())
    assert [n for n, _ in got.named_parameters()] == [n for n, _ in ref.named_parameters()]
    # copies, never views of the supernet's weights: the sub-network may train on its own
    mine = {p.untyped_storage().data_ptr() for p in net.parameters()}
    assert not any(t.untyped_storage().data_ptr() in mine for t in g.values())
    assert all(p.requires_grad for p in got.parameters())


def logits_both_ways(model: nn.Module, x) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits without gradients: evaluation's path, logits with gradients: training's ops)."""
    with torch.no_grad():
        fast = model(*x)
    with torch.enable_grad():
        slow = model(*x).detach()
    return fast, slow


@pytest.mark.parametrize("family,mode,attn,sub", CASES)
def test_extraction_matches_the_previous_extraction_bit_for_bit(family, mode, attn, sub):
    torch.manual_seed(0)
    space = small_space(family, mode, attn=attn, sublayers=sub)
    net = trained_like(Supernet(space))
    gen = torch.Generator().manual_seed(1)
    for seed in range(12):  # random archs: every weight and activation bit-width of the space
        arch = space.sample(seed)
        got, ref = net.extract(arch).eval(), reference_extract(net, arch).eval()
        assert_same_model(got, ref, net)
        x = inputs(space, gen)
        fast, slow = logits_both_ways(got, x)
        assert torch.equal(fast, slow), (seed, (fast - slow).abs().max())
        with torch.no_grad():
            assert torch.equal(fast, ref(*x))


def test_decoding_with_the_shared_memory_concatenation_is_unchanged():
    torch.manual_seed(0)
    space = small_space("encoder_decoder", "layer")
    net = trained_like(Supernet(space))
    src, _ = inputs(space, torch.Generator().manual_seed(2))
    from cosearch.training.evaluate import beam_search, greedy_decode
    for seed in range(6):
        model = net.extract(space.sample(seed)).eval()
        fast = greedy_decode(model, src, 1, 2, 8, space.vocab_size)
        with torch.enable_grad():  # each layer and step concatenates its own memory again
            slow = greedy_decode.__wrapped__(model, src, 1, 2, 8, space.vocab_size)
        assert fast == slow
        # beams reorder the memory: a concatenation of the old order must not be reused
        fast = beam_search(model, src, 3, 1, 2, 8, space.vocab_size)
        with torch.enable_grad():
            slow = beam_search.__wrapped__(model, src, 3, 1, 2, 8, space.vocab_size)
        assert fast == slow


def test_multi30k_archs_extract_and_evaluate_bit_for_bit():
    torch.manual_seed(0)
    space = SearchSpace.load("multi30k")
    net = trained_like(Supernet(space, pad_id=0))
    gen = torch.Generator().manual_seed(3)
    src = torch.randint(4, space.vocab_size, (2, 9), generator=gen)
    src[1, -4:] = 0
    x = (src, torch.randint(4, space.vocab_size, (2, 7), generator=gen))
    for arch in [space.largest(), space.smallest()] + [space.sample(s) for s in range(4)]:
        got, ref = net.extract(arch).eval(), reference_extract(net, arch).eval()
        assert_same_model(got, ref, net)
        fast, slow = logits_both_ways(got, x)
        assert torch.equal(fast, slow)


def test_tf32_only_while_measuring_on_cuda_and_restored_after():
    from cosearch.search.quality import MeasureSettings, SupernetQuality
    assert MeasureSettings(device="cuda").matmul == "tf32" and MeasureSettings(device="cuda:1").matmul == "tf32"
    assert MeasureSettings(device="cpu").matmul == "fp32"
    assert MeasureSettings(device="cuda", tf32=False).matmul == "fp32"
    cuda = torch.backends.cuda.matmul
    flag = "fp32_precision" if hasattr(cuda, "fp32_precision") else "allow_tf32"
    tf32 = "tf32" if flag == "fp32_precision" else True
    before = getattr(cuda, flag)
    cpu_before = torch.backends.mkldnn.matmul.fp32_precision if hasattr(torch.backends.mkldnn, "matmul") else None
    assert before != tf32
    seen = []

    def fake(arch, repeat):  # what the measurement runs under (no GPU needed to check the scope)
        seen.append(getattr(cuda, flag))
        if arch == "boom":
            raise RuntimeError("failed measurement")
        return {"loss": 1.0}

    for device, inside in (("cuda", tf32), ("cpu", before)):
        q = SupernetQuality.__new__(SupernetQuality)
        q.settings, q.torch, q._measure = MeasureSettings(device=device), torch, fake
        assert q.measure("arch") == {"loss": 1.0}
        assert seen[-1] == inside and getattr(cuda, flag) == before
        if cpu_before is not None:  # CPU matmuls keep their precision
            assert torch.backends.mkldnn.matmul.fp32_precision == cpu_before
        with pytest.raises(RuntimeError):
            q.measure("boom")
        assert seen[-1] == inside and getattr(cuda, flag) == before
