"""The whole sandwich compiled: every member's attention and FFN blocks run through
compiled graphs at width buckets (``cosearch.model.buckets``), so a random member compiles
nothing new once its blocks' bucket shapes have been seen.

Compiling the whole supernet forward (``compiled_members.MemberForward``) gives a graph per
arch: depth, every layer's widths and bit-widths are Python numbers in it. Here the unit
of compilation is one attention or FFN block. ``configure_buckets`` sets the arch, then
rounds each active layer's head count and FFN width up to the plan's bucket and hands the
exact sizes and bit-widths to the layer as tensors; a block then compiles one graph per
(block kind, embedding width(s), bucket) -- bit-widths, depths and the sizes inside a bucket
are not part of it. The embeddings, layer norms, residual additions and the output
projection stay eager (a few kernels per layer). Batch and length are dynamic, inputs are
padded to a multiple of 8 as for the fixed members.

For the multi30k space with the default plan (FFN widths 1024/2048, 4/8 heads) that is at
most 6 FFN, 6 encoder self-attention, 6 decoder self-attention and 18 cross-attention
graphs (36) for the whole run; the graphs are counted in
``fused.compile_counts()["bucketed_members"]``.
"""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from .buckets import BucketPlan, linear_bucket
from .compiled_members import pad_length
from .fused import compile_own_code
from .modules import Attention, EncoderLayer, FeedForward

COUNT_AS = "bucketed_members"


def _bucket(lin: nn.Module, rows: int, cols: int, code: Tensor | None, slot: str) -> None:
    lin.bucket = linear_bucket(lin, rows, cols, code, slot)
    lin.out_features, lin.in_features = rows, cols


def _attentions(layer: nn.Module) -> list:
    if isinstance(layer, EncoderLayer):
        return [layer.attn]
    return [a for a in (layer.self_attn, layer.cross_attn) if a is not None]


def configure_buckets(net: nn.Module, arch, plan: BucketPlan) -> None:
    """Select ``arch`` on the supernet ``net`` with every active layer in its bucket."""
    net.set_arch(arch)
    m = net.model
    code = net.arch_code.tensor(net.model.embed.weight.device)
    for side, layers, mods in (("encoder", arch.encoder, m.encoder_layers), ("decoder", arch.decoder, m.decoder_layers)):
        for la, layer in zip(layers, mods):
            for att in _attentions(layer):
                # capped at the layer's own size (a standalone model has no larger rows)
                heads = min(plan.heads_bucket(side, la.heads), att.q.out_max // att.head_dim)
                rows = heads * att.head_dim
                att.heads = heads
                for slot in ("q", "k", "v"):
                    lin = getattr(att, slot)
                    _bucket(lin, rows, lin.in_features, code, slot)
                _bucket(att.out, att.out.out_features, rows, code, "out")
            ffn = min(plan.ffn_bucket(side, la.ffn_dim), layer.ffn.fc1.out_max)
            _bucket(layer.ffn.fc1, ffn, layer.ffn.fc1.in_features, code, "fc1")
            _bucket(layer.ffn.fc2, layer.ffn.fc2.out_features, ffn, code, "fc2")
    net.arch = None  # the modules hold bucket sizes now: the next set_arch must rewrite them


def _run_block(block: nn.Module, *args, **kwargs) -> Tensor:
    return type(block).forward(block, *args, **kwargs)


def _linears(block: nn.Module) -> tuple:
    return (block.fc1, block.fc2) if isinstance(block, FeedForward) else (block.q, block.k, block.v, block.out)


def _signature(block: nn.Module, kwargs: dict) -> tuple:
    """What a block's graph is specialised on besides tensor shapes: its kind, mode and
    bucket shape (Dynamo still guards; this picks the code object, one graph each)."""
    device = block.fc1.weight.device if isinstance(block, FeedForward) else block.q.weight.device
    amp = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    own = (block.dropout,) if isinstance(block, FeedForward) else (block.heads, block.head_dim)
    call = tuple(sorted((k, v if isinstance(v, bool) else v is None) for k, v in kwargs.items()))
    return (type(block).__name__, block.training, torch.is_grad_enabled(), amp, own, call,
            tuple((lin.in_features, lin.out_features) for lin in _linears(block)))


class BucketedForward:
    """Runs sandwich members (any role) with their attention and FFN blocks compiled per
    bucket shape (a ``forward`` for ``train.sandwich_step``). ``backend`` is
    ``torch.compile``'s (tests use ``aot_eager``: no compiler needed)."""

    def __init__(self, net: nn.Module, plan: BucketPlan | None = None, backend="inductor"):
        self.net, self.backend = net, backend
        self.plan = plan or BucketPlan.from_space(net.space)
        self._compiled: dict = {}
        for block in net.model.modules():
            if isinstance(block, (Attention, FeedForward)):
                self._route(block)

    def _route(self, block: nn.Module) -> None:
        """Send ``block``'s calls to the compiled graph of its signature while it is in a
        bucket (any other call runs the plain forward)."""
        plain, first = type(block).forward, _linears(block)[0]

        def routed(x, *args, **kwargs):
            if first.bucket is None:
                return plain(block, x, *args, **kwargs)
            for t in (x, kwargs.get("memory")):  # batch and length
                if t is not None:
                    torch._dynamo.maybe_mark_dynamic(t, 0)
                    torch._dynamo.maybe_mark_dynamic(t, 1)
            mask = kwargs.get("key_mask")
            if mask is not None:  # (B, 1, 1, S) or (B, 1, T, S): every dim but the singletons
                for d in range(mask.dim()):
                    if mask.shape[d] != 1:
                        torch._dynamo.maybe_mark_dynamic(mask, d)
            return self._graph(_signature(block, kwargs))(block, x, *args, **kwargs)
        block.forward = routed  # an instance attribute: not a submodule, not in the state dict

    def _graph(self, key: tuple):
        fn = self._compiled.get(key)
        if fn is None:
            # named after the signature: Dynamo keeps what it learnt about a function's
            # shapes (automatic dynamic) by file, line and name, so the same name for another
            # shape would make a static width dynamic and compile a second graph
            name = f"bucket_{key[0]}_{hashlib.sha1(repr(key).encode()).hexdigest()[:12]}"
            fn = self._compiled[key] = compile_own_code(_run_block, name, count_as=COUNT_AS, backend=self.backend)
        return fn

    def __call__(self, model: nn.Module, member, inputs: tuple) -> Tensor:
        configure_buckets(self.net, member.arch, self.plan)
        # tokens padded with the pad id; a decoder-only batch's attention mask (and position
        # ids) after them with 0 (padding)
        tokens = 2 if self.net.space.is_encdec else 1
        padded = [pad_length(x, self.net.pad_id if i < tokens else 0).contiguous() for i, x in enumerate(inputs)]
        return self.net.model(*padded)[:, : inputs[tokens - 1].shape[1]]
