"""Deployable ONNX graphs of an exported model, built with ``onnx.helper``.

Weights stay at their exported precision, in operators onnxruntime executes:

* 2-8-bit linears: ``com.microsoft.MatMulNBits`` (codes packed low bits first along K, in
  blocks with one float32 scale each; every block of a row repeats the row's scale).
  4 and 8 bits map one to one (3 bits travel as 4-bit codes: +33% on those weights).
  2 bits, ternary and binary use 2-bit codes with float zero points, the form onnxruntime
  runs fast on CPU (``(q - zp) * scale``; 2 bits: zp 1.5, ternary: zp 2 with scale
  2s/3, binary: codes 1/3 with zp 2): 2.25 bits per weight at block 256, i.e. +12.5% for
  2 bits, +41% for ternary (1.6 bits) and +125% for binary (1 bit).
* 16-bit linears and tables: float16 initializers cast to float32 (onnxruntime folds the
  cast when the session starts).
* a quantized token table: int8 numerators and a per-row scale through
  ``DequantizeLinear`` (8 bits per entry whatever its bit-width).

Activations are fake-quantized per token exactly as ``cosearch.model.quant.ActQuantizer`` does
(max|x| / Qp, round half to even, clamp, times the step), so both paths compute the same
arithmetic up to float summation order.

Graphs have dynamic batch and sequence axes and a KV cache in the layout Optimum and
onnxruntime-genai use: inputs ``past_key_values.{i}.key/value`` (decoder-only) or
``past_key_values.{i}.decoder.key/value`` plus ``past_key_values.{i}.encoder.key/value``
(encoder-decoder), outputs ``present.…``, shaped (batch, heads, sequence, head_dim). An
encoder-decoder becomes an encoder graph (``input_ids`` -> the cross-attention keys and
values of every decoder layer, as onnxruntime-genai's Whisper encoder emits them) and one
decoder-with-past graph; both read one shared external data file, so the token table is
stored once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from ..model.modules import Attention, QLinear, Transformer
from ..model.quant import TERNARY, quantize_codes
from ..space import canonical_bits

OPSET = 17
MS_DOMAIN = "com.microsoft"
#: File names in an export folder.
DECODER_ONLY_FILE = "model.onnx"
ENCODER_FILE, DECODER_FILE, SHARED_DATA_FILE = "encoder_model.onnx", "decoder_model.onnx", "model.onnx_data"
_MASKED = -1e9  # added to disallowed attention scores: exp() of it is exactly 0 in float32
_STAT_EPS = 1e-12  # as cosearch.model.quant: the per-token max floor


# --------------------------------------------------------------------------- weights
def matmul_nbits_bits(bits: float) -> int:
    """The MatMulNBits code width that holds ``bits``-bit weights."""
    b = canonical_bits(bits)
    if b <= 2:
        return 2
    if b <= 4:
        return 4
    return 8


def block_size_for(k: int, bits: int, has_zero_point: bool) -> int:
    """The MatMulNBits block size (power of two, >= 16) that stores K columns in the fewest
    bytes (padding plus one scale, and zero point, per block); ties go to the larger block."""
    limit = 256 if bits == 2 else 2048  # onnxruntime's CPU kernel refuses 2-bit blocks over 256
    best = None
    bs = 16
    while bs <= limit:
        blocks = -(-k // bs)
        cost = blocks * (bs * bits // 8 + 4 * (2 if has_zero_point else 1))
        if best is None or cost <= best[0]:
            best = (cost, bs)
        if bs >= k:
            break
        bs *= 2
    return best[1]


def pack_low_first(q: np.ndarray, bits: int, block_size: int) -> np.ndarray:
    """Unsigned codes (N, K) -> uint8 (N, k_blocks, block_size * bits / 8), the first code
    of every byte in its lowest bits (MatMulNBits' layout); K is zero-padded to whole blocks."""
    n, k = q.shape
    blocks = -(-k // block_size)
    padded = np.zeros((n, blocks * block_size), np.uint8)
    padded[:, :k] = q
    per_byte = 8 // bits
    groups = padded.reshape(n, blocks, block_size // per_byte, per_byte).astype(np.uint16)
    out = np.zeros(groups.shape[:-1], np.uint16)
    for i in range(per_byte):
        out |= groups[..., i] << (i * bits)
    return out.astype(np.uint8)


@dataclass
class NBitsWeight:
    """One linear's weight in MatMulNBits form: w[n, k] = (q[n, k] - zero_point[n]) * scale[n]."""

    codes: np.ndarray        # uint8 (N, K), unsigned
    scale: np.ndarray        # float32 (N,)
    zero_point: float | None  # None: the default 2^(bits-1), an integer
    bits: int


def nbits_weight(weight: torch.Tensor, bits: float, scale: torch.Tensor) -> NBitsWeight:
    """The MatMulNBits form of a fake-quantized weight with per-row ``scale`` (exact)."""
    b = canonical_bits(bits)
    c = quantize_codes(weight, b, scale).numpy().astype(np.int16)
    s = scale.detach().float().reshape(-1)
    nb = matmul_nbits_bits(b)
    if b == 2:      # level (c + 1/2) / 2: (q - 1.5) * s/2 with q = c + 2
        return NBitsWeight((c + 2).astype(np.uint8), (s * 0.5).numpy(), 1.5, nb)
    if b == TERNARY:  # level 2c/3: (q - 2) * (2/3 s), the float32 product quant.py forms
        return NBitsWeight((c + 2).astype(np.uint8), (torch.ones(1) * (2.0 / 3.0) * s).numpy(), 2.0, nb)
    if b == 1:      # level 2c + 1 in {-1, 1}: q = 2c + 3 in {1, 3}, zero point 2
        return NBitsWeight((2 * c + 3).astype(np.uint8), s.numpy(), 2.0, nb)
    return NBitsWeight((c + 2 ** (nb - 1)).astype(np.uint8), s.numpy(), None, nb)


def table_numerators(weight: torch.Tensor, bits: float, scale: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(int8 numerators (V, D), float32 scale (V,)) with numerator * scale == weight exactly."""
    b = canonical_bits(bits)
    c = quantize_codes(weight, b, scale).numpy().astype(np.int16)
    s = scale.detach().float().reshape(-1)
    if b == 2:
        return (2 * c + 1).astype(np.int8), (s * 0.25).numpy()
    if b == TERNARY:
        return c.astype(np.int8), (torch.ones(1) * (2.0 / 3.0) * s).numpy()
    if b == 1:
        return (2 * c + 1).astype(np.int8), s.numpy()
    return c.astype(np.int8), s.numpy()


# --------------------------------------------------------------------------- graph building
@dataclass
class Graph:
    """Nodes, initializers and value names of one ONNX graph under construction."""

    name: str
    nodes: list = field(default_factory=list)
    inits: dict = field(default_factory=dict)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    _n: int = 0

    def const(self, name: str, array: np.ndarray) -> str:
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
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
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                              producer_name="cosearch")
        m.ir_version = 8
        return m


def _float_input(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


class _Builder:
    """Emits the operators of one ``Transformer`` (plain sub-network) into graphs."""

    def __init__(self, model: Transformer):
        self.m = model.eval()

    # ---- pieces
    def act_quant(self, g: Graph, x: str, mod: QLinear, name: str) -> str:
        """Per-token fake quantization of ``x`` at ``mod``'s activation bits (ActQuantizer)."""
        bits = int(mod.act_bits)
        if bits == 16:
            return x
        qn, qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
        amax = g.op("ReduceMax", [g.op("Abs", [x])], axes=[-1], keepdims=1)
        stat = g.op("Div", [g.op("Max", [amax, g.scalar(_STAT_EPS)]), g.scalar(float(qp))])
        if bits < 8:  # learned clipping factor, exp() taken in torch as the model does
            factor = mod.aq.log_clip[f"b{bits}"].detach().exp().float().numpy()
            stat = g.op("Mul", [g.const(f"{name}.act_clip", factor), stat])
        rounded = g.op("Round", [g.op("Div", [x, stat])])
        codes = g.op("Clip", [rounded, g.scalar(float(-qn)), g.scalar(float(qp))])
        return g.op("Mul", [codes, stat])

    def linear(self, g: Graph, x: str, mod: QLinear, name: str, quantized: bool = False) -> str:
        """``mod``'s output for ``x`` (activation quantization first unless ``quantized``)."""
        if not quantized:
            x = self.act_quant(g, x, mod, name)
        bias = g.const(f"{name}.bias", mod.bias.detach().float().numpy()) if mod.bias is not None else None
        bits = canonical_bits(mod.weight_bits)
        if bits == 16:
            wt = g.const(f"{name}.weight_t", mod.weight.detach().t().half().numpy())
            y = g.op("MatMul", [x, g.op("Cast", [wt], to=TensorProto.FLOAT)])
            return g.op("Add", [y, bias]) if bias else y
        w = nbits_weight(mod.weight.detach(), bits, mod.weight_scale)
        n, k = w.codes.shape
        bs = block_size_for(k, w.bits, w.zero_point is not None)
        blocks = -(-k // bs)
        ins = [x, g.const(f"{name}.weight_codes", pack_low_first(w.codes, w.bits, bs)),
               g.const(f"{name}.weight_scales", np.repeat(w.scale[:, None], blocks, axis=1).astype(np.float32))]
        ins.append(g.const(f"{name}.weight_zero_points", np.full((n, blocks), w.zero_point, np.float32))
                   if w.zero_point is not None else "")
        y = g.op("MatMulNBits", ins, domain=MS_DOMAIN, K=k, N=n, bits=w.bits, block_size=bs)
        return g.op("Add", [y, bias]) if bias else y

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

    def embed(self, g: Graph, table: str, ids: str, dim: int, offset: str) -> str:
        """Token embeddings * sqrt(dim) plus sinusoids at positions offset.. (Transformer._embed)."""
        x = g.op("Mul", [g.op("Gather", [self.columns(g, table, dim), ids]), g.scalar(math.sqrt(dim))])
        half = dim // 2
        freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        length = g.op("Gather", [g.op("Shape", [ids]), g.scalar(1, np.int64)])
        pos = g.op("Range", [offset, g.op("Add", [offset, length]), g.scalar(1, np.int64)])
        ang = g.op("Mul", [g.op("Unsqueeze", [g.op("Cast", [pos], to=TensorProto.FLOAT), g.ints([1])]),
                           g.const(f"sinusoid.freq.{dim}", freq.numpy())])
        parts = [g.op("Sin", [ang]), g.op("Cos", [ang])]
        if dim % 2:
            parts.append(g.op("Mul", [g.op("Slice", [ang, g.ints([0]), g.ints([1]), g.ints([1])]), g.scalar(0.0)]))
        return g.op("Add", [x, g.op("Concat", parts, axis=-1)])

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
        xq = self.act_quant(g, x, attn.q, f"{name}.q")
        q = self.heads(g, self.linear(g, xq, attn.q, f"{name}.q", True), attn)
        k = self.heads(g, self.linear(g, xq, attn.k, f"{name}.k", True), attn)
        v = self.heads(g, self.linear(g, xq, attn.v, f"{name}.v", True), attn)
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
        length = g.op("Gather", [g.op("Shape", [ids]), g.scalar(1, np.int64)])
        qpos = g.op("Unsqueeze", [g.op("Range", [past_len, g.op("Add", [past_len, length]), g.scalar(1, np.int64)]),
                                  g.ints([1])])
        kpos = g.op("Unsqueeze", [g.op("Range", [g.scalar(0, np.int64), g.op("Add", [past_len, length]),
                                                  g.scalar(1, np.int64)]), g.ints([0])])
        return g.op("Where", [g.op("LessOrEqual", [kpos, qpos]), g.scalar(0.0), g.scalar(_MASKED)])

    # ---- graphs
    def decoder_graph(self) -> Graph:
        """The decoder with a KV cache: logits and present keys/values for ``input_ids``."""
        m, encdec = self.m, self.m.family == "encoder_decoder"
        g = Graph("decoder")
        g.inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]))
        if encdec:
            g.inputs.append(helper.make_tensor_value_info("encoder_attention_mask", TensorProto.INT64,
                                                          ["batch", "encoder_sequence"]))
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
        x = self.embed(g, table, "input_ids", m.decoder_dim, past_len)
        causal = self.causal_bias(g, "input_ids", past_len)
        cross_bias = {}
        vocab = m.embed.weight.shape[0]
        for i, layer in enumerate(m.decoder_layers):
            name = f"decoder.{i}"
            h, k, v = self.self_attention(g, self.layer_norm(g, x, layer.ln1, f"{name}.ln1"), layer.self_attn,
                                          f"{name}.self_attn", past[i], causal)
            g.op("Identity", [k], [f"present.{i}{kind}.key"])
            g.op("Identity", [v], [f"present.{i}{kind}.value"])
            a = layer.self_attn
            g.outputs += [_float_input(f"present.{i}{kind}.{t}", ["batch", a.heads, "total_sequence", a.head_dim])
                          for t in ("key", "value")]
            x = g.op("Add", [x, h])
            if encdec:
                n_cross = layer.cross_layers
                if n_cross not in cross_bias:
                    mask = "encoder_attention_mask"
                    if n_cross > 1:
                        mask = g.op("Tile", [mask, g.ints([1, n_cross])])
                    cross_bias[n_cross] = self.key_bias(g, mask)
                c = layer.cross_attn
                cq = self.heads(g, self.linear(g, self.layer_norm(g, x, layer.ln_cross, f"{name}.ln_cross"),
                                               c.q, f"{name}.cross_attn.q"), c)
                x = g.op("Add", [x, self.attend(g, cq, cross[i][0], cross[i][1], cross_bias[n_cross], c,
                                                f"{name}.cross_attn")])
            x = g.op("Add", [x, self.ffn(g, self.layer_norm(g, x, layer.ln2, f"{name}.ln2"), layer.ffn, f"{name}.ffn")])
        x = self.layer_norm(g, x, m.decoder_norm, "decoder_norm")
        out_t = g.op("Transpose", [self.columns(g, table, m.decoder_dim)], perm=[1, 0])
        g.op("MatMul", [x, out_t], ["logits"])
        g.outputs.insert(0, _float_input("logits", ["batch", "sequence", vocab]))
        return g

    def encoder_graph(self) -> Graph:
        """The encoder: ``input_ids`` -> cross-attention keys/values of every decoder layer."""
        m = self.m
        g = Graph("encoder")
        g.inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "encoder_sequence"]))
        mask = g.op("Cast", [g.op("Not", [g.op("Equal", ["input_ids", g.scalar(int(m.pad_id), np.int64)])])],
                    to=TensorProto.INT64)
        bias = self.key_bias(g, mask)
        x = self.embed(g, self.table(g), "input_ids", m.encoder_dim, g.scalar(0, np.int64))
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
        states = [self.layer_norm(g, s, m.encoder_norm, "encoder_norm") for s in states]
        for i, layer in enumerate(m.decoder_layers):
            c, n_cross = layer.cross_attn, layer.cross_layers
            mem = g.op("Concat", states[-n_cross:], axis=1) if n_cross > 1 else states[-1]
            mq = self.act_quant(g, mem, c.k, f"decoder.{i}.cross_attn.k")
            for t, mod in (("key", c.k), ("value", c.v)):
                out = f"present.{i}.encoder.{t}"
                g.op("Identity", [self.heads(g, self.linear(g, mq, mod, f"decoder.{i}.cross_attn.{t[0]}", True), c)],
                     [out])
                g.outputs.append(_float_input(out, ["batch", c.heads, f"encoder_sequence_{n_cross}", c.head_dim]))
        return g


def build_graphs(model: Transformer) -> dict[str, onnx.ModelProto]:
    """{file name: model} of ``model``: one decoder graph, plus the encoder graph for an
    encoder-decoder."""
    b = _Builder(model)
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
