"""Low-bit ONNX exports: MatMulNBits forms, size, dynamic shapes, the KV cache, parity
reports that never abort, and file modes of export folders."""
from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cosearch.export import export, open_exported
from cosearch.export.onnx_graph import (block_size_for, build_graphs, nbits_weight, pack_low_first,
                                        table_numerators)
from cosearch.model.quant import fake_quant_weight

sys.path.insert(0, str(Path(__file__).parent))
from test_export import inputs, random_supernet, tiny_space  # noqa: E402

ALL_BITS = (1, 1.58, 2, 3, 4, 8)


# --------------------------------------------------------------------------- weight forms (no onnxruntime)
@pytest.mark.parametrize("bits", ALL_BITS)
def test_nbits_form_reproduces_the_weight_exactly(bits):
    torch.manual_seed(0)
    w = torch.randn(24, 40)
    s = torch.rand(24, 1) * 0.3 + 0.05
    q = fake_quant_weight(w, bits, s)
    f = nbits_weight(q, bits, s)
    assert f.codes.max() < 2 ** f.bits
    zp = 2 ** (f.bits - 1) if f.zero_point is None else f.zero_point
    back = (f.codes.astype(np.float32) - np.float32(zp)) * f.scale[:, None]
    assert np.array_equal(back, q.numpy()), bits
    num, scale = table_numerators(q, bits, s)
    assert np.array_equal(num.astype(np.float32) * scale[:, None], q.numpy()), bits


def test_low_first_packing_and_block_sizes():
    q = np.array([[1, 2, 3, 0] * 8], np.uint8)  # K = 32
    packed = pack_low_first(q, 2, 16)
    assert packed.shape == (1, 2, 4)
    assert packed[0, 0, 0] == 1 | 2 << 2 | 3 << 4 | 0 << 6
    four = pack_low_first(np.array([[1, 15] * 8], np.uint8), 4, 16)
    assert four.shape == (1, 1, 8) and four[0, 0, 0] == 1 | 15 << 4
    assert block_size_for(512, 4, False) == 512 and block_size_for(384, 4, False) == 128
    assert block_size_for(2048, 2, True) == 256  # the CPU kernel's 2-bit limit
    assert block_size_for(24, 4, False) == 32  # one padded block beats two scales


def test_graph_holds_low_bit_operators_not_float_weights():
    space = tiny_space("decoder_only", embed=(64,), ffn=(128,), vocab=64, embedding_bits=16)
    net = random_supernet(space)
    arch = space.with_bits(space.largest(), weight_bits=4, act_bits=8)
    (model,) = build_graphs(net.extract(arch)).values()
    ops = [n.op_type for n in model.graph.node]
    linears = 6 * len(arch.decoder)
    assert ops.count("MatMulNBits") == linears
    # no fp32 matrices but the position table (max_positions x width)
    assert all(i.data_type != 1 or np.prod(i.dims) <= 128 or i.name.startswith("sinusoid.")
               for i in model.graph.initializer)


# --------------------------------------------------------------------------- onnxruntime
try:
    import onnxruntime  # noqa: F401
    HAVE_ORT = True
except ImportError:
    HAVE_ORT = False
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="onnxruntime is not installed (pip install 'cosearch[onnx]')")


def _export(tmp_path, family, bits, act_bits, name="e", integer=False, **space_kw):
    space = tiny_space(family, **space_kw)
    net = random_supernet(space)
    arch = space.with_bits(space.sample(2), weight_bits=bits, act_bits=act_bits)
    if space.is_encdec:  # one layer reads the last encoder layer, another the last two
        layers = list(arch.decoder)
        layers[0] = replace(layers[0], cross_layers=1)
        layers[-1] = replace(layers[-1], cross_layers=2)
        arch = replace(arch, decoder=tuple(layers))
    return net, arch, export(tmp_path / name, supernet=net, arch=arch, onnx=True, onnx_integer=integer)


@needs_ort
@pytest.mark.parametrize("family", ["encoder_decoder", "decoder_only"])
@pytest.mark.parametrize("bits,act_bits", [(4, 8), (1.58, 4), (2, 16), (3, 8), (16, 8), (1, 16)])
def test_onnx_matches_torch_on_batches_and_the_kv_cache(tmp_path, family, bits, act_bits):
    net, arch, out = _export(tmp_path, family, bits, act_bits)
    cfg = json.loads((out / "config.json").read_text())
    check = cfg["onnx_check"]
    assert check["runtime"].startswith("onnxruntime") and check["ok"], check
    # 8-bit activations may flip one rounding (a quantization step on a few logits): the
    # greedy tokens must agree everywhere and nearly all logits to float precision
    assert check["argmax_agreement"] == 1.0 and check["p99_abs_diff"] < 1e-2
    assert check["kv_cache_max_abs_diff"] < 0.05 and check["batch"] == 3 and len(check["lengths"]) == 2
    expected = {"decoder": "decoder_model.onnx", "encoder": "encoder_model.onnx"} \
        if family == "encoder_decoder" else {"decoder": "model.onnx"}
    assert cfg["files"]["onnx"] == expected
    import onnx
    for f in expected.values():
        onnx.checker.check_model(str(out / f))


@needs_ort
@pytest.mark.parametrize("family", ["encoder_decoder", "decoder_only"])
def test_dynamic_batch_and_length_and_cached_decoding(tmp_path, family):
    net, arch, out = _export(tmp_path, family, 4, 8)
    exp = open_exported(out)
    onnx_model, model = exp.onnx_model(), exp.model
    for batch, length in ((1, 4), (3, 9), (2, 17)):
        x = inputs(exp.space, seed=batch, batch=batch)
        x = tuple(t[:, :length] if t.shape[1] >= length else t.repeat(1, 3)[:, :length] for t in x)
        with torch.no_grad():
            ref = model(*x)
        got = onnx_model(*x)
        assert got.shape == ref.shape == (batch, x[-1].shape[1], exp.space.vocab_size)
        assert torch.allclose(got, ref, atol=1e-4, rtol=0)
    # the KV cache: token by token equals the full sequence; the present grows by one a step
    x = inputs(exp.space, seed=5, batch=3)
    memory = onnx_model.encode(x[0]) if family == "encoder_decoder" else None
    with torch.no_grad():
        full = model(*x)
    cache = {}
    for t in range(x[-1].shape[1]):
        step = onnx_model.decode_step(x[-1][:, t:t + 1], memory, cache, t)
        assert torch.allclose(step, full[:, t], atol=1e-4, rtol=0), t
        key = next(iter(cache.values()))
        assert key.shape[0] == 3 and key.shape[2] == t + 1
    names = {i.name for i in onnx_model.decoder.get_inputs()}
    kind = ".decoder" if family == "encoder_decoder" else ""
    assert f"past_key_values.0{kind}.key" in names and f"past_key_values.0{kind}.value" in names
    assert f"present.0{kind}.key" in {o.name for o in onnx_model.decoder.get_outputs()}


@needs_ort
@pytest.mark.parametrize("integer", [False, True])
def test_onnx_stores_weights_at_their_real_bit_width(tmp_path, integer):
    """Every quantized weight takes as many bytes in model.onnx as in model.safetensors
    (ternary 1.6 bits, 3 bits 3, binary 1): the runtime form is built when the session starts."""
    import onnx
    from safetensors import safe_open
    space = tiny_space("decoder_only", embed=(192,), ffn=(384,), vocab=512, embedding_bits=16)
    net = random_supernet(space)
    for bits in ALL_BITS:
        arch = space.with_bits(space.largest(), weight_bits=bits, act_bits=8)
        out = export(tmp_path / f"e{bits}{integer}", supernet=net, arch=arch, onnx=True, onnx_integer=integer)
        with safe_open(str(out / "model.safetensors"), framework="np") as f:
            st = sum(f.get_tensor(k).nbytes for k in f.keys() if k.endswith(".codes"))
        model = onnx.load(str(out / "model.onnx"))
        codes = sum(len(i.raw_data) for i in model.graph.initializer
                    if i.name.endswith((".packed_codes", ".weight_codes", ".weight_int8_t")))
        assert codes == st, bits
        check = json.loads((out / "config.json").read_text())["onnx_check"]
        assert check["ok"] and check["argmax_agreement"] == 1.0, (bits, check)
        # the rest is the fp16 table, the position table, biases, norms and the graph
        table = 512 * 192 * 2 + space.spec.max_positions * 192 * 4
        assert check["bytes"] <= st + table + 60_000, bits


@needs_ort
def test_encoder_decoder_shares_one_table(tmp_path):
    _, arch, out = _export(tmp_path, "encoder_decoder", 4, 8, embedding_bits=16, vocab=2000)
    files = json.loads((out / "config.json").read_text())["onnx_check"]["files"]
    assert sorted(files) == ["decoder_model.onnx", "encoder_model.onnx", "model.onnx_data"]
    table = 2000 * max(arch.encoder_embed_dim, arch.decoder_embed_dim) * 2  # fp16
    data = (out / "model.onnx_data").stat().st_size
    assert table <= data < 2 * table  # stored once although both graphs read it


@needs_ort
def test_a_rounding_flip_is_reported_not_fatal(tmp_path, monkeypatch):
    import cosearch.export.onnx_runtime as rt
    monkeypatch.setattr(rt, "FLOAT_ATOL", 0.0)  # every float difference now counts as a flip
    monkeypatch.setattr(rt, "QUANT_NOISE_FACTOR", 0.0)
    _, _, out = _export(tmp_path, "decoder_only", 4, 8)
    check = json.loads((out / "config.json").read_text())["onnx_check"]
    assert check["positions_over_atol"] > 0 and check["positions_over_tolerance"] > 0
    assert check["ok"] is False


@needs_ort
def test_a_broken_cached_decoder_fails_the_check(tmp_path, monkeypatch):
    import cosearch.export.onnx_runtime as rt
    real = rt.OnnxTransformer.decode_step

    def shuffled(self, *a, **kw):  # what a wrong past/present wiring would give
        return real(self, *a, **kw).flip(-1)
    monkeypatch.setattr(rt.OnnxTransformer, "decode_step", shuffled)
    _, _, out = _export(tmp_path, "decoder_only", 4, 8)
    check = json.loads((out / "config.json").read_text())["onnx_check"]
    assert check["argmax_agreement"] == 1.0 and check["kv_cache_argmax_agreement"] < 1.0
    assert check["ok"] is False


def test_export_files_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        _, _, out = _export(tmp_path, "encoder_decoder", 4, 8)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    files = list(out.iterdir())
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files), \
        {p.name: oct(p.stat().st_mode) for p in files}
    old = os.umask(0o027)
    try:
        _, _, out2 = _export(tmp_path, "decoder_only", 4, 8, name="e2")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out2.stat().st_mode) == 0o750
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o640 for p in out2.iterdir())


def test_onnx_engine_needs_onnx_graphs(tmp_path):
    from cosearch.errors import UserError
    space = tiny_space("decoder_only")
    net = random_supernet(space)
    out = export(tmp_path / "plain", supernet=net, arch=space.sample(0))
    with pytest.raises(UserError, match="--onnx"):
        open_exported(out).onnx_model()


@needs_ort
def test_parity_leaves_the_model_as_it_was(tmp_path):
    from cosearch.export import write_export
    space = tiny_space("decoder_only")
    net = random_supernet(space)
    arch = space.with_bits(space.sample(1), weight_bits=4, act_bits=4)
    model = net.extract(arch).eval()
    x = inputs(space)
    with torch.no_grad():
        before = model(*x)
    write_export(tmp_path / "w", model, space, arch, onnx=True)  # parity switches activations off and back
    with torch.no_grad():
        assert torch.equal(model(*x), before)


# --------------------------------------------------------------------------- padding, positions, integer mode
def _left_padded(seqs, pad=0):
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad, np.int64)
    mask = np.zeros((len(seqs), width), np.int64)
    for b, s in enumerate(seqs):
        ids[b, width - len(s):], mask[b, width - len(s):] = s, 1
    return ids, mask


@needs_ort
def test_decoder_only_graph_serves_a_padded_batch_as_optimum_names_it(tmp_path):
    """What a server does with the raw graph: left-padded prompts of different lengths with
    attention_mask and position_ids, then one cached step; each row equals the prompt alone."""
    from cosearch.export.onnx_runtime import session
    _, _, out = _export(tmp_path, "decoder_only", 4, 8)
    exp = open_exported(out)
    sess = session(out / "model.onnx")
    names = [i.name for i in sess.get_inputs()]
    layers = len(exp.arch.decoder)
    assert names == ["input_ids", "attention_mask", "position_ids"] + [
        f"past_key_values.{i}.{t}" for i in range(layers) for t in ("key", "value")]
    assert [o.name for o in sess.get_outputs()] == ["logits"] + [
        f"present.{i}.{t}" for i in range(layers) for t in ("key", "value")]
    assert all(isinstance(d, str) for i in sess.get_inputs() for d in i.shape[:1])  # dynamic batch
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(4, 50, (n,), generator=g).tolist() for n in (7, 2, 5)]
    ids, mask = _left_padded(seqs)
    pos = np.maximum(mask.cumsum(1) - 1, 0)
    empty = {i.name: np.zeros((3, i.shape[1], 0, i.shape[3]), np.float32) for i in sess.get_inputs()[3:]}
    logits, *present = sess.run(None, {"input_ids": ids, "attention_mask": mask, "position_ids": pos, **empty})
    nxt = np.array([[5], [6], [7]])
    feed = {"input_ids": nxt, "attention_mask": np.concatenate([mask, np.ones((3, 1), np.int64)], 1),
            "position_ids": mask.sum(1, keepdims=True), **dict(zip(empty, present))}
    step, *_ = sess.run(None, feed)
    with torch.no_grad():
        for b, s in enumerate(seqs):
            alone = exp.model(torch.tensor([s + [int(nxt[b, 0])]]))[0].numpy()
            assert np.allclose(logits[b, -len(s):], alone[:-1], atol=1e-4), b
            assert np.allclose(step[b, 0], alone[-1], atol=1e-4), b


@needs_ort
def test_positions_past_max_positions_are_refused(tmp_path):
    from cosearch.errors import UserError
    from cosearch.export.onnx_runtime import session
    _, _, out = _export(tmp_path, "decoder_only", 4, 8)
    exp = open_exported(out)
    limit = exp.space.spec.max_positions
    onnx_model = exp.onnx_model()
    onnx_model(torch.full((1, limit), 5))
    with pytest.raises(UserError, match=f"max_positions {limit}"):
        onnx_model(torch.full((1, limit + 1), 5))
    sess = session(out / "model.onnx")  # the raw graph: the position table's Gather refuses
    empty = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in sess.get_inputs()[3:]}
    with pytest.raises(Exception, match="out of bounds|indices"):
        sess.run(None, {"input_ids": np.full((1, 1), 5), "attention_mask": np.ones((1, 1), np.int64),
                        "position_ids": np.full((1, 1), limit), **empty})


@needs_ort
@pytest.mark.parametrize("family", ["encoder_decoder", "decoder_only"])
@pytest.mark.parametrize("bits,act_bits", [(4, 8), (1.58, 8), (2, 4), (8, 8), (1, 8), (16, 8)])
def test_integer_mode_runs_integer_kernels_and_matches_torch(tmp_path, family, bits, act_bits):
    import onnx
    net, arch, out = _export(tmp_path, family, bits, act_bits, integer=True)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["onnx_mode"] == "integer"
    check = cfg["onnx_check"]
    assert check["ok"] and check["argmax_agreement"] == 1.0, check
    if bits != 16:  # 16-bit weights stay float matmuls: a rounding flip may move a logit by 1e-2
        # exact int32 sums, one float multiply: differs from the fake-quantized float product
        # by float rounding only (measured <= 1.5e-6 on these models)
        assert check["max_abs_diff"] < 1e-4 and check["kv_cache_max_abs_diff"] < 1e-4, check
    ops = []
    for f in cfg["files"]["onnx"].values():
        ops += [n.op_type for n in onnx.load(str(out / f)).graph.node]
    sides = [arch.decoder] + ([arch.encoder] if family == "encoder_decoder" else [])
    per_layer = 10 if family == "encoder_decoder" else 6  # decoder layers add cross q, k, v, out
    want = 0 if bits == 16 else sum(per_layer if side is arch.decoder else 6 for side in sides for _ in side)
    assert ops.count("MatMulInteger") == want and ops.count("MatMulNBits") == 0


@needs_ort
def test_damaged_onnx_file_is_a_user_error(tmp_path):
    from cosearch.errors import UserError
    _, _, out = _export(tmp_path, "decoder_only", 4, 8)
    data = (out / "model.onnx").read_bytes()
    (out / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="model.onnx.*damaged or truncated"):
        open_exported(out).onnx_model()


@needs_ort
def test_onnx_export_shows_a_progress_bar(tmp_path, capsys):
    space = tiny_space("decoder_only")
    net = random_supernet(space)
    export(tmp_path / "e", supernet=net, arch=space.sample(1), onnx=True, progress=True)
    assert "onnx export" in capsys.readouterr().err
    export(tmp_path / "f", supernet=net, arch=space.sample(1), onnx=True)
    assert "onnx export" not in capsys.readouterr().err
