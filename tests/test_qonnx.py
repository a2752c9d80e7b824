"""QONNX export (cosearch export --qonnx): every quantizer a Quant / BipolarQuant node at
the searched bit-widths; qonnx's own cleanup and executor reproduce the PyTorch model."""
from __future__ import annotations

import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cosearch.export import export, open_exported

sys.path.insert(0, str(Path(__file__).parent))
from test_export import random_supernet, tiny_space  # noqa: E402

pytest.importorskip("qonnx")
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.core.onnx_exec import execute_onnx  # noqa: E402
from qonnx.custom_op.registry import getCustomOp  # noqa: E402


def _export(tmp_path, family, layer_bits, act_bits=8, name="q"):
    space = tiny_space(family)
    net = random_supernet(space)
    arch = space.largest()  # two decoder layers
    layers = [replace(la, weight_bits=b, act_bits=act_bits) for la, b in zip(arch.decoder, layer_bits)]
    arch = replace(arch, decoder=tuple(layers))
    if family == "encoder_decoder":
        arch = replace(arch, encoder=tuple(replace(la, weight_bits=4, act_bits=8) for la in arch.encoder))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = export(tmp_path / name, supernet=net, arch=arch, qonnx=True)
    return arch, out


def _run(model: ModelWrapper, feed: dict) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return next(iter(execute_onnx(model, feed).values()))


@pytest.mark.parametrize("layer_bits", [(1.58, 4), (2, 1), (3, 8), (16, 4)])
def test_qonnx_graph_executes_like_the_torch_model(tmp_path, layer_bits):
    _, out = _export(tmp_path, "decoder_only", layer_bits)
    check = json.loads((out / "config.json").read_text())["qonnx_check"]
    assert check["ok"] and check["max_abs_diff"] < 1e-4 and check["argmax_agreement"] == 1.0, check
    # run the file ourselves with qonnx's executor, on inputs the export's check never saw
    model = ModelWrapper(str(out / "model_qonnx.onnx"))
    exp = open_exported(out)
    length = check["shape"][1]
    ids = torch.randint(4, exp.space.vocab_size, (1, length), generator=torch.Generator().manual_seed(11))
    got = _run(model, {model.graph.input[0].name: ids.numpy()})
    with torch.no_grad():
        ref = exp.model(ids).numpy()
    assert np.abs(got - ref).max() < 1e-4


def test_each_layer_gets_its_searched_bit_widths(tmp_path):
    """Weight quantizers carry each layer's weight bits (ternary: 2-bit narrow; binary:
    BipolarQuant), activation quantizers its activation bits; the table is 8 bits."""
    arch, out = _export(tmp_path, "decoder_only", (1.58, 3), act_bits=4)
    model = ModelWrapper(str(out / "model_qonnx.onnx"))
    seen = []
    for node in model.graph.node:
        if node.op_type != "Quant":
            continue
        assert node.domain == "qonnx.custom_op.general"
        op = getCustomOp(node)
        on_weight = model.get_initializer(node.input[0]) is not None
        bits = float(model.get_initializer(node.input[3]))
        seen.append((on_weight, bits, op.get_nodeattr("signed"), op.get_nodeattr("narrow")))
    n_layers = len(arch.decoder)
    weights = [s for s in seen if s[0]]
    # per layer q, k, v, out, fc1, fc2; the table twice (embedding and the tied head)
    want = [(True, 2.0, 1, 1)] * 6 + [(True, 3.0, 1, 0)] * 6 * (n_layers - 1) + [(True, 8.0, 1, 0)] * 2
    assert sorted(weights) == sorted(want)
    acts = [s for s in seen if not s[0]]
    assert acts and all(s[1:] == (4.0, 1, 0) for s in acts)
    assert len(acts) == 4 * n_layers  # q/k/v input, attention output, fc1 and fc2 inputs


def test_binary_weights_are_bipolar_quant(tmp_path):
    _, out = _export(tmp_path, "decoder_only", (1, 1), act_bits=16)
    model = ModelWrapper(str(out / "model_qonnx.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("BipolarQuant") == 6 * len(open_exported(out).arch.decoder)
    assert ops.count("Quant") == 2  # the 8-bit table, twice; no activation quantizers at 16 bits


@pytest.mark.slow  # qonnx's executor runs node by node: ~5 s for the encoder-decoder
def test_encoder_decoder_qonnx(tmp_path):
    _, out = _export(tmp_path, "encoder_decoder", (2, 4))
    check = json.loads((out / "config.json").read_text())["qonnx_check"]
    assert check["graph_inputs"] == {"global_in": "input_ids", "global_in_1": "decoder_input_ids"}
    assert check["ok"] and check["max_abs_diff"] < 1e-4, check


def test_cli_qonnx_and_missing_extra(tmp_path, capsys, monkeypatch):
    from cosearch.cli import main
    from test_export_cli import make_run
    run, net = make_run(tmp_path, "decoder_only")
    arch = net.space.with_bits(net.space.sample(1), weight_bits=4, act_bits=8).to_json()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["export", str(run), "--arch", arch, "--out", str(tmp_path / "q"), "--qonnx"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("QONNX: model_qonnx.onnx (") and "Quant" in line and "max logit diff" in line
    import cosearch.export.qonnx_graph as qg

    def missing():
        raise qg.UserError("--qonnx needs the qonnx package; pip install 'cosearch[fpga]'")
    monkeypatch.setattr(qg, "require_qonnx", missing)
    assert main(["export", str(run), "--arch", arch, "--out", str(tmp_path / "x"), "--qonnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cosearch[fpga]" in err and not (tmp_path / "x").exists()
