"""Deployable ONNX graphs of an exported model, built with ``onnx.helper``.

Weights stay at their exported precision, in operators onnxruntime executes
(``cosearch.export.onnx_weights`` has the forms and how they are stored):

* quantized linears, float mode: ``com.microsoft.MatMulNBits`` (2-, 4- or 8-bit codes;
  3 bits run as 4-bit codes, binary and ternary as 2-bit codes with float zero points,
  the form onnxruntime runs fast on CPU); every weight is stored at its real bit-width.
* quantized linears, integer mode (``integer=True``): a linear whose activations *and*
  weights are quantized runs as ``MatMulInteger`` on the activation codes (as uint8 with
  zero point 128) and the int8 weight numerators (exact int32 accumulation), then one float multiply by the
  per-token activation step and the per-row weight scale. This is the arithmetic of an
  integer accelerator's datapath; the fake-quantized float product equals it up to float
  rounding.
* 16-bit linears and tables: float16 initializers cast to float32 (onnxruntime folds the
  cast when the session starts).
* a quantized token table: int8 numerators and a per-row scale through
  ``DequantizeLinear`` (8 bits per entry whatever its bit-width).

Activations are quantized per token exactly as ``cosearch.model.quant.ActQuantizer`` does
(max|x| / Qp, round half to even, clamp; float mode multiplies the step back in), and
positions are rows of the very sinusoid table the torch model reads, so both engines
compute the same arithmetic up to float summation order.

Graphs have dynamic batch and sequence axes and a KV cache in the layout Optimum and
onnxruntime-genai use. Decoder-only (``model.onnx``): inputs ``input_ids`` (batch, sequence),
``attention_mask`` (batch, past_sequence + sequence; 0 = padding), ``position_ids`` (batch,
sequence) and ``past_key_values.{i}.key/value``; outputs ``logits`` and
``present.{i}.key/value``, shaped (batch, heads, sequence, head_dim). Positions at or past
``max_positions`` are refused by the position table's Gather. An encoder-decoder becomes an
encoder graph (``input_ids`` -> the cross-attention keys and values of every decoder
layer, as onnxruntime-genai's Whisper encoder emits them) and one decoder-with-past graph
(``past_key_values.{i}.decoder.*`` and ``.encoder.*``); both read one shared external data
file, so the token table is stored once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..model.modules import Attention, QLinear, Transformer, sinusoid
from ..space import canonical_bits
from .onnx_weights import (block_size_for, integer_inputs, matmul_nbits_bits, nbits_inputs,  # noqa: F401
                           nbits_weight, pack_low_first, table_numerators)

OPSET = 17
MS_DOMAIN = "com.microsoft"
#: File names in an export folder.
DECODER_ONLY_FILE = "model.onnx"
ENCODER_FILE, DECODER_FILE, SHARED_DATA_FILE = "encoder_model.onnx", "decoder_model.onnx", "model.onnx_data"
_MASKED = -1e9  # added to disallowed attention scores: exp() of it is exactly 0 in float32
_STAT_EPS = 1e-12  # as cosearch.model.quant: the per-token max floor
#: the position table's length when a model does not say its max_positions
DEFAULT_MAX_POSITIONS = 1024


# --------------------------------------------------------------------------- graph building
@dataclass
class Graph:
    """Nodes, initializers and value names of one ONNX graph under construction."""

    name: str
    nodes: list = field(default_factory=list)
    inits: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    opsets: dict = field(default_factory=lambda: {"": OPSET, MS_DOMAIN: 1})
    _n: int = 0

    def const(self, name: str, array: np.ndarray) -> str:
        if name not in self.inits:  # (np.ascontiguousarray would make a scalar 1-D)
            self.inits[name] = numpy_helper.from_array(np.require(array, requirements="C"), name)
        return name

    def scalar(self, value, dtype=np.float32) -> str:
        return self.const(f"const.{np.dtype(dtype).name}.{value!r}", np.array(value, dtype=dtype))

    def ints(self, values) -> str:
        return self.const("const.ints." + "_".join(map(str, values)), np.array(values, np.int64))

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, domain: str = "", **attrs):
        if isinstance(outputs, int):
            self._n += 1
            outputs = [f"{op_type}_{self._n}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=f"{op_type}_{len(self.nodes)}",
                                           domain=domain, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def model(self) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, list(self.inits.values()))
        m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in self.opsets.items()],
                              producer_name="cosearch")
        m.ir_version = 8
        return m


def _float_input(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _int_input(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT64, shape)


@dataclass
class QAct:
    """A quantized activation: integer-valued float codes times a per-token step (B, T, 1)."""

    codes: str
    step: str
    value: str | None = None  # codes * step, made on first use
    uint8: str | None = None  # codes + 128 as uint8, made on first use


class _Builder:
    """Emits the operators of one ``Transformer`` (plain sub-network) into graphs.
    ``tick`` is called once per layer built (a progress bar)."""

    def __init__(self, model: Transformer, integer: bool = False, tick=None):
        self.m = model.eval()
        self.integer = integer
        self.tick = tick or (lambda: None)
        self.max_positions = model.max_positions or DEFAULT_MAX_POSITIONS

    # ---- activations
    def quantize(self, g: Graph, x: str, mod: QLinear, name: str) -> QAct | str:
        """Per-token quantization of ``x`` at ``mod``'s activation bits (ActQuantizer)."""
        bits = int(mod.act_bits)
        if bits == 16:
            return x
        qn, qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
        stat = self.act_step(g, x, mod, name)
        rounded = g.op("Round", [g.op("Div", [x, stat])])
        return QAct(g.op("Clip", [rounded, g.scalar(float(-qn)), g.scalar(float(qp))]), stat)

    def act_step(self, g: Graph, x: str, mod: QLinear, name: str) -> str:
        """The per-token step: max|x| / Qp, times the learned clipping factor below 8 bits."""
        bits = int(mod.act_bits)
        amax = g.op("ReduceMax", [g.op("Abs", [x])], axes=[-1], keepdims=1)
        stat = g.op("Div", [g.op("Max", [amax, g.scalar(_STAT_EPS)]), g.scalar(float(2 ** (bits - 1) - 1))])
        if bits < 8:  # exp() taken in torch, as the model does
            factor = mod.aq.log_clip[f"b{bits}"].detach().exp().float().numpy()
            stat = g.op("Mul", [g.const(f"{name}.act_clip", factor), stat])
        return stat

    def value(self, g: Graph, x: QAct | str) -> str:
        if isinstance(x, str):
            return x
        if x.value is None:
            x.value = g.op("Mul", [x.codes, x.step])
        return x.value

    # ---- linears
    def linear(self, g: Graph, x: QAct | str, mod: QLinear, name: str) -> str:
        """``mod``'s output for ``x`` (a float tensor, quantized here, or a ``QAct``)."""
        if isinstance(x, str):
            x = self.quantize(g, x, mod, name)
        bias = g.const(f"{name}.bias", mod.bias.detach().float().numpy()) if mod.bias is not None else None
        bits = canonical_bits(mod.weight_bits)
        if bits == 16:
            wt = g.const(f"{name}.weight_t", mod.weight.detach().t().half().numpy())
            y = g.op("MatMul", [self.value(g, x), g.op("Cast", [wt], to=TensorProto.FLOAT)])
        elif self.integer and isinstance(x, QAct):
            y = self.integer_matmul(g, x, mod, name)
        else:
            ins, attrs = nbits_inputs(g, name, mod.weight.detach(), bits, mod.weight_scale)
            y = g.op("MatMulNBits", [self.value(g, x), *ins], domain=MS_DOMAIN, **attrs)
        return g.op("Add", [y, bias]) if bias else y

    def integer_matmul(self, g: Graph, x: QAct, mod: QLinear, name: str) -> str:
        """int8 activation codes x int8 weight numerators, accumulated exactly in int32,
        then scaled by the token's step and the row's scale."""
        w, scale = integer_inputs(g, name, mod.weight.detach(), mod.weight_bits, mod.weight_scale)
        if x.uint8 is None:  # codes + 128 with zero point 128: the same int32 sums, and onnxruntime's
            # u8 x s8 kernel is the fast one (s8 x s8 measured 20-40x slower on an AVX-512 CPU)
            x.uint8 = g.op("Cast", [g.op("Add", [x.codes, g.scalar(128.0)])], to=TensorProto.UINT8)
        acc = g.op("MatMulInteger", [x.uint8, w, g.scalar(128, np.uint8)])
        acc = g.op("Cast", [acc], to=TensorProto.FLOAT)
        return g.op("Mul", [g.op("Mul", [acc, x.step]), scale])

    # ---- pieces
    def layer_norm(self, g: Graph, x: str, ln, name: str) -> str:
        d = ln.dim
        return g.op("LayerNormalization", [x, g.const(f"{name}.weight", ln.weight[:d].detach().float().numpy()),
                                          g.const(f"{name}.bias", ln.bias[:d].detach().float().numpy())],
                    axis=-1, epsilon=float(ln.eps))

    def table(self, g: Graph) -> str:
        """The token table as float32 (V, width)."""
        emb = self.m.embed
        if canonical_bits(emb.bits) == 16:
            return g.op("Cast", [g.const("embed.weight", emb.weight.detach().half().numpy())], to=TensorProto.FLOAT)
        num, scale = table_numerators(emb.weight.detach(), emb.bits, emb.weight_scale)
        return g.op("DequantizeLinear", [g.const("embed.weight_numerators", num), g.const("embed.weight_scale", scale),
                                         g.const("embed.weight_zero_point", np.zeros(num.shape[0], np.int8))], axis=0)

    def columns(self, g: Graph, table: str, dim: int) -> str:
        if dim == self.m.embed.weight.shape[1]:
            return table
        return g.op("Slice", [table, g.ints([0]), g.ints([dim]), g.ints([1])])

    def embed(self, g: Graph, table: str, ids: str, dim: int, positions: str) -> str:
        """Token embeddings * sqrt(dim) plus the sinusoids of ``positions`` ((B, T) or (T,)
        int64), gathered from the table the torch model reads (Transformer._embed)."""
        x = g.op("Mul", [g.op("Gather", [self.columns(g, table, dim), ids]), g.scalar(math.sqrt(dim))])
        pe = g.const(f"sinusoid.{dim}", sinusoid(self.max_positions, dim, "cpu").numpy())
        return g.op("Add", [x, g.op("Gather", [pe, positions])])

    def positions(self, g: Graph, start: str, ids: str) -> str:
        """(1, T) positions start, start+1, ... (2-D: onnxruntime 1.32 rewrites a Gather of a
        1-D Range into a Slice with scalar starts, which it then refuses to run)."""
        return g.op("Unsqueeze", [self.arange(g, start, ids), g.ints([0])])

    def arange(self, g: Graph, start: str, ids: str) -> str:
        """Positions start, start+1, ... for the sequence axis of ``ids``."""
        length = g.op("Gather", [g.op("Shape", [ids]), g.scalar(1, np.int64)])
        return g.op("Range", [start, g.op("Add", [start, length]), g.scalar(1, np.int64)])

    def heads(self, g: Graph, x: str, attn: Attention) -> str:
        """(B, T, H*D) -> (B, H, T, D)."""
        return g.op("Transpose", [g.op("Reshape", [x, g.ints([0, 0, attn.heads, attn.head_dim])])], perm=[0, 2, 1, 3])

    def attend(self, g: Graph, q: str, k: str, v: str, bias: str | None, attn: Attention, name: str) -> str:
        scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])
        scores = g.op("Mul", [scores, g.scalar(1.0 / math.sqrt(attn.head_dim))])
        if bias is not None:
            scores = g.op("Add", [scores, bias])
        o = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        o = g.op("Reshape", [g.op("Transpose", [o], perm=[0, 2, 1, 3]), g.ints([0, 0, attn.heads * attn.head_dim])])
        return self.linear(g, o, attn.out, f"{name}.out")

    def self_attention(self, g: Graph, x: str, attn: Attention, name: str, past: tuple[str, str] | None,
                       bias: str | None) -> tuple[str, str, str]:
        """(output, keys, values); keys/values include ``past`` (the present cache)."""
        xq = self.quantize(g, x, attn.q, f"{name}.q")  # q, k and v read one quantized input
        q = self.heads(g, self.linear(g, xq, attn.q, f"{name}.q"), attn)
        k = self.heads(g, self.linear(g, xq, attn.k, f"{name}.k"), attn)
        v = self.heads(g, self.linear(g, xq, attn.v, f"{name}.v"), attn)
        if past is not None:
            k, v = g.op("Concat", [past[0], k], axis=2), g.op("Concat", [past[1], v], axis=2)
        return self.attend(g, q, k, v, bias, attn, name), k, v

    def ffn(self, g: Graph, x: str, ffn, name: str) -> str:
        return self.linear(g, g.op("Relu", [self.linear(g, x, ffn.fc1, f"{name}.fc1")]), ffn.fc2, f"{name}.fc2")

    def key_bias(self, g: Graph, mask: str) -> str:
        """(B, S) int64 mask, 1 = attend -> (B, 1, 1, S) additive bias."""
        keep = g.op("Unsqueeze", [g.op("Cast", [mask], to=TensorProto.BOOL), g.ints([1, 2])])
        return g.op("Where", [keep, g.scalar(0.0), g.scalar(_MASKED)])

    def causal_bias(self, g: Graph, ids: str, past_len: str) -> str:
        """(T, P+T) additive bias: query i (position P+i) sees keys j <= P+i."""
        qpos = g.op("Unsqueeze", [self.arange(g, past_len, ids), g.ints([1])])
        total = g.op("Add", [past_len, g.op("Gather", [g.op("Shape", [ids]), g.scalar(1, np.int64)])])
        kpos = g.op("Unsqueeze", [g.op("Range", [g.scalar(0, np.int64), total, g.scalar(1, np.int64)]), g.ints([0])])
        return g.op("Where", [g.op("LessOrEqual", [kpos, qpos]), g.scalar(0.0), g.scalar(_MASKED)])

    # ---- stacks
    def encoder_states(self, g: Graph, ids: str) -> tuple[list[str], str]:
        """(normalised outputs of the encoder layers the decoder reads, source mask (B, S))."""
        m = self.m
        mask = g.op("Cast", [g.op("Not", [g.op("Equal", [ids, g.scalar(int(m.pad_id), np.int64)])])],
                    to=TensorProto.INT64)
        bias = self.key_bias(g, mask)
        x = self.embed(g, self.table(g), ids, m.encoder_dim, self.positions(g, g.scalar(0, np.int64), ids))
        keep = max(m.max_cross, 1)
        states = []
        for i, layer in enumerate(m.encoder_layers):
            name = f"encoder.{i}"
            h, _, _ = self.self_attention(g, self.layer_norm(g, x, layer.ln1, f"{name}.ln1"), layer.attn,
                                          f"{name}.attn", None, bias)
            x = g.op("Add", [x, h])
            x = g.op("Add", [x, self.ffn(g, self.layer_norm(g, x, layer.ln2, f"{name}.ln2"), layer.ffn, f"{name}.ffn")])
            if i >= m.n_encoder - keep:
                states.append(x)
            self.tick()
        return [self.layer_norm(g, s, m.encoder_norm, "encoder_norm") for s in states], mask

    def cross_kv(self, g: Graph, states: list[str]) -> list[tuple[str, str]]:
        """Each decoder layer's cross-attention keys and values (B, H, S*, D)."""
        out = []
        for i, layer in enumerate(self.m.decoder_layers):
            c, n_cross = layer.cross_attn, layer.cross_layers
            mem = g.op("Concat", states[-n_cross:], axis=1) if n_cross > 1 else states[-1]
            mq = self.quantize(g, mem, c.k, f"decoder.{i}.cross_attn.k")
            out.append(tuple(self.heads(g, self.linear(g, mq, mod, f"decoder.{i}.cross_attn.{t}"), c)
                             for t, mod in (("k", c.k), ("v", c.v))))
        return out

    def decoder_stack(self, g: Graph, x: str, self_bias: str, past: list | None = None, cross: list | None = None,
                      source_mask: str | None = None) -> tuple[str, list]:
        """(final-normed states, [(keys, values)] per layer) of the decoder layers."""
        cross_bias, presents = {}, []
        for i, layer in enumerate(self.m.decoder_layers):
            name = f"decoder.{i}"
            h, k, v = self.self_attention(g, self.layer_norm(g, x, layer.ln1, f"{name}.ln1"), layer.self_attn,
                                          f"{name}.self_attn", past[i] if past else None, self_bias)
            presents.append((k, v))
            x = g.op("Add", [x, h])
            if cross is not None:
                n_cross = layer.cross_layers
                if n_cross not in cross_bias:
                    mask = source_mask if n_cross == 1 else g.op("Tile", [source_mask, g.ints([1, n_cross])])
                    cross_bias[n_cross] = self.key_bias(g, mask)
                c = layer.cross_attn
                cq = self.heads(g, self.linear(g, self.layer_norm(g, x, layer.ln_cross, f"{name}.ln_cross"),
                                               c.q, f"{name}.cross_attn.q"), c)
                x = g.op("Add", [x, self.attend(g, cq, cross[i][0], cross[i][1], cross_bias[n_cross], c,
                                                f"{name}.cross_attn")])
            x = g.op("Add", [x, self.ffn(g, self.layer_norm(g, x, layer.ln2, f"{name}.ln2"), layer.ffn, f"{name}.ffn")])
            self.tick()
        return self.layer_norm(g, x, self.m.decoder_norm, "decoder_norm"), presents

    def logits(self, g: Graph, x: str, table: str) -> None:
        m = self.m
        out_t = g.op("Transpose", [self.columns(g, table, m.decoder_dim)], perm=[1, 0])
        g.op("MatMul", [x, out_t], ["logits"])
        g.outputs.insert(0, _float_input("logits", ["batch", "sequence", m.embed.weight.shape[0]]))

    # ---- graphs
    def decoder_graph(self) -> Graph:
        """The decoder with a KV cache: logits and present keys/values for ``input_ids``."""
        m, encdec = self.m, self.m.family == "encoder_decoder"
        g = Graph("decoder")
        g.inputs.append(_int_input("input_ids", ["batch", "sequence"]))
        if encdec:
            g.inputs.append(_int_input("encoder_attention_mask", ["batch", "encoder_sequence"]))
        else:
            g.inputs += [_int_input("attention_mask", ["batch", "total_sequence"]),
                         _int_input("position_ids", ["batch", "sequence"])]
        kind = ".decoder" if encdec else ""
        past, cross = [], []
        for i, layer in enumerate(m.decoder_layers):
            a = layer.self_attn
            names = [f"past_key_values.{i}{kind}.key", f"past_key_values.{i}{kind}.value"]
            g.inputs += [_float_input(n, ["batch", a.heads, "past_sequence", a.head_dim]) for n in names]
            past.append(names)
            if encdec:
                c = layer.cross_attn
                cn = [f"past_key_values.{i}.encoder.key", f"past_key_values.{i}.encoder.value"]
                g.inputs += [_float_input(n, ["batch", c.heads, f"encoder_sequence_{layer.cross_layers}", c.head_dim])
                             for n in cn]
                cross.append(cn)
        past_len = g.op("Gather", [g.op("Shape", [past[0][0]]), g.scalar(2, np.int64)])
        table = self.table(g)
        bias = self.causal_bias(g, "input_ids", past_len)
        if encdec:
            positions = self.positions(g, past_len, "input_ids")
        else:  # padding: the caller's positions, and its mask over past and new keys
            positions = "position_ids"
            bias = g.op("Add", [bias, self.key_bias(g, "attention_mask")])
        x = self.embed(g, table, "input_ids", m.decoder_dim, positions)
        x, presents = self.decoder_stack(g, x, bias, past, cross if encdec else None,
                                         "encoder_attention_mask" if encdec else None)
        for i, (layer, (k, v)) in enumerate(zip(m.decoder_layers, presents)):
            a = layer.self_attn
            for t, value in (("key", k), ("value", v)):
                g.op("Identity", [value], [f"present.{i}{kind}.{t}"])
                g.outputs.append(_float_input(f"present.{i}{kind}.{t}", ["batch", a.heads, "total_sequence", a.head_dim]))
        self.logits(g, x, table)
        return g

    def encoder_graph(self) -> Graph:
        """The encoder: ``input_ids`` -> cross-attention keys/values of every decoder layer."""
        g = Graph("encoder")
        g.inputs.append(_int_input("input_ids", ["batch", "encoder_sequence"]))
        states, _ = self.encoder_states(g, "input_ids")
        for i, (layer, kv) in enumerate(zip(self.m.decoder_layers, self.cross_kv(g, states))):
            c = layer.cross_attn
            for t, value in zip(("key", "value"), kv):
                out = f"present.{i}.encoder.{t}"
                g.op("Identity", [value], [out])
                g.outputs.append(_float_input(out, ["batch", c.heads, f"encoder_sequence_{layer.cross_layers}",
                                                    c.head_dim]))
        return g


def graph_steps(model: Transformer) -> int:
    """How many times ``build_graphs`` ticks (one per layer built): a progress bar's total."""
    return model.n_decoder + model.n_encoder


def build_graphs(model: Transformer, integer: bool = False, tick=None) -> dict[str, onnx.ModelProto]:
    """{file name: model} of ``model``: one decoder graph, plus the encoder graph for an
    encoder-decoder. ``integer``: quantized linears with quantized inputs as MatMulInteger."""
    b = _Builder(model, integer, tick)
    if model.family == "encoder_decoder":
        return {ENCODER_FILE: b.encoder_graph().model(), DECODER_FILE: b.decoder_graph().model()}
    return {DECODER_ONLY_FILE: b.decoder_graph().model()}


def write_graphs(models: dict[str, onnx.ModelProto], folder: str | Path) -> list[str]:
    """Write ``models`` into ``folder``; several models share one external data file
    (tensors of equal name written once). Returns the file names written."""
    folder = Path(folder)
    if len(models) == 1:
        (name, model), = models.items()
        (folder / name).write_bytes(model.SerializeToString())
        return [name]
    written: dict[str, tuple[int, int]] = {}
    with open(folder / SHARED_DATA_FILE, "wb") as data:
        for model in models.values():
            for t in model.graph.initializer:
                if t.name not in written:
                    if len(t.raw_data) < 1024:
                        continue  # small constants stay in the graph
                    data.seek(-(-data.tell() // 64) * 64)  # aligned, as onnx's own writer does
                    written[t.name] = (data.tell(), len(t.raw_data))
                    data.write(t.raw_data)
                offset, length = written[t.name]
                t.ClearField("raw_data")
                t.data_location = TensorProto.EXTERNAL
                del t.external_data[:]
                for key, value in (("location", SHARED_DATA_FILE), ("offset", str(offset)), ("length", str(length))):
                    entry = t.external_data.add()
                    entry.key, entry.value = key, value
    for name, model in models.items():
        (folder / name).write_bytes(model.SerializeToString())
    return [*models, SHARED_DATA_FILE]
