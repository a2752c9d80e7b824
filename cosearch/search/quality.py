"""Task quality of sub-networks: measured on the supernet, predicted, or synthetic.

A quality source maps a list of archs to ``{"loss": array[, "bleu": array]}`` (lower loss
is better). ``CachedQuality`` wraps any source with a cache keyed by ``arch.digest()``: the
search seeds it from the study's finished trials, so a resumed study never measures an
arch twice. ``SupernetQuality`` loads the trained supernet once and evaluates many archs
with inherited weights on a fixed validation subset. ``SyntheticQuality`` is a cheap,
deterministic stand-in (bigger and wider is better, low bits cost quality) that lets the
search loop be tested and benchmarked without a trained supernet.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from ..errors import UserError
from ..space import Arch, SearchSpace
from .params import arch_digest

#: Loss added per layer by low weight / activation bits in the synthetic model (assumed,
#: shaped after published quantisation-aware-training gaps: ternary and 2-bit hurt most).
_W_PENALTY = {1: 0.30, 1.58: 0.18, 2: 0.11, 3: 0.05, 4: 0.02, 8: 0.003, 16: 0.0}
_A_PENALTY = {4: 0.06, 8: 0.004, 16: 0.0}


class QualitySource(Protocol):
    """Anything that scores archs: ``source(archs) -> {"loss": array, ...}``."""

    name: str

    def __call__(self, archs: Sequence[Arch]) -> dict[str, np.ndarray]: ...


class SyntheticQuality:
    """A deterministic stand-in for validation loss (no training, no torch).

    loss = 6 - 0.35 * ln(capacity / 1e4) + per-layer bit penalties + a fixed per-arch
    jitter of +-``noise`` (from the arch digest, so it is the same in every process).
    """

    name = "synthetic"

    def __init__(self, space: SearchSpace, noise: float = 0.02):
        self.space, self.noise = space, noise

    def loss(self, arch: Arch) -> float:
        cap, pen = 0.0, 0.0
        for side in self.space.sides():
            layers = arch.encoder if side == "encoder" else arch.decoder
            e = arch.encoder_embed_dim if side == "encoder" else arch.decoder_embed_dim
            for la in layers:
                a = self.space.attn_dim(side, la.heads)
                # more heads help a little at equal width; deeper layers give diminishing returns
                cap += e * (la.ffn_dim + 2 * a) * (1 + 0.05 * math.log2(la.heads))
                pen += _W_PENALTY[la.weight_bits] + _A_PENALTY[la.act_bits]
        depth = len(arch.decoder) + len(arch.encoder)
        pen /= max(depth, 1) ** 0.5
        h = int(hashlib.sha1(arch_digest(arch).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return 6.0 - 0.35 * math.log(max(cap, 1.0) / 1e4) + pen + self.noise * (2 * h - 1)

    def __call__(self, archs: Sequence[Arch]) -> dict[str, np.ndarray]:
        return {"loss": np.array([self.loss(a) for a in archs], dtype=np.float64)}


class PredictedQuality:
    """A fitted quality predictor used as the quality source (no measurement at all)."""

    def __init__(self, space: SearchSpace, predictor):
        self.space, self.predictor = space, predictor
        self.name = f"predicted:{getattr(predictor, 'name', 'model')}"

    def __call__(self, archs: Sequence[Arch]) -> dict[str, np.ndarray]:
        return {"loss": self.predictor.predict(self.space.encode_many(list(archs)))}


class SupernetQuality:
    """Validation loss (and BLEU when asked) with inherited supernet weights.

    The supernet and a fixed validation subset (the first ``max_batches`` batches of
    ``split``, in file order; BLEU on its first ``bleu_sentences`` sentences) are loaded
    once; each call extracts every arch (exactly the supernet's function) and evaluates it.
    """

    def __init__(self, run_dir: str | Path, split: str = "valid", max_batches: int = 20, bleu: bool = False,
                 bleu_sentences: int = 200, beam: int = 1, max_tokens: int = 4096, device: str = "cpu"):
        import itertools

        import torch

        from .. import evaluate as ev  # torch only here, and only when measuring
        from ..train import check_tokenizer, load_task_data
        self.ev, self.torch = ev, torch
        self.split, self.bleu, self.beam = split, bleu, beam
        self.name = f"supernet:{split}:{max_batches}"
        self.device = torch.device(device)
        self.run = ev.load_run(run_dir, self.device)
        td = load_task_data(self.run.config, self.run.run_dir)
        check_tokenizer(self.run.run_dir, td.tokenizer, self.run.space)
        if td.task == "translation":
            it = td.batches(split, max_tokens=max_tokens, shuffle=False, repeat=False)
        else:
            block = self.run.config["train"]["max_len"]
            it = td.batches(split, batch_size=max(1, max_tokens // block), block=block, shuffle=False, repeat=False)
        self.batches = list(itertools.islice(it, max_batches))
        if not self.batches:
            raise UserError(f"{run_dir}: split {split!r} has no validation batches to measure quality on")
        self.td = td
        if bleu:
            if td.task != "translation":
                raise UserError("--objectives bleu needs a translation run; use quality (loss) for a language model")
            self.td_bleu = ev._head(td, split, bleu_sentences)
            self.refs = [tgt for _, tgt in self.td_bleu.text[ev._canon_split(split)]]

    def measure(self, arch: Arch) -> dict[str, float]:
        model = self.run.net.extract(arch).eval()
        tok = self.td.tokenizer
        loss, _ = self.ev.eval_loss(model, self.batches, tok.pad_id, tok.vocab_size, self.device)
        out = {"loss": loss}
        if self.bleu:
            hyps = self.ev.translate(model, self.td_bleu, self.split, self.device, beam=self.beam,
                                     limit=self.run.space.spec.max_positions)
            out["bleu"] = self.ev.bleu(hyps, self.refs)
        return out

    def __call__(self, archs: Sequence[Arch]) -> dict[str, np.ndarray]:
        rows = [self.measure(a) for a in archs]
        return {k: np.array([r[k] for r in rows], dtype=np.float64) for k in rows[0]} if rows else {"loss": np.zeros(0)}


class CachedQuality:
    """Memoises a quality source by arch digest; only unseen archs reach the source."""

    def __init__(self, source: QualitySource):
        self.source = source
        self.name = source.name
        self.cache: dict[str, dict[str, float]] = {}
        self.measured = 0  # archs the source actually evaluated

    def seed(self, digest: str, metrics: dict[str, float]) -> None:
        self.cache.setdefault(digest, dict(metrics))

    def __call__(self, archs: Sequence[Arch]) -> dict[str, np.ndarray]:
        keys = [arch_digest(a) for a in archs]
        todo: dict[str, Arch] = {}
        for k, a in zip(keys, archs):
            if k not in self.cache and k not in todo:
                todo[k] = a
        if todo:
            got = self.source(list(todo.values()))
            self.measured += len(todo)
            for i, k in enumerate(todo):
                self.cache[k] = {m: float(v[i]) for m, v in got.items()}
        names = self.cache[keys[0]].keys() if keys else ("loss",)
        return {m: np.array([self.cache[k][m] for k in keys], dtype=np.float64) for m in names}
