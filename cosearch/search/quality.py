"""Task quality of sub-networks: measured on the supernet, predicted, or synthetic.

A quality source maps a list of archs to ``{"loss": array[, "bleu": array]}`` (lower loss
is better), optionally with standard errors (``loss_se``, ``bleu_se``). A source that can
measure again on fresh data takes ``repeat=r`` (r = 0 is its standard measurement; r >= 1
uses other validation batches or sentences) and says how many it has in ``repeats``: the
search measures front candidates again (``search.repeats``). ``CachedQuality`` wraps any source with a cache keyed by ``arch.digest()``: the
search seeds it from the study's finished trials, so a resumed study never measures an
arch twice. ``SupernetQuality`` loads the trained supernet once and evaluates many archs
with inherited weights on a fixed validation subset. ``SyntheticQuality`` is a cheap,
deterministic stand-in (bigger and wider is better, low bits cost quality) that lets the
search loop be tested and benchmarked without a trained supernet.
"""
from __future__ import annotations

import hashlib
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
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


def call_source(source, archs: Sequence[Arch], repeat: int = 0) -> dict[str, np.ndarray]:
    """``source(archs)``, or its measurement number ``repeat`` (fresh data)."""
    if repeat == 0:
        return source(archs)
    have = getattr(source, "repeats", 1)  # a source without ``repeats`` measures once
    if repeat >= have:
        raise ValueError(f"{getattr(source, 'name', source)} has no measurement {repeat} (repeats={have})")
    return source(archs, repeat=repeat)


class SyntheticQuality:
    """A deterministic stand-in for validation loss (no training, no torch).

    loss = 6 - 0.35 * ln(capacity / 1e4) + per-layer bit penalties + a fixed per-arch
    jitter of +-``noise`` (from the arch digest, so it is the same in every process).
    """

    name = "synthetic"
    #: a stand-in: its rows are labelled ``synthetic``, never ``measured`` (any source may say so)
    synthetic = True

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


class NoisySynthetic:
    """The synthetic loss plus measurement noise: measurement ``r`` of an arch adds
    ``sigma * z(arch, r)`` with z standard normal, fixed by the arch digest and r (the same in
    every process and run), so a repeat is a fresh, independent draw, as a measurement on
    other validation batches is. ``true_loss`` gives the noise-free value (for scoring)."""

    synthetic = True

    def __init__(self, space: SearchSpace, sigma: float, repeats: int = 8):
        self.base, self.sigma, self.repeats = SyntheticQuality(space), float(sigma), int(repeats)
        self.name = f"synthetic-noise{sigma:g}"

    def noise(self, arch: Arch, repeat: int = 0) -> float:
        tag = ("n" if repeat == 0 else f"n{repeat}:") + arch_digest(arch)  # r=0: search_hv's earlier noise
        return float(np.random.default_rng(int(hashlib.sha1(tag.encode()).hexdigest()[:12], 16)).standard_normal())

    def true_loss(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.base(archs)["loss"]

    def __call__(self, archs: Sequence[Arch], repeat: int = 0) -> dict[str, np.ndarray]:
        archs = list(archs)
        z = np.array([self.noise(a, repeat) for a in archs])
        return {"loss": self.true_loss(archs) + self.sigma * z, "loss_se": np.full(len(archs), self.sigma)}


class PredictedQuality:
    """A fitted quality predictor used as the quality source (no measurement at all)."""

    def __init__(self, space: SearchSpace, predictor):
        self.space, self.predictor = space, predictor
        self.name = f"predicted:{getattr(predictor, 'name', 'model')}"

    def __call__(self, archs: Sequence[Arch]) -> dict[str, np.ndarray]:
        return {"loss": self.predictor.predict(self.space.encode_many(list(archs)))}


#: tokens per merged forward pass when measuring on CUDA (``MeasureSettings.forward_tokens``)
GPU_FORWARD_TOKENS = 16384
#: environment variables that set ``forward_tokens`` / ``forward_cost`` of a search's
#: measurements (``forward_settings_from_env``), so a GPU benchmark can try another merge
#: through the command users run; search.json records what was used
FORWARD_TOKENS_ENV, FORWARD_COST_ENV = "COSEARCH_FORWARD_TOKENS", "COSEARCH_FORWARD_COST"


def forward_settings_from_env() -> dict[str, int | None]:
    """``MeasureSettings`` fields from ``$COSEARCH_FORWARD_TOKENS`` / ``$COSEARCH_FORWARD_COST``
    (None where unset), read once by the process that starts a search: its workers get the
    values in their settings, never from an environment they may not share."""
    return {"forward_tokens": _positive_env(FORWARD_TOKENS_ENV), "forward_cost": _positive_env(FORWARD_COST_ENV)}


def _positive_env(name: str) -> int | None:
    """``$name`` as a positive integer, None when unset or empty (``UserError`` otherwise)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"${name}={raw!r}: give a positive whole number of token positions, or unset it")
    return value


@dataclass(frozen=True)
class MeasureSettings:
    """How a supernet measures quality: the fixed validation subset and the device."""

    split: str = "valid"
    max_batches: int = 20
    max_tokens: int = 4096          # tokens per validation batch
    bleu: bool = False
    bleu_sentences: int = 200       # BLEU on the first N sentences of ``split``
    bleu_max_tokens: int = 16384    # source tokens per decoding batch (big on a GPU)
    device: str = "cpu"
    repeats: int = 1                # measurements on disjoint data: batch (sentence) blocks r*N .. (r+1)*N-1
    #: TF32 matmuls while measuring on CUDA (only then; restored after each measurement, so
    #: training in the same process keeps its own setting). On an H200 TF32 moved the loss of
    #: 40 random multi30k archs by <= 6.6e-5 (losses ~3.5, Kendall tau 1.0 vs fp32) and the
    #: fp32 GEMMs are what bounds several workers sharing one GPU.
    tf32: bool = True
    #: tokens (rows x widest) per forward pass: the ``max_tokens`` batches of a measurement
    #: are evaluated in merged groups up to this size (the same rows and losses, summed in
    #: another order). None: GPU_FORWARD_TOKENS on CUDA, where a forward is ~1,700 ATen ops
    #: however few its tokens (a multi30k batch) and an H200 profile put half a measurement's
    #: GPU time outside the GEMMs; on CPU each batch stays one forward (compute-bound, bit-exact).
    forward_tokens: int | None = None
    #: the fixed cost of one forward, in token positions, that decides which batches merge
    #: (``merge_batches``); None: ``FORWARD_COST_POSITIONS``
    forward_cost: int | None = None
    #: steps of each arch's own training from the supernet's weights before it is measured
    #: (``training.finetune``, its default rate and batches; 0: inherited weights as they are)
    finetune_steps: int = 0

    @property
    def cost_per_forward(self) -> int:
        """The per-forward cost the merge weighs padding against (see ``forward_cost``)."""
        from ..data.batches import FORWARD_COST_POSITIONS
        return FORWARD_COST_POSITIONS if self.forward_cost is None else self.forward_cost

    @property
    def matmul(self) -> str:
        """The float32 matmul precision measurements use: ``tf32`` or ``fp32``."""
        return "tf32" if self.tf32 and self.device.startswith("cuda") else "fp32"

    @property
    def tokens_per_forward(self) -> int:
        """Tokens per forward pass of a loss measurement (see ``forward_tokens``)."""
        if self.forward_tokens is not None:
            return max(self.max_tokens, self.forward_tokens)
        return max(self.max_tokens, GPU_FORWARD_TOKENS) if self.device.startswith("cuda") else self.max_tokens


@dataclass(frozen=True)
class SupernetSpec:
    """A picklable recipe for a :class:`SupernetQuality` (what a worker process builds once)."""

    run_dir: str
    settings: MeasureSettings = MeasureSettings()

    @property
    def name(self) -> str:
        s = self.settings
        # a finetune trains in bf16 on CUDA and in fp32 on the CPU: other models, so the
        # device joins the name (without one, a search started on the CPU may resume on a GPU)
        tuned = f":finetune{s.finetune_steps}:{s.device.split(':')[0]}" if s.finetune_steps else ""
        return f"supernet:{s.split}:{s.max_batches}" + (f":bleu{s.bleu_sentences}" if s.bleu else "") + tuned

    def __call__(self) -> "SupernetQuality":
        return SupernetQuality(self.run_dir, self.settings)

    def for_worker(self, index: int) -> "SupernetSpec":
        """The recipe for measuring worker ``index`` (in its own process): on a machine with
        several GPUs, worker i measures on GPU i mod their number."""
        if self.settings.device != "cuda":
            return self
        import torch
        n = torch.cuda.device_count()
        if n <= 1:
            return self
        from dataclasses import replace
        return replace(self, settings=replace(self.settings, device=f"cuda:{index % n}"))


class SupernetQuality:
    """Validation loss (and greedy BLEU when asked) with inherited supernet weights.

    Everything fixed is prepared once: the supernet on ``settings.device``, the validation
    batches (the first ``max_batches`` of ``split`` in file order) already on the device, and
    the BLEU subset (its first ``bleu_sentences`` sentences) cut into a few large decoding
    batches. Each arch is then extracted on the device (exactly the supernet's function)
    and evaluated: one forward pass per loss batch (per merged group of batches on CUDA:
    ``forward_tokens``), batched greedy decoding with the KV
    cache for BLEU (sacrebleu on detokenised text).

    ``loss_se`` is the standard error of the loss from its spread over the batches. With
    ``settings.repeats`` = R, measurement r (``repeat=r``) uses batches r*N .. (r+1)*N-1 (N =
    ``max_batches``) and sentences r*M .. (r+1)*M-1 for BLEU; ``repeats`` says how many
    complete blocks the split holds (1 when it has no data for a second).
    """

    def __init__(self, run_dir: str | Path, settings: MeasureSettings = MeasureSettings()):
        import itertools

        import torch

        from ..training import evaluate as ev
        from ..training.train import check_tokenizer, load_task_data, to_device
        s = self.settings = settings
        self.ev, self.torch = ev, torch
        self.name = SupernetSpec(str(run_dir), settings).name
        if s.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("--gpu was given but torch sees no CUDA device; drop --gpu")
        self.device = torch.device(s.device)
        self.run = ev.load_run(run_dir, self.device)
        self._tuned: dict = {}  # arch digest -> finetuned model (``settings.finetune_steps``)
        td = load_task_data(self.run.config, self.run.run_dir)
        check_tokenizer(self.run.run_dir, td.tokenizer, self.run.space)
        if td.task == "translation":
            it = td.batches(s.split, max_tokens=s.max_tokens, shuffle=False, repeat=False)
        else:
            block = self.run.config["train"]["max_len"]
            it = td.batches(s.split, batch_size=max(1, s.max_tokens // block), block=block, shuffle=False,
                            repeat=False)
        every = [to_device(b, self.device) for b in itertools.islice(it, s.max_batches * max(1, s.repeats))]
        if not every:
            raise UserError(f"{run_dir}: split {s.split!r} has no validation batches to measure quality on")
        self.batch_sets = [every[i:i + s.max_batches] for i in range(0, len(every), s.max_batches)]
        if len(self.batch_sets) > 1 and len(self.batch_sets[-1]) < s.max_batches:
            self.batch_sets.pop()  # a short last block would measure with more noise than the others
        self.batches = self.batch_sets[0]
        self.repeats = len(self.batch_sets)
        self.td = td
        if s.bleu:
            if td.task != "translation":
                raise UserError("--objectives bleu needs a translation run; use quality (loss) for a language model")
            tok, limit = td.tokenizer, self.run.space.spec.max_positions
            self.bleu_sets = []  # (references, decoding batches) per measurement
            for r in range(self.repeats):
                sub = ev._head(td, s.split, s.bleu_sentences, start=r * s.bleu_sentences)
                refs = [tgt for _, tgt in sub.text[ev._canon_split(s.split)]]
                if r and len(refs) < s.bleu_sentences:
                    self.repeats = r  # no full block of sentences left for this measurement
                    break
                dec = []
                for b in sub.batches(s.split, max_tokens=s.bleu_max_tokens, shuffle=False, repeat=False):
                    src = b["src"].to(self.device)
                    dec.append((src, b["index"].tolist(), ev.decode_max_len(src, tok.pad_id, limit)))
                self.bleu_sets.append((refs, dec))
            self.refs, self.bleu_batches = self.bleu_sets[0]
            del self.batch_sets[self.repeats:]
        from ..data.batches import merge_batches
        self.merged_sets = [merge_batches(b, s.tokens_per_forward, td.tokenizer.pad_id, s.cost_per_forward)
                            for b in self.batch_sets]

    def model(self, arch: Arch):
        if self.settings.finetune_steps:
            return self._finetuned(arch)
        # extraction makes every tensor from the supernet's, on its device: no host copies
        return self.run.net.extract(arch).eval()

    def _finetuned(self, arch: Arch):
        """The arch after its finetune (trained in a copy of the supernet, so the next arch
        starts from the supernet's weights); the last few are kept, as a front candidate is
        measured again (``repeats``) with the same model on other batches."""
        from ..training.finetune import finetuned, recipe
        from ..training.finetune_settings import Finetune
        key = arch.digest()
        if key not in self._tuned:
            model = finetuned(self.run.net, arch, self.td, recipe(self.run.config),
                              Finetune(self.settings.finetune_steps), self.device).eval()
            self._tuned[key] = model
            while len(self._tuned) > 8:
                self._tuned.pop(next(iter(self._tuned)))
        return self._tuned[key]

    @contextmanager
    def precision(self):
        """TF32 CUDA matmuls inside, when ``settings.matmul`` says so; the previous setting
        after. Only the CUDA backend's flag is touched (the process-wide
        ``set_float32_matmul_precision`` would also switch CPU matmuls, and its getter raises
        once anything used the per-backend API); each search worker is its own process."""
        if self.settings.matmul != "tf32":
            yield
            return
        cuda = self.torch.backends.cuda.matmul
        name, value = ("fp32_precision", "tf32") if hasattr(cuda, "fp32_precision") else ("allow_tf32", True)
        old = getattr(cuda, name)
        setattr(cuda, name, value)
        try:
            yield
        finally:
            setattr(cuda, name, old)

    def measure(self, arch: Arch, repeat: int = 0) -> dict[str, float]:
        with self.precision():
            return self._measure(arch, repeat)

    def _measure(self, arch: Arch, repeat: int) -> dict[str, float]:
        model = self.model(arch)
        tok = self.td.tokenizer
        # per batch (the spread over batches gives the loss's standard error), one host sync
        batches, merged = self.batch_sets[repeat], self.merged_sets[repeat]
        if len(merged) < len(batches):  # fewer, larger forwards (on CUDA)
            sums, counts = self.ev.merged_batch_losses(model, merged, len(batches), tok.pad_id, tok.vocab_size,
                                                       self.device)
        else:
            sums, counts = self.ev.batch_losses(model, batches, tok.pad_id, tok.vocab_size, self.device)
        sums, ntok = sums.double().cpu().numpy(), counts.cpu().numpy().astype(np.float64)
        if not ntok.sum():
            raise UserError("the evaluation split has no tokens")
        losses = sums / np.maximum(ntok, 1)
        out = {"loss": float(sums.sum() / ntok.sum()), "loss_se": _weighted_se(losses, ntok)}
        if self.settings.bleu:
            refs, batches = self.bleu_sets[repeat]
            out["bleu"] = self.ev.bleu(self.translate(model, batches, len(refs)), refs)
        return out

    def translate(self, model, batches=None, n: int | None = None) -> list[str]:
        """Greedy translations of the BLEU subset (or of ``batches`` of ``n`` sentences), in order."""
        tok = self.td.tokenizer
        batches = self.bleu_batches if batches is None else batches
        hyps = [""] * (len(self.refs) if n is None else n)
        for src, index, max_len in batches:
            out = self.ev.greedy_decode(model, src, tok.bos_id, tok.eos_id, max_len, tok.vocab_size)
            for i, ids in zip(index, out):
                hyps[i] = tok.decode(ids)
        return hyps

    def __call__(self, archs: Sequence[Arch], repeat: int = 0) -> dict[str, np.ndarray]:
        rows = [self.measure(a, repeat) for a in archs]
        return {k: np.array([r[k] for r in rows], dtype=np.float64) for k in rows[0]} if rows else {"loss": np.zeros(0)}


def _weighted_se(values: np.ndarray, weights: np.ndarray) -> float:
    """Standard error of the weighted mean of ``values`` (NaN with one value)."""
    if len(values) < 2:
        return float("nan")
    w = weights / weights.sum()
    mean = float(np.sum(w * values))
    var = float(np.sum(w * (values - mean) ** 2)) * len(values) / (len(values) - 1)
    return float(np.sqrt(var * np.sum(w ** 2)))


class CachedQuality:
    """Memoises a quality source by arch digest; only unseen archs reach the source."""

    def __init__(self, source: QualitySource):
        self.source = source
        self.name = source.name
        self.synthetic = getattr(source, "synthetic", False)
        self.repeats = getattr(source, "repeats", 1)
        self.cache: dict[str, dict[str, float]] = {}
        self.measured = 0  # archs the source actually evaluated

    def seed(self, digest: str, metrics: dict[str, float]) -> None:
        self.cache.setdefault(digest, dict(metrics))

    def __call__(self, archs: Sequence[Arch], repeat: int = 0) -> dict[str, np.ndarray]:
        if repeat:  # a fresh measurement: never from the cache
            return call_source(self.source, archs, repeat)
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
