"""Weight and activation fake quantizers: grids, gradients, codes, dtypes."""
import math

import pytest
import torch

from cosearch.model.quant import (ActQuantizer, WeightQuantizer, bits_key, dequantize_codes,
                            fake_quant_weight, quantize_codes, weight_scale_stat)

LOW_BITS = (1, 1.58, 2, 3, 4, 8)
ALL_BITS = LOW_BITS + (16,)


def _w(rows=8, cols=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g)


def _scale(w, bits):
    return weight_scale_stat(w, bits)


@pytest.mark.parametrize("bits,max_levels", [(1, 2), (1.58, 3), (2, 4), (3, 8), (4, 16), (8, 256)])
def test_distinct_levels_per_channel(bits, max_levels):
    w = _w(rows=16, cols=512)
    q = fake_quant_weight(w, bits, _scale(w, bits))
    counts = [torch.unique(row).numel() for row in q]
    assert max(counts) <= max_levels
    if bits == 1:
        assert counts == [2] * 16
    if bits in (1.58, 2):  # 512 Gaussian samples hit every bin
        assert min(counts) == max_levels


@pytest.mark.parametrize("bits,grid", [
    (1, [-1.0, 1.0]),
    (1.58, [-2 / 3, 0.0, 2 / 3]),
    (2, [-0.75, -0.25, 0.25, 0.75]),
])
def test_exact_sub3bit_grids(bits, grid):
    w = _w(rows=4, cols=1024)
    s = torch.tensor([[0.5], [1.0], [2.0], [3.0]])
    q = fake_quant_weight(w, bits, s)
    for row, a in zip(q, s[:, 0]):
        expected = torch.tensor(grid) * a
        assert torch.equal(torch.unique(row), expected)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_lsq_grid_is_integers_times_scale(bits):
    w = _w(rows=4, cols=2048) * 3
    s = torch.full((4, 1), 0.37)
    codes = fake_quant_weight(w, bits, s) / s
    assert torch.allclose(codes, codes.round(), atol=1e-5)
    codes = codes.round()
    assert codes.min() >= -2 ** (bits - 1) and codes.max() <= 2 ** (bits - 1) - 1
    if bits < 8:  # 3x-scaled Gaussian saturates both ends
        assert codes.min() == -2 ** (bits - 1) and codes.max() == 2 ** (bits - 1) - 1


def test_sub3bit_thresholds():
    s = torch.ones(1, 1)
    w = torch.tensor([[-5.0, -0.6, -0.2, 0.2, 0.34, 0.6, 5.0]])
    t = torch.tensor(2 / 3)  # float32
    assert torch.equal(fake_quant_weight(w, 1.58, s), torch.stack([-t, -t, 0 * t, 0 * t, t, t, t])[None])
    assert fake_quant_weight(w, 2, s).tolist() == [[-0.75, -0.75, -0.25, 0.25, 0.25, 0.75, 0.75]]
    # w = +-a adds no level
    edge = torch.tensor([[-1.0, 1.0, 0.9, -0.9]])
    assert fake_quant_weight(edge, 2, s).tolist() == [[-0.75, 0.75, 0.75, -0.75]]
    assert torch.equal(fake_quant_weight(edge, 1.58, s), torch.stack([-t, t, t, -t])[None])


def test_sign_of_zero_gives_two_levels():
    w = torch.tensor([[0.0, 0.0, -1.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    q = fake_quant_weight(w, 1, torch.ones(2, 1))
    assert q.tolist() == [[1.0, 1.0, -1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    q2 = fake_quant_weight(w, 2, torch.ones(2, 1))
    assert set(q2[0].tolist()) <= {-0.75, -0.25, 0.25, 0.75} and 0.0 not in q2.tolist()[1]


@pytest.mark.parametrize("bits", ALL_BITS)
def test_idempotent_with_fixed_scale(bits):
    w = _w()
    s = _scale(w, bits) * 0.8  # some weights clip
    q = fake_quant_weight(w, bits, s)
    assert torch.equal(fake_quant_weight(q, bits, s), q)


@pytest.mark.parametrize("bits", LOW_BITS)
def test_weight_gradient_is_one_inside_zero_outside(bits):
    w = _w(rows=4, cols=256).requires_grad_()
    s = torch.full((4, 1), 0.5)
    fake_quant_weight(w, bits, s).sum().backward()
    u = w.detach() / s
    if bits <= 2:
        inside = u.abs() <= 1
    else:
        inside = (u >= -2 ** (bits - 1)) & (u <= 2 ** (bits - 1) - 1)
    assert (~inside).any() or bits == 8
    assert torch.equal(w.grad, inside.float())


def test_16_bits_is_fp16_rounding_with_identity_gradient():
    w = (_w() * 1e-3 + 1).requires_grad_()
    q = fake_quant_weight(w, 16, None)
    assert torch.equal(q, w.detach().half().float())
    assert not torch.equal(q, w.detach())  # float32 values really got rounded
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
    wq = WeightQuantizer(8, [4, 16])
    assert torch.equal(wq(w, 16), q) and "b16" not in wq.log_factor


def test_error_shrinks_from_3_to_4_to_8_bits():
    w = _w(rows=16, cols=512)
    err = [(fake_quant_weight(w, b, _scale(w, b)) - w).norm() / w.norm() for b in (3, 4, 8)]
    assert err[0] > err[1] > err[2] > 0


@pytest.mark.parametrize("bits", LOW_BITS)
def test_scale_gets_gradient_and_moves(bits):
    w = _w()
    wq = WeightQuantizer(8, [bits])
    p = wq.log_factor[bits_key(bits)]
    before = p.detach().clone()
    opt = torch.optim.SGD(wq.parameters(), lr=1.0)
    target = w * 0.5
    loss = (wq(w, bits) - target).pow(2).mean()
    loss.backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    opt.step()
    assert not torch.equal(p.detach(), before)


def test_scale_gradient_values_lsq_and_ternary_clipped():
    # q = level*s; dq/ds = level - u inside, level outside (ternary clipped: 2/3, not 1)
    s = torch.tensor([[1.0]], requires_grad=True)
    w = torch.tensor([[0.2, 0.5, 3.0, -3.0]])
    fake_quant_weight(w, 1.58, s).sum().backward()
    gs = 1 / math.sqrt(4 * 1)
    expected = ((0 - 0.2) + (2 / 3 - 0.5) + 2 / 3 - 2 / 3) * gs
    assert s.grad.item() == pytest.approx(expected, rel=1e-6)
    s4 = torch.tensor([[0.5]], requires_grad=True)
    w4 = torch.tensor([[0.3, 10.0, -10.0, 0.0]])
    fake_quant_weight(w4, 4, s4).sum().backward()  # u = 0.6, 20, -20, 0
    expected4 = ((1 - 0.6) + 7 - 8 + 0) / math.sqrt(4 * 7)
    assert s4.grad.item() == pytest.approx(expected4, rel=1e-6)


def test_pass_at_one_bit_leaves_other_scales_without_gradient():
    wq = WeightQuantizer(8, ALL_BITS)
    wq(_w().requires_grad_(), 4).sum().backward()
    grads = {k: p.grad for k, p in wq.log_factor.items()}
    assert grads.pop("b4") is not None
    assert set(grads) == {"b1", "b1_58", "b2", "b3", "b8"}
    assert all(g is None for g in grads.values())


def test_scale_init_matches_recommendation():
    w = _w(rows=5, cols=40)
    wq = WeightQuantizer(8, LOW_BITS)
    a = w.abs()
    expect = {1: a.mean(1, keepdim=True), 1.58: a.amax(1, keepdim=True), 2: a.amax(1, keepdim=True),
              3: a.amax(1, keepdim=True) / 3, 4: a.amax(1, keepdim=True) / 7,
              8: a.amax(1, keepdim=True) / 127}
    for b, e in expect.items():
        assert torch.allclose(wq.scale(w, b), e, rtol=1e-6)
    with pytest.raises(ValueError):
        wq.scale(_w(rows=9), 4)
    with pytest.raises(ValueError):
        WeightQuantizer(4, [4])(w[:4], 8)


@pytest.mark.parametrize("bits", LOW_BITS)
def test_slicing_commutes_with_quantizing(bits):
    w = _w(rows=12, cols=32)
    wq = WeightQuantizer(12, [bits])
    with torch.no_grad():
        wq.log_factor[bits_key(bits)].normal_(0, 0.3)
    s = wq.scale(w, bits)
    r = 5
    assert torch.equal(wq.scale(w[:r], bits), s[:r])  # per-row stat, sliced factor rows
    assert torch.equal(wq(w[:r], bits), wq(w, bits)[:r])
    assert torch.equal(fake_quant_weight(w[:r], bits, s[:r]), fake_quant_weight(w, bits, s)[:r])


@pytest.mark.parametrize("bits", ALL_BITS)
def test_codes_and_scales_reproduce_fake_quant_exactly(bits):
    w = _w(rows=16, cols=300, seed=3) * 0.05
    wq = WeightQuantizer(16, [bits])
    if bits != 16:
        with torch.no_grad():
            wq.log_factor[bits_key(bits)].normal_(0, 0.5)
    s = wq.scale(w, bits) if bits != 16 else None
    q = wq(w, bits).detach()
    codes = quantize_codes(q, bits, s)
    assert codes.dtype == (torch.int16 if bits == 16 else torch.int8)
    assert torch.equal(codes, quantize_codes(w, bits, s))  # float or fake-quantized: same codes
    back = dequantize_codes(codes, bits, s)
    assert back.dtype == torch.float32
    assert torch.equal(back.view(torch.int32), q.view(torch.int32))  # bit patterns, -0 included
    if bits != 16:
        lo = -1 if bits == 1.58 else -2 ** (math.ceil(bits) - 1)
        hi = 1 if bits == 1.58 else 2 ** (math.ceil(bits) - 1) - 1
        assert codes.min() >= lo and codes.max() <= hi


def test_unknown_bits_rejected():
    with pytest.raises(ValueError):
        fake_quant_weight(_w(), 5, torch.ones(8, 1))
    with pytest.raises(ValueError):
        fake_quant_weight(_w(), 4, None)


# ---------------------------------------------------------------- activations
@pytest.mark.parametrize("bits", [4, 8])
def test_act_per_token_independent(bits):
    aq = ActQuantizer([4, 8, 16])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, 32, generator=g)
    y = aq(x, bits)
    x2 = x.clone()
    x2[1, 3] *= 100  # one token changes a lot
    y2 = aq(x2, bits)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3] = False
    assert torch.equal(y[mask], y2[mask])
    assert not torch.equal(y[1, 3], y2[1, 3])


@pytest.mark.parametrize("bits,levels", [(4, 16), (8, 256)])
def test_act_levels_per_token(bits, levels):
    aq = ActQuantizer([bits])
    x = torch.randn(5, 4096, generator=torch.Generator().manual_seed(2))
    y = aq(x, bits)
    assert max(torch.unique(t).numel() for t in y) <= levels
    assert (y - x).norm() < 0.2 * x.norm()
    # min-max: the largest |x| of each token is represented exactly (no clipping at init)
    assert torch.allclose(y.abs().amax(-1), x.abs().amax(-1) * (2 ** (bits - 1) - 1) / (2 ** (bits - 1) - 1))


def test_act_16_is_identity_and_unknown_bits_rejected():
    aq = ActQuantizer([8, 16])
    x = torch.randn(3, 7)
    assert aq(x, 16) is x
    with pytest.raises(ValueError):
        aq(x, 4)
    with pytest.raises(ValueError):
        ActQuantizer([2])


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_bf16_in_bf16_out(bits):
    aq = ActQuantizer([4, 8, 16])
    x = torch.randn(2, 3, 16).to(torch.bfloat16).requires_grad_()
    y = aq(x, bits)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16
    ref = aq(x.detach().float(), bits).to(torch.bfloat16)  # float32 scales either way
    assert torch.equal(y.detach(), ref)
    w = torch.randn(4, 8).to(torch.bfloat16)
    assert WeightQuantizer(4, [4])(w, 4).dtype == torch.bfloat16


def test_act_clip_factor_learns_and_gradient_masks_clipped():
    aq = ActQuantizer([4, 8])
    assert set(aq.log_clip) == {"b4"}  # 8 bits is parameter-free min-max
    with torch.no_grad():
        aq.log_clip["b4"].fill_(math.log(0.5))  # clip at half the token max
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(3)).requires_grad_()
    y = aq(x, 4)
    y.pow(2).sum().backward()
    assert aq.log_clip["b4"].grad is not None and aq.log_clip["b4"].grad != 0
    step = 0.5 * x.detach().abs().amax(-1, keepdim=True) / 7
    u = x.detach() / step
    inside = (u >= -8) & (u <= 7)
    assert (~inside).any()
    assert torch.equal(x.grad == 0, ~inside | (y.detach() == 0))
