"""A QONNX graph of an exported sub-network, for FPGA flows (FINN, hls4ml).

QONNX (https://github.com/fastmachinelearning/qonnx) writes quantization as explicit
nodes of the domain ``qonnx.custom_op.general``: ``Quant(x, scale, zero_point,
bit_width)`` = (clip(round(x / scale + zero_point)) - zero_point) * scale and
``BipolarQuant(x, scale)`` = sign(x) * scale. Every quantizer of the model becomes one:

* weights (stored as float32 values on their grid, as Brevitas exports them), per output
  channel: 3/4/8 bits ``Quant`` (signed, zero point 0, scale s); 2 bits ``Quant``
  (unsigned, 2 bits, zero point 1.5, scale s/2: levels s * {+-1/4, +-3/4}); ternary
  ``Quant`` (signed, narrow, 2 bits, scale 2s/3: levels {0, +-2s/3}); binary
  ``BipolarQuant`` (scale s); 16-bit weights stay float (fp16 values);
* the token table at 8 bits: ``Quant`` per row;
* activations: ``Quant`` (signed, zero point 0) at the layer's bits with the per-token
  scale max|x| / Qp (times the learned clipping factor below 8 bits) computed in the graph.

``Trunc`` is not needed: the models have no average pooling or accumulator truncation.
The graph is the whole forward pass without a KV cache at a static shape (batch 1,
``length`` tokens; QONNX's executor and FINN need static shapes): decoder-only
``input_ids`` -> ``logits``; encoder-decoder ``input_ids`` + ``decoder_input_ids`` ->
``logits``. ``write_qonnx`` runs qonnx's own ``cleanup`` on it, saves the cleaned graph
(tensors renamed ``global_in``, ``global_in_1``, ``global_out`` by that cleanup) and
executes it with qonnx's executor against the PyTorch model.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..model.modules import QLinear, Transformer
from ..model.quant import TERNARY
from ..space import canonical_bits
from .onnx_graph import _MASKED, Graph, QAct, _Builder, _float_input, _int_input

QONNX_FILE = "model_qonnx.onnx"
QONNX_DOMAIN = "qonnx.custom_op.general"
#: random inputs the check executes
CHECK_INPUTS = 2
#: the executor's logits may differ from torch's by float summation order (measured
#: <= 2e-6 on the test models); a larger difference is a wrong quantizer
CHECK_ATOL = 1e-4


def require_qonnx():
    """The ``qonnx`` package (``UserError`` naming the extra when missing)."""
    try:
        import qonnx
    except ImportError:
        raise UserError("--qonnx needs the qonnx package; pip install 'cosearch[fpga]'") from None
    return qonnx


class QonnxBuilder(_Builder):
    """``_Builder`` with every quantizer as a QONNX node and float matmuls."""

    def __init__(self, model: Transformer, tick=None):
        super().__init__(model, integer=False, tick=tick)
        self.quantizers: Counter = Counter()

    def quant(self, g: Graph, x: str, scale: str, zero_point: float, bits: int, signed: bool, narrow: bool) -> str:
        self.quantizers["Quant"] += 1
        return g.op("Quant", [x, scale, g.scalar(float(zero_point)), g.scalar(float(bits))], domain=QONNX_DOMAIN,
                    signed=int(signed), narrow=int(narrow), rounding_mode="ROUND")

    def quantize(self, g: Graph, x: str, mod: QLinear, name: str) -> QAct | str:
        bits = int(mod.act_bits)
        if bits == 16:
            return x
        out = self.quant(g, x, self.act_step(g, x, mod, name), 0.0, bits, signed=True, narrow=False)
        return QAct(codes="", step="", value=out)  # the quantized value itself; no integer codes

    def weight(self, g: Graph, name: str, w: np.ndarray, bits: float, scale: np.ndarray) -> str:
        """``w`` (float32, on its grid) through its quantizer; ``scale`` broadcasts to it."""
        b = canonical_bits(bits)
        w = g.const(f"{name}", w.astype(np.float32))
        if b == 16:
            return w
        if b == 1:
            self.quantizers["BipolarQuant"] += 1
            return g.op("BipolarQuant", [w, g.const(f"{name}_scale", scale)], domain=QONNX_DOMAIN)
        if b == 2:
            return self.quant(g, w, g.const(f"{name}_scale", scale * np.float32(0.5)), 1.5, 2, False, False)
        if b == TERNARY:
            s = (torch.ones(1) * (2.0 / 3.0) * torch.from_numpy(scale)).numpy()  # quant.py's float32 product
            return self.quant(g, w, g.const(f"{name}_scale", s), 0.0, 2, True, True)
        return self.quant(g, w, g.const(f"{name}_scale", scale), 0.0, int(b), True, False)

    def linear(self, g: Graph, x: QAct | str, mod: QLinear, name: str) -> str:
        if isinstance(x, str):
            x = self.quantize(g, x, mod, name)
        scale = mod.weight_scale.detach().float().numpy().reshape(1, -1) if mod.weight_scale is not None else None
        w = self.weight(g, f"{name}.weight_t", mod.weight.detach().t().float().numpy(), mod.weight_bits, scale)
        y = g.op("MatMul", [self.value(g, x), w])
        if mod.bias is not None:
            y = g.op("Add", [y, g.const(f"{name}.bias", mod.bias.detach().float().numpy())])
        return y

    # static shape: positions and the causal mask are constants
    def positions(self, g: Graph, start: str, ids: str) -> str:
        return g.const("positions", np.arange(self.length, dtype=np.int64)[None])

    def causal_bias(self, g: Graph, ids: str, past_len: str) -> str:
        keep = np.tril(np.ones((self.length, self.length), bool))
        return g.const("causal_bias", np.where(keep, np.float32(0.0), np.float32(_MASKED)))

    def table(self, g: Graph) -> str:
        emb = self.m.embed
        scale = emb.weight_scale.detach().float().numpy() if emb.weight_scale is not None else None
        return self.weight(g, "embed.weight", emb.weight.detach().float().numpy(), emb.bits, scale)

    def logits(self, g: Graph, x: str, table: str) -> None:
        """The tied output projection through its own quantizer of a transposed copy of the
        table: qonnx's cleanup (FoldTransposeIntoQuantInit) would rewire the table's one
        Quant away from the embedding's Gather if a Transpose read it too."""
        emb, d = self.m.embed, self.m.decoder_dim
        scale = emb.weight_scale.detach().float().numpy().reshape(1, -1) if emb.weight_scale is not None else None
        head = self.weight(g, "head.weight_t", emb.weight[:, :d].detach().t().float().numpy(), emb.bits, scale)
        g.op("MatMul", [x, head], ["logits"])
        g.outputs.insert(0, _float_input("logits", [1, self.length, emb.weight.shape[0]]))

    def graph(self, length: int) -> Graph:
        """The full forward pass at shape (1, ``length``)."""
        m, self.length = self.m, length
        g = Graph("cosearch_qonnx", opsets={"": 17, QONNX_DOMAIN: 1})
        g.inputs.append(_int_input("input_ids", [1, length]))
        zero = g.scalar(0, np.int64)
        if m.family == "encoder_decoder":
            g.inputs.append(_int_input("decoder_input_ids", [1, length]))
            states, source_mask = self.encoder_states(g, "input_ids")
            cross, ids = self.cross_kv(g, states), "decoder_input_ids"
        else:
            cross, source_mask, ids = None, None, "input_ids"
        table = self.table(g)
        x = self.embed(g, table, ids, m.decoder_dim, self.positions(g, zero, ids))
        x, _ = self.decoder_stack(g, x, self.causal_bias(g, ids, zero), None, cross, source_mask)
        self.logits(g, x, table)
        return g


def qonnx_inputs(model: Transformer, length: int, seed: int) -> dict[str, np.ndarray]:
    """Random token ids (1, length) for the graph's inputs; sources end in padding."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.embed.weight.shape[0]
    ids = torch.randint(min(4, vocab - 1), vocab, (1, length), generator=g)
    if model.family != "encoder_decoder":
        return {"input_ids": ids.numpy()}
    src = ids.clone()
    src[0, length - length // 3:] = model.pad_id
    return {"input_ids": src.numpy(), "decoder_input_ids": torch.randint(4, vocab, (1, length), generator=g).numpy()}


def write_qonnx(model: Transformer, folder: str | Path, progress: bool = False, length: int | None = None) -> dict:
    """Write ``folder/model_qonnx.onnx`` for ``model`` (cleaned by qonnx) and execute it
    with qonnx's executor on ``CHECK_INPUTS`` random inputs; returns the report."""
    from tqdm import tqdm
    require_qonnx()
    from importlib.metadata import version
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    model = model.eval()
    length = int(length or model.max_positions or 32)
    steps = model.n_encoder + model.n_decoder + 1 + CHECK_INPUTS
    with tqdm(total=steps, desc="qonnx export", unit="step", disable=not progress, leave=False) as bar:
        builder = QonnxBuilder(model, tick=bar.update)
        raw = builder.graph(length).model()
        names = [i.name for i in raw.graph.input]
        clean = cleanup_model(ModelWrapper(raw))
        path = Path(folder) / QONNX_FILE
        clean.save(str(path))
        bar.update()
        diffs, agree, total = [], 0, 0
        for seed in range(CHECK_INPUTS):
            feed = qonnx_inputs(model, length, seed)
            got = execute_onnx(clean, {i.name: feed[n] for i, n in zip(clean.graph.input, names)})
            got = torch.from_numpy(next(iter(got.values())))
            with torch.no_grad():
                ref = model(*(torch.from_numpy(feed[n]) for n in names))
            diffs.append(float((got - ref).abs().max()))
            agree += int((got.argmax(-1) == ref.argmax(-1)).sum())
            total += ref.shape[1]
            bar.update()
    return {"file": QONNX_FILE, "qonnx": version("qonnx"), "inputs": CHECK_INPUTS, "shape": [1, length],
            "graph_inputs": dict(zip([i.name for i in clean.graph.input], names)),
            "quantizers": dict(builder.quantizers), "max_abs_diff": max(diffs),
            "argmax_agreement": agree / total, "ok": max(diffs) <= CHECK_ATOL and agree == total}
