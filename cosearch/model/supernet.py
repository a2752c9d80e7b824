"""The mixed-precision mixture-of-supernets (MoS) and sub-network extraction.

``Supernet(space)`` holds the largest weights (m experts where the space asks for MoS),
one router per MoS layer, per-bit weight quantizers and activation quantizers.
``set_arch(arch)`` selects a sub-network; ``extract(arch)`` returns a plain
``Transformer`` of exactly that arch's sizes with the mixture collapsed.

``Supernet(space, arch=a)`` is the *standalone* model of one arch: the same parts
(quantizers, dropout, forward code) built at exactly that arch's shapes and without
experts, so training it from scratch uses the supernet's recipe unchanged (HAT's
retraining step, and the reference for the supernet-vs-standalone gap).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .modules import (ArchCode, Attention, DecoderLayer, ElasticEmbedding, ElasticLayerNorm,
                      ElasticLinear, EncoderLayer, FeedForward, PlainEmbedding, QLinear, Transformer)
from ..space import Arch, LayerArch, SearchSpace

ATTENTION_ROLES = ("q", "k", "v", "out")


def scaled_dropout(space: SearchSpace, side: str, width: int) -> float:
    """HAT scales dropout with the active width: ``dropout * width / widest``."""
    return space.spec.dropout * width / space.max_embed_dim(side)


def check_model_support(space: SearchSpace) -> None:
    """Refuse space settings the model does not build (``UserError`` names the fix)."""
    if space.is_encdec and not space.spec.share_embeddings:
        raise UserError(f"space {space.name}: share_embeddings: false is not supported by the model "
                        "(encoder and decoder always share one token table); set share_embeddings: true")


def _shape_key(arch: Arch):
    """An arch without its bit-widths: what fixes the tensor shapes."""
    def strip(la):
        return (la.ffn_dim, la.heads, la.cross_layers)
    return (arch.encoder_embed_dim, arch.decoder_embed_dim, tuple(map(strip, arch.encoder)),
            tuple(map(strip, arch.decoder)))


def _layer(space: SearchSpace, side: str, make_linear, make_norm, embed: int, enc_embed: int,
           ffn: int, heads: int, cross_layers: int):
    """One encoder or decoder layer; ``make_linear(role, in, out)`` and ``make_norm(dim)``
    decide whether parts are elastic or plain."""
    a, hd = space.attn_dim(side, heads), space.head_dim(side, heads)

    def attn(prefix, kv_in):
        return Attention(make_linear(f"{prefix}q", embed, a), make_linear(f"{prefix}k", kv_in, a),
                         make_linear(f"{prefix}v", kv_in, a), make_linear(f"{prefix}out", a, embed), heads, hd)

    ffn_mod = FeedForward(make_linear("fc1", embed, ffn), make_linear("fc2", ffn, embed))
    if side == "encoder":
        return EncoderLayer(make_norm(embed), attn("", embed), make_norm(embed), ffn_mod)
    if space.is_encdec:
        return DecoderLayer(make_norm(embed), attn("", embed), make_norm(embed), ffn_mod,
                            make_norm(embed), attn("cross_", enc_embed), cross_layers)
    return DecoderLayer(make_norm(embed), attn("", embed), make_norm(embed), ffn_mod)


class Supernet(nn.Module):
    """Weight-sharing supernet over ``space``. Call as the arch's model:
    ``net(src, tgt_in, arch=a)`` (encoder-decoder) or ``net(tokens, arch=a)``."""

    def __init__(self, space: SearchSpace, pad_id: int = 0, arch: Arch | None = None):
        super().__init__()
        check_model_support(space)
        self.space, self.pad_id = space, pad_id
        #: the one arch of a standalone model (None: a supernet over the whole space)
        self.fixed_arch = None if arch is None else space.validate_arch(arch)
        s, q, mos = space.spec, space.spec.quantization, space.spec.mos
        self.arch_code = ArchCode()
        code_size = space.encoding_size()
        mixed_roles = {"fc1", "fc2"} | ({f"{p}{r}" for p in ("", "cross_") for r in ATTENTION_ROLES}
                                         if "attention" in mos.sublayers else set())

        def elastic_linear(role, i, o):
            use_mos = mos.mode != "none" and role in mixed_roles and arch is None
            return ElasticLinear(i, o, weight_bits=q.weight_bits, act_bits=q.act_bits,
                                 experts=mos.experts if use_mos else 1, mos=mos.mode if use_mos else "none",
                                 router_hidden=mos.router_hidden, arch_code=self.arch_code, code_size=code_size)

        if arch is None:
            width = {side: space.max_embed_dim(side) for side in space.sides()}
        else:
            width = {side: getattr(arch, f"{side}_embed_dim") for side in space.sides()}
        enc = width.get("encoder", 0)

        def side_layers(side):
            if arch is not None:  # exactly the arch's layers
                return [_layer(space, side, elastic_linear, ElasticLayerNorm, width[side], enc,
                               la.ffn_dim, la.heads, la.cross_layers) for la in getattr(arch, side)]
            sd = space.side(side)
            return [_layer(space, side, elastic_linear, ElasticLayerNorm, width[side], enc,
                           max(sd.ffn_dim), max(sd.heads), max(sd.cross_layers or [0]))
                    for _ in range(max(sd.layers))]

        enc_layers = side_layers("encoder") if space.is_encdec else []
        self.model = Transformer(
            s.family, ElasticEmbedding(s.vocab_size, max(width.values()), q.embedding_bits),
            enc_layers, side_layers("decoder"),
            ElasticLayerNorm(enc) if space.is_encdec else None,
            ElasticLayerNorm(width["decoder"]), pad_id=pad_id,
            encoder_dim=enc, decoder_dim=width["decoder"], dropout=s.dropout)
        self.arch: Arch | None = None
        self.set_arch(space.largest() if arch is None else self.fixed_arch)

    # ---- selecting a sub-network
    def set_arch(self, arch: Arch) -> None:
        if arch == self.arch:
            return
        if self.fixed_arch is not None and _shape_key(arch) != _shape_key(self.fixed_arch):
            raise UserError("this is a standalone model of one arch; it runs only that arch (at any "
                            "bit-widths), not other sizes")
        sp, m = self.space, self.model
        self.arch_code.set(sp.encode(arch))
        m.encoder_dim, m.decoder_dim = arch.encoder_embed_dim, arch.decoder_embed_dim
        m.n_encoder, m.n_decoder = len(arch.encoder), len(arch.decoder)
        m.embed.dim = max(arch.encoder_embed_dim, arch.decoder_embed_dim)
        m.dropout = scaled_dropout(sp, "decoder", arch.decoder_embed_dim)
        if sp.is_encdec:
            m.encoder_norm.dim = arch.encoder_embed_dim
        m.decoder_norm.dim = arch.decoder_embed_dim
        m.max_cross = max([la.cross_layers for la in arch.decoder] or [0])
        for side, layers, mods in (("encoder", arch.encoder, m.encoder_layers), ("decoder", arch.decoder, m.decoder_layers)):
            e = arch.encoder_embed_dim if side == "encoder" else arch.decoder_embed_dim
            p = scaled_dropout(sp, side, e) if layers else 0.0
            for la, mod in zip(layers, mods):
                self._configure_layer(mod, side, la, e, arch.encoder_embed_dim, p)
        self.arch = arch

    def _configure_layer(self, mod, side: str, la: LayerArch, e: int, e_enc: int, p: float) -> None:
        sp = self.space
        a, hd = sp.attn_dim(side, la.heads), sp.head_dim(side, la.heads)
        bits = (la.weight_bits, la.act_bits)
        attns = [(mod.attn if side == "encoder" else mod.self_attn, e)]
        if side == "decoder" and mod.cross_attn is not None:
            attns.append((mod.cross_attn, e_enc))
            mod.ln_cross.dim = e
            mod.cross_layers = la.cross_layers
        for att, kv_in in attns:
            att.heads, att.head_dim = la.heads, hd
            att.q.configure(e, a, *bits)
            att.k.configure(kv_in, a, *bits)
            att.v.configure(kv_in, a, *bits)
            att.out.configure(a, e, *bits)
        mod.ffn.fc1.configure(e, la.ffn_dim, *bits)
        mod.ffn.fc2.configure(la.ffn_dim, e, *bits)
        mod.ln1.dim = mod.ln2.dim = e
        mod.dropout = mod.ffn.dropout = p

    def forward(self, *inputs: torch.Tensor, arch: Arch | None = None, **masks) -> torch.Tensor:
        if arch is not None:
            self.set_arch(arch)
        return self.model(*inputs, **masks)

    def encode(self, src, arch: Arch | None = None):
        if arch is not None:
            self.set_arch(arch)
        return self.model.encode(src)

    def decode_step(self, tokens, memory, cache, step, arch: Arch | None = None, **masks):
        if arch is not None:
            self.set_arch(arch)
        return self.model.decode_step(tokens, memory, cache, step, **masks)

    def elastic_linears(self):
        return [m for m in self.modules() if isinstance(m, ElasticLinear)]

    def router_parameters(self):
        return [p for m in self.elastic_linears() if m.router is not None for p in m.router.parameters()]

    # ---- extraction
    @torch.no_grad()
    def extract(self, arch: Arch) -> Transformer:
        """A standalone model of this arch: no router, no unused rows, expert mixture
        computed once, weights stored fake-quantized (scales kept for export).

        The model is built without tensors and each one is set once from the supernet's
        (new tensors on the supernet's device, never views of its weights): no zeros
        written and overwritten, one scale computation per weight. A search measures
        thousands of archs, each extracted once, so these host ops count."""
        self.set_arch(arch)
        sub = build_standalone(self.space, arch, pad_id=self.pad_id, empty=True)
        sup_mods = dict(self.model.named_modules())
        for name, mod in sub.named_modules():
            src = sup_mods[name]
            if isinstance(mod, QLinear):
                q, scale = src.wq.frozen(src.mixed_weight(), src.weight_bits)
                mod.weight = nn.Parameter(q)
                if src.bias is not None:
                    mod.bias = nn.Parameter(_copy(src.bias[: mod.out_features]))
                if scale is not None:
                    mod.weight_scale = scale
                _copy_act_quantizer(src.aq, mod.aq)
            elif isinstance(mod, ElasticLayerNorm):
                mod.weight = nn.Parameter(_copy(src.weight[: mod.dim]))
                mod.bias = nn.Parameter(_copy(src.bias[: mod.dim]))
            elif isinstance(mod, PlainEmbedding):
                q, scale = src.wq.frozen(src.weight[:, : mod.dim], src.bits)
                mod.weight = nn.Parameter(q)
                if scale is not None:
                    mod.weight_scale = scale
        sub.train(self.training)
        return sub


@torch.no_grad()
def expert_specialisation(net: Supernet, probes: list[Arch]) -> dict[str, float]:
    """How far the mixture has moved from one shared weight, averaged over MoS linears.

    ``expert_dist``: mean pairwise ``||E_i - E_j|| / mean ||E||`` of the experts (0: all
    experts equal, i.e. the plain supernet); ``router_spread``: std across the ``probes``
    archs of the mixture weights, averaged over experts (and neurons), (0: the router
    ignores the arch). Empty for a supernet without MoS.
    """
    mixed = [m for m in net.elastic_linears() if m.router is not None]
    if not mixed:
        return {}
    codes = torch.as_tensor(net.space.encode_many(probes), device=mixed[0].weight.device)
    dists, spreads = [], []
    for m in mixed:
        e = m.weight.float().flatten(1)
        scale = e.norm(dim=1).mean().clamp_min(1e-12)
        pairs = torch.pdist(e) / scale
        dists.append(float(pairs.mean()))
        logits = m.router(codes).float()
        alpha = torch.softmax(logits.view(len(probes), -1, m.experts), dim=-1)
        spreads.append(float(alpha.std(dim=0).mean()) if len(probes) > 1 else 0.0)
    return {"expert_dist": sum(dists) / len(dists), "router_spread": sum(spreads) / len(spreads)}


def _copy(t: torch.Tensor) -> torch.Tensor:
    """A float32 copy of a slice of a supernet tensor (never a view: the sub-network may train)."""
    return t.to(torch.float32, copy=True)


def _copy_act_quantizer(src: nn.Module, dst: nn.Module) -> None:
    """Learned activation clipping of the chosen bit-width travels with the layer (a copy,
    on the supernet's device)."""
    for key in dst.log_clip:
        dst.log_clip[key] = nn.Parameter(_copy(src.log_clip[key]))


def build_standalone(space: SearchSpace, arch: Arch, pad_id: int = 0, empty: bool = False) -> Transformer:
    """A plain model with exactly the arch's shapes (weights zero): what an exported
    ``model.safetensors`` loads into. ``empty``: weights, biases and scales left None (and
    activation clips at init): ``extract`` sets every one."""
    def maker(la: LayerArch):
        def make_linear(role, i, o):
            return QLinear(i, o, weight_bits=la.weight_bits, act_bits=la.act_bits, empty=empty)
        return make_linear

    def make_norm(dim: int) -> ElasticLayerNorm:
        return ElasticLayerNorm(dim, empty=empty)

    def layers(side):
        la_list = arch.encoder if side == "encoder" else arch.decoder
        e = arch.encoder_embed_dim if side == "encoder" else arch.decoder_embed_dim
        out = []
        for la in la_list:
            mod = _layer(space, side, maker(la), make_norm, e, arch.encoder_embed_dim,
                         la.ffn_dim, la.heads, la.cross_layers)
            mod.dropout = mod.ffn.dropout = scaled_dropout(space, side, e)
            out.append(mod)
        return out

    width = max(arch.encoder_embed_dim, arch.decoder_embed_dim)
    return Transformer(
        space.family, PlainEmbedding(space.vocab_size, width, space.spec.quantization.embedding_bits, empty=empty),
        layers("encoder") if space.is_encdec else [], layers("decoder"),
        make_norm(arch.encoder_embed_dim) if space.is_encdec else None,
        make_norm(arch.decoder_embed_dim), pad_id=pad_id, encoder_dim=arch.encoder_embed_dim,
        decoder_dim=arch.decoder_embed_dim,
        dropout=scaled_dropout(space, "decoder", arch.decoder_embed_dim), max_positions=space.spec.max_positions)
