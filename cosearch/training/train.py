"""Supernet training: the sandwich rule with in-place distillation, resumable, in one
process or as one of several data-parallel workers.

``train(...)`` prepares the run folder (config, tokenizer), then runs
:func:`run_worker` in this process, or hands the job to a ``runner`` (e.g.
``cosearch.training.ray_train.train_distributed`` passes one that starts N Ray Train workers; this
module knows nothing of Ray). Each step:

* the sandwich members come from ``(seed, step)`` (``cosearch.training.sandwich``), so every
  worker and every resumed run trains the same sub-networks;
* each member runs forward and backward on the same batch (gradients accumulate locally;
  under DDP one all-reduce per step then averages their sum, ``cosearch.training.grad_sync``);
* one AdamW step with warm-up then cosine (or inverse-sqrt) decay, after clipping.

Dropout is seeded from ``(seed, step, rank)`` and the data iterator is a pure function of
its position, so killing a run and re-running the same command ends, on the CPU, at
bit-identical weights to an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import get_ema_multi_avg_fn

from ..atomic import check_writable_dir
from ..inputs import check_memory, check_number, existing_entry, path_arg, resolved
from ..outdirs import check_out, clean_stale, lock_out, mark
from .checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from .grad_sync import all_reduce_gradients, data_parallel
from ..model.compiled_members import eager_forward, member_forward
from ..data import TaskData, build_task_data
from ..data.tasks import TASK_FAMILY
from ..data.tokenizer import TOKENIZER_MODELS, Tokenizer
from ..errors import UserError
from ..model.fused import fused_by_default, use_fused
from .rundir import (CONFIG, SUMMARY, TOKENIZER, append_metrics, atomic_write_text, check_config, is_run_folder,
                     read_config, run_arch, space_of, truncate_metrics, write_config)
from .router_balance import balance_loss
from .sandwich import candidate_pools, member_loss, sandwich, standalone, task_loss, worst_of_pools
from .teacher import check_teacher, check_teacher_tokenizer, load_teacher, teacher_logp
from ..space import Arch, SearchSpace
from ..model.supernet import Supernet, check_model_support, expert_specialisation

SCHEDULES = ("cosine", "inverse_sqrt")
#: the most steps a run may plan: far beyond any real one (a day at 10k steps/s is 864M),
#: so a typed-in 1e20 is refused instead of running forever without a checkpoint
MAX_STEPS = 10 ** 9
#: a standalone run's arch, for ``cosearch export RUN --arch RUN/arch.json``
ARCH_FILE = "arch.json"


# --------------------------------------------------------------------------- settings
#: deep random members by default: one of the random members at every stack's most layers.
#: Uniform members under-reward depth (a stack's last layers train only when a member draws
#: them). One deep member ranked better than none on all three tasks measured (Kendall tau
#: against standalone, paired over 48 archs, 95% intervals, validation split):
#: tinyshakespeare +0.036 [0.011, 0.063] and the linux-c slice +0.027 [0.002, 0.055] (6
#: supernet seeds each), Multi30k +0.046 [0.004, 0.092] (3 each, against 900-step standalone
#: runs); two overshot on tinyshakespeare and the linux-c slice (benchmarks/results/fidelity_notes.md)
DEEP_RANDOM_DEFAULT = 1


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a training run (all stored in the run's config.json)."""

    steps: int = 2000
    #: target tokens per batch and worker (lm: batch rows = max_tokens // max_len)
    max_tokens: int = 4096
    lr: float = 1e-3
    #: warm-up steps; None = 5% of the steps (at most 4000)
    warmup: int | None = None
    schedule: str = "cosine"
    #: cosine decays to lr * min_lr_ratio
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    #: random sub-networks per step besides the largest and the smallest
    n_random: int = 2
    #: weight of KL(teacher || student) in the non-largest members' loss. Off by default: on
    #: Multi30k (400 steps x 32k tokens, 24 archs) 0.5 left the inherited losses 1.59 nats above
    #: standalone (0.64 without) and ranked worse (Kendall tau 0.47 vs 0.59), and on the CPU
    #: tasks it never ranked better; the early teacher drags the shared weights
    #: (benchmarks/results/fidelity_notes.md). A fixed ``--teacher`` uses TEACHER_DISTILL.
    distill: float = 0.0
    #: fractions of the steps at which >= 3-bit and then all bit-widths are enabled
    #: (None: all bit-widths from the start)
    bit_stages: tuple[float, float] | None = (0.2, 0.5)
    #: weight averaging: an exponential moving average of the weights from this fraction of
    #: the steps on, kept in the checkpoints and used by evaluation and export (None: off).
    #: Off by default: on the H200 fidelity run (625 steps, 0.6 / 0.99) the average scored a
    #: higher validation loss than the raw weights in all 24 supernet evaluations (+0.10..0.14).
    ema_start: float | None = None
    #: the average's decay per step (0.99: about the last 100 steps)
    ema_decay: float = 0.99
    #: worst-of-pool sampling (AttentiveNAS worst-up): each random member is the one of this
    #: many candidates of about its weight size with the highest loss on the step's batch
    #: (1: uniform sampling, the default)
    sample_pool: int = 1
    #: weight of the term that keeps MoS mixtures arch-dependent (``router_balance``; 0: off)
    router_balance: float = 0.0
    #: of the ``n_random`` random members, how many are drawn at every stack's most layers
    #: (random widths and bits). None: ``DEEP_RANDOM_DEFAULT`` with 2 or more random members
    #: and no worst-of-pool, else 0 (see ``resolved``)
    deep_random: int | None = None
    #: of the random members after the deep ones, how many are drawn at every stack's fewest
    #: layers (random widths and bits; 0: none, the default)
    shallow_random: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    #: longest sentence (translation) / block length (lm); None = the space's max_positions
    max_len: int | None = None
    src: str = "en"
    tgt: str = "de"
    #: lm: the tokenizer kind, ``unigram`` or ``bpe`` (byte fallback; for code). Translation: unigram.
    tokenizer: str = "unigram"

    def resolved(self, space: SearchSpace) -> "TrainConfig":
        """Fill the automatic values and check every setting (``UserError`` names it)."""
        warmup = self.warmup if self.warmup is not None else min(4000, max(1, self.steps // 20))
        max_len = self.max_len if self.max_len is not None else space.spec.max_positions
        deep_random = self.deep_random
        if deep_random is None:  # worst-of-pool would swap a deep member away (the two are refused together);
            # with fewer than 2 random members every one would be deep, which was never measured; shallow
            # members are asked for where depth is over-rewarded, against what a deep one does
            deep_random = (DEEP_RANDOM_DEFAULT if self.n_random >= 2 and self.sample_pool == 1
                           and not self.shallow_random else 0)
        c = _replace(self, warmup=warmup, max_len=max_len, deep_random=deep_random,
                     betas=tuple(self.betas),
                     bit_stages=None if self.bit_stages is None else tuple(self.bit_stages))
        checks = [("steps", 1 <= c.steps <= MAX_STEPS, f"between 1 and {MAX_STEPS:,}"),
                  ("max_tokens", c.max_tokens >= 2, ">= 2"),
                  ("lr", c.lr > 0, "> 0"), ("warmup", c.warmup >= 0, ">= 0"),
                  ("schedule", c.schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
                  ("min_lr_ratio", 0 <= c.min_lr_ratio <= 1, "in [0, 1]"),
                  ("weight_decay", c.weight_decay >= 0, ">= 0"),
                  ("label_smoothing", 0 <= c.label_smoothing < 1, "in [0, 1)"),
                  ("clip_norm", c.clip_norm > 0, "> 0"), ("n_random", c.n_random >= 0, ">= 0"),
                  ("distill", 0 <= c.distill <= 1, "in [0, 1]"),
                  ("bit_stages", c.bit_stages is None or (len(c.bit_stages) == 2 and
                                                          0 <= c.bit_stages[0] <= c.bit_stages[1] <= 1),
                   "two fractions 0 <= f1 <= f2 <= 1"),
                  ("ema_start", c.ema_start is None or 0 <= c.ema_start <= 1, "in [0, 1] or None"),
                  ("ema_decay", 0 <= c.ema_decay < 1, "in [0, 1)"),
                  ("sample_pool", 1 <= c.sample_pool <= 64, "between 1 and 64 (each candidate costs a forward pass)"), ("router_balance", c.router_balance >= 0, ">= 0"),
                  ("deep_random", 0 <= c.deep_random <= c.n_random, f"between 0 and n_random ({c.n_random})"),
                  ("shallow_random", 0 <= c.shallow_random <= c.n_random - c.deep_random,
                   f"between 0 and n_random - deep_random ({c.n_random} - {c.deep_random})" +
                   ("" if c.shallow_random < 0 else ": lower --shallow-random" +
                    (", lower --deep-random" if c.deep_random else "") + " or raise --n-random")),
                  ("log_every", c.log_every >= 1, ">= 1"), ("ckpt_every", c.ckpt_every >= 1, ">= 1"),
                  ("keep_checkpoints", c.keep_checkpoints >= 1, ">= 1"),
                  ("tokenizer", c.tokenizer in TOKENIZER_MODELS, f"one of {', '.join(TOKENIZER_MODELS)}"),
                  ("max_len", 2 <= c.max_len <= space.spec.max_positions,
                   f"between 2 and the space's max_positions {space.spec.max_positions} (raise "
                   "max_positions in the space YAML for longer sequences)")]
        for f in fields(c):  # nan passes no comparison; inf passes "> 0"
            vals = getattr(c, f.name) if isinstance(getattr(c, f.name), tuple) else (getattr(c, f.name),)
            if any(isinstance(v, float) and not math.isfinite(v) for v in vals):
                raise UserError(f"{f.name}={getattr(c, f.name)!r} is invalid; give finite numbers")
        for name, ok, want in checks:
            if not ok:
                raise UserError(f"{name}={getattr(c, name)!r} is invalid; it must be {want}")
        return c


def _replace(cfg: TrainConfig, **kw) -> TrainConfig:
    return TrainConfig(**{**asdict(cfg), **kw})


def train_config_from_dict(d: dict) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise UserError(f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    d = dict(d)
    if d.get("betas") is not None:
        d["betas"] = tuple(d["betas"])
    if d.get("bit_stages") is not None:
        d["bit_stages"] = tuple(d["bit_stages"])
    return TrainConfig(**d)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of (1-based) ``step``: linear warm-up, then cosine or inverse-sqrt."""
    w = cfg.warmup or 0
    if step <= w:
        return cfg.lr * step / w
    if cfg.schedule == "inverse_sqrt":
        return cfg.lr * math.sqrt(max(w, 1) / step)
    p = (step - w) / max(cfg.steps - w, 1)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


# --------------------------------------------------------------------------- results
@dataclass
class RunSummary:
    """What a training call did (also written to RUN/summary.json when it finishes)."""

    run_dir: str
    step: int  # last step trained (== steps when finished)
    steps: int
    start_step: int  # 0, or the checkpoint step this call resumed from
    finished: bool
    losses: dict = field(default_factory=dict)  # last logged loss per sandwich role
    steps_per_s: float = 0.0
    tokens_per_s: float = 0.0  # target tokens of all workers' batches per second
    elapsed: float = 0.0  # seconds of training, summed over resumed sessions
    workers: int = 1
    state_digest: str = ""  # sha256 of the final weights (equal on every worker)


@dataclass
class DistInfo:
    """Where this worker sits in a data-parallel job (rank 0 of 1 in-process)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: called with the metrics dict at every log step (Ray's ``train.report``)
    report: Callable[[dict], None] | None = None


# --------------------------------------------------------------------------- helpers
def state_digest(module: torch.nn.Module) -> str:
    """sha256 of every tensor of the state dict (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        # flattened first: a 0-d tensor (a learned activation clip, below 8 bits) has no byte view
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def make_optimizer(net: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms and the quantizers' learned log-scales."""
    decay, plain = [], []
    for name, p in net.named_parameters():
        (decay if p.ndim >= 2 and "log_" not in name else plain).append(p)
    # on CUDA one fused kernel updates all parameters (the default launches several per tensor group)
    on_cuda = all(p.is_cuda for p in decay + plain)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": plain, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=cfg.betas, fused=True if on_cuda else None)


def make_batches(td: TaskData, cfg: TrainConfig, seed: int, dist: DistInfo):
    """This worker's shard of the training batches (resumable)."""
    if td.task == "translation":
        return td.batches("train", max_tokens=cfg.max_tokens, seed=seed,
                          num_shards=dist.world, shard_index=dist.rank)
    return td.batches("train", batch_size=max(1, cfg.max_tokens // cfg.max_len), block=cfg.max_len,
                      seed=seed, num_shards=dist.world, shard_index=dist.rank)


def model_inputs(batch: dict) -> tuple[tuple, torch.Tensor]:
    """(model inputs, next-token targets) of a translation or lm batch; an lm batch of
    padded sequences also passes its ``attention_mask`` (targets at padding are pad_id)."""
    if "src" in batch:
        return (batch["src"], batch["tgt_in"]), batch["tgt_out"]
    if "attention_mask" in batch:
        return (batch["input"], batch["attention_mask"]), batch["target"]
    return (batch["input"],), batch["target"]


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def float_state(net: torch.nn.Module) -> dict:
    """The floating-point tensors of ``net``'s state dict, by name. They share storage with
    its parameters, which training (and resuming) updates in place, so one call serves
    every step of a run."""
    return {k: v for k, v in net.state_dict().items() if v.is_floating_point()}


@torch.no_grad()
def update_average(avg: dict | None, weights: dict, step: int, cfg: TrainConfig) -> dict | None:
    """The weight average after ``step``: None before ``ema_start``, then a copy of
    ``weights`` (``float_state(net)``), then ``avg += (1 - ema_decay) * (w - avg)`` every step."""
    if cfg.ema_start is None or step <= cfg.ema_start * cfg.steps:
        return avg
    if avg is None:
        return {k: v.detach().clone() for k, v in weights.items()}
    # one multi-tensor lerp instead of a kernel per tensor (the step is launch-bound:
    # in the H100 recipe logs tokens/s fell 3-5% once the per-tensor average started)
    get_ema_multi_avg_fn(cfg.ema_decay)([avg[k] for k in weights], list(weights.values()), None)
    return avg


def averaged_state(state: dict) -> dict:
    """A checkpoint's weights for evaluation and export: the weight average where the
    run has one, else the trained weights."""
    return {**state["model"], **state["ema"]} if state.get("ema") is not None else state["model"]


def _dropout_seed(seed: int, step: int, rank: int) -> int:
    return ((int(seed) * 1_000_003 + int(step)) * 1024 + int(rank)) % (2 ** 63)


def _rng_state() -> dict:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# --------------------------------------------------------------------------- data
def load_task_data(config: dict, run_dir: str | Path, progress: bool = False) -> TaskData:
    """The run's data, tokenised with the run's tokenizer (cached in RUN/tokenizers, or in
    ``$COSEARCH_DATA_CACHE`` when set: one cache that several runs of the same data share)."""
    space, t = space_of(config), config["train"]
    return build_task_data(config["task"], config["data"], vocab_size=space.vocab_size, workdir=run_dir,
                           src=t["src"], tgt=t["tgt"], max_len=t["max_len"], cache_dir=data_cache_dir(),
                           tokenizer=t.get("tokenizer", "unigram"), progress=progress)


def data_cache_dir() -> Path | None:
    """``$COSEARCH_DATA_CACHE``: a folder for tokenizers and encoded corpora that several runs
    share (each file is keyed by the data's content and the settings, so sharing is safe);
    None (unset): each run keeps its own in RUN/tokenizers."""
    v = os.environ.get("COSEARCH_DATA_CACHE", "").strip()
    return Path(v) if v else None


def check_tokenizer(run_dir: Path, tok: Tokenizer, space: SearchSpace, new_run: bool = False) -> None:
    """Save the tokenizer of a new run; refuse to resume when the data changed it."""
    if tok.vocab_size > space.vocab_size:
        raise UserError(f"the tokenizer has {tok.vocab_size} pieces but the space's vocab_size is "
                        f"{space.vocab_size}; raise vocab_size in the space YAML")
    path = run_dir / TOKENIZER
    if path.is_file() and not new_run:  # a new run's folder may hold one from a killed start
        if path.read_bytes() != tok.to_bytes():
            raise UserError(f"the data gives another tokenizer than {path} (the data changed since "
                            "this run started); restore the data or choose a new --out")
        return
    tok.save(run_dir)


# --------------------------------------------------------------------------- resuming
def resume_from(ckpt: Path, state: dict, net: torch.nn.Module, opt: torch.optim.Optimizer,
                batches, rank: int) -> tuple[int, float]:
    """Restore weights, optimizer, data position and RNG from a loaded checkpoint;
    returns (step, elapsed seconds). Anything that does not fit this run is a
    ``UserError`` naming the checkpoint, before any step is trained."""
    fix = "delete it to resume from the previous checkpoint, or choose a new --out"
    missing = [k for k in ("model", "optimizer", "data_state", "rng", "step") if k not in state]
    if missing:
        raise UserError(f"{ckpt} has no {', '.join(missing)} state, so training cannot resume from it; {fix}")
    try:
        net.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        raise UserError(f"{ckpt} does not fit this run's space ({_mismatch(e)}); {fix}") from None
    try:
        opt.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as e:
        raise UserError(f"{ckpt}: its optimizer state does not fit this run ({_mismatch(e)}); {fix}") from None
    try:
        data_state = json.loads(state["data_state"])
        if not isinstance(data_state, dict):
            raise TypeError("not a JSON object")
        batches.load_state({**data_state, "shard_index": rank})
    except UserError as e:
        raise UserError(f"{ckpt}: {e}; {fix}") from None
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(f"{ckpt}: its data position (data_state) is damaged ({_mismatch(e)}); {fix}") from None
    try:
        _set_rng_state(state["rng"])
        return int(state["step"]), float(state.get("elapsed", 0.0))
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError) as e:
        raise UserError(f"{ckpt}: its random-number or step state is damaged ({_mismatch(e)}); {fix}") from None


def _mismatch(e: Exception) -> str:
    """The telling line of a (possibly multi-line) error, kept short."""
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()] or [type(e).__name__]
    line = next((x for x in lines if x.startswith(("size mismatch", "Missing key", "Unexpected key"))), lines[0])
    return line if len(line) <= 200 else line[:197] + "..."


#: the settings that shape the supernet's sandwich only, at the values that do nothing: a
#: standalone run (and a retraining of one arch from a supernet's recipe) takes these
SANDWICH_ONLY = {"sample_pool": 1, "router_balance": 0.0, "deep_random": 0, "shallow_random": 0}


# --------------------------------------------------------------------------- the loop
def step_members(space: SearchSpace, arch: Arch | None, seed: int, step: int, cfg: TrainConfig) -> list:
    """What trains at ``step``: the sandwich of a supernet run, or the standalone arch."""
    if arch is not None:
        return standalone(space, arch, step, cfg.steps, cfg.bit_stages)
    return sandwich(space, seed, step, cfg.steps, cfg.n_random, cfg.bit_stages, cfg.deep_random,
                    cfg.shallow_random)


def specialisation_probes(space: SearchSpace) -> list[Arch]:
    """Fixed archs whose router outputs measure MoS specialisation during training."""
    return [space.largest(), space.smallest()] + [space.sample(seed) for seed in range(4)]


def run_worker(job: dict, dist: DistInfo, task_data: TaskData | None = None, progress: bool = True,
               stop_at: int | None = None, deadline: float | None = None) -> dict:
    """Train (or resume) the run described by ``job`` (its config plus ``run_dir``) as
    worker ``dist.rank`` of ``dist.world``; returns a ``RunSummary`` as a dict.

    ``stop_at`` ends the session after that step without a checkpoint, as a kill would;
    ``deadline`` (a ``time.time()``) checkpoints and ends it at the first step past it.
    """
    run_dir = Path(job["run_dir"])
    space, cfg, seed = space_of(job), train_config_from_dict(job["train"]), int(job["seed"])
    td = task_data if task_data is not None else load_task_data(job, run_dir)
    device, lead = dist.device, dist.rank == 0
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL and the caching allocator use the current device
    pad, vocab = td.tokenizer.pad_id, td.tokenizer.vocab_size

    fixed = run_arch(job)
    torch.manual_seed(seed)  # the same initial weights on every worker
    net = use_fused(Supernet(space, pad_id=pad, arch=fixed).to(device), fused_by_default())
    probes = specialisation_probes(space) if net.router_parameters() else []
    teacher = load_teacher(job["teacher"], device) if job.get("teacher") else None
    opt = make_optimizer(net, cfg)
    batches = make_batches(td, cfg, seed, dist)
    start, elapsed_before, avg = 0, 0.0, None
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        state = load_checkpoint(ckpt, map_location=device)
        start, elapsed_before = resume_from(ckpt, state, net, opt, batches, dist.rank)
        avg = state.get("ema")
    if lead:
        truncate_metrics(run_dir, start)

    model = data_parallel(net, device) if dist.world > 1 else net
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext())
    forward = member_forward(net)  # eager, or the fixed members compiled ($COSEARCH_COMPILE_MEMBERS)
    net.train()
    weights = float_state(net)  # what the average follows (built once: state_dict() costs ms per step)

    bar = None
    if progress and lead:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    t_log, tok_since_log, tok_total = t0, 0, 0
    loss_sums: dict[str, list] = {}  # metric name -> [sum, count] since the last log
    last_losses: dict = {}
    step = start
    finished = start >= cfg.steps
    try:
        for step in range(start + 1, cfg.steps + 1):
            if stop_at is not None and step > stop_at:
                step -= 1
                break
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            batch = to_device(next(batches), device)
            inputs, target = model_inputs(batch)
            members = step_members(space, fixed, seed, step, cfg)
            if cfg.sample_pool > 1 and fixed is None:
                pools = candidate_pools(space, members, seed, step, cfg.steps, cfg.sample_pool, cfg.bit_stages)
                members = worst_of_pools(members, pools, _batch_loss(net, inputs, target, pad, vocab, autocast))
            torch.manual_seed(_dropout_seed(seed, step, dist.rank))
            sandwich_step(model, net, opt, members, inputs, target, cfg, pad, vocab, autocast,
                          ddp=dist.world > 1, sums=loss_sums, forward=forward,
                          teacher_logp=None if teacher is None else teacher_logp(teacher, inputs, vocab, autocast),
                          extra_loss=balance_loss(net, cfg.router_balance, seed, step))
            avg = update_average(avg, weights, step, cfg)
            tok_since_log += int(batch["ntokens"])
            if bar is not None:
                bar.update(1)

            out_of_time = deadline is not None and time.time() > deadline
            if step % cfg.log_every == 0 or step == cfg.steps or out_of_time:
                record, tok_global = _log_record(step, lr, loss_sums, tok_since_log,
                                                 time.perf_counter() - t_log, dist, device)
                record["elapsed"] = round(elapsed_before + time.perf_counter() - t0, 3)
                tok_total += tok_global
                last_losses = {k.removeprefix("loss_"): v for k, v in record.items() if k.startswith("loss_")}
                if lead and probes:
                    record.update({f"mos_{k}": round(v, 5) for k, v in expert_specialisation(net, probes).items()})
                if lead:
                    append_metrics(run_dir, record)
                if bar is not None:
                    bar.set_postfix(loss=f"{next(iter(last_losses.values())):.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
                if dist.report is not None:
                    dist.report(record)
                loss_sums, tok_since_log, t_log = {}, 0, time.perf_counter()

            if step % cfg.ckpt_every == 0 or step == cfg.steps or out_of_time:
                if lead:
                    save_checkpoint(checkpoint_path(run_dir, step), {
                        "step": step, "model": net.state_dict(), "optimizer": opt.state_dict(),
                        "data_state": json.dumps(batches.state()), "rng": _rng_state(),
                        "elapsed": elapsed_before + time.perf_counter() - t0, "ema": avg})
                    prune_checkpoints(run_dir, cfg.keep_checkpoints)
            if out_of_time:
                break
        else:
            finished = True
    finally:
        if bar is not None:
            bar.close()
    secs = time.perf_counter() - t0
    trained = step - start
    return asdict(RunSummary(
        run_dir=str(run_dir), step=step, steps=cfg.steps, start_step=start, finished=finished or step >= cfg.steps,
        losses=last_losses, steps_per_s=trained / secs if secs > 0 and trained else 0.0,
        tokens_per_s=tok_total / secs if secs > 0 else 0.0, elapsed=elapsed_before + secs,
        workers=dist.world, state_digest=state_digest(net)))


def sandwich_step(model: torch.nn.Module, net: Supernet, opt: torch.optim.Optimizer, members: list,
                  inputs: tuple, target: torch.Tensor, cfg: TrainConfig, pad: int, vocab: int,
                  autocast=nullcontext(), ddp: bool = False, sums: dict | None = None,
                  forward: Callable = eager_forward, teacher_logp: torch.Tensor | None = None,
                  extra_loss: Callable[[], torch.Tensor] | None = None) -> None:
    """One optimizer step over the sandwich ``members`` (the first teaches when ``distill`` > 0).

    Every member runs on ``net`` and its gradients accumulate locally; with ``ddp``,
    ``model`` is ``grad_sync.data_parallel(net)`` and one all-reduce then averages the sum
    over the ranks. Adds each member's task loss and KL (none at ``distill`` 0) to ``sums``
    when given. ``forward`` runs a member (``cosearch.model.compiled_members``: eager, or
    compiled).
    ``teacher_logp``: a fixed teacher's log-probabilities (``--teacher``), which then teach
    every member; ``extra_loss()`` is added to the last member's loss (e.g. the router term).
    """
    teacher = teacher_logp
    for i, m in enumerate(members):
        with autocast:
            logits = forward(net, m, inputs)[..., :vocab]
        loss, ce, kd = member_loss(logits, target, pad, cfg.label_smoothing, teacher, cfg.distill)
        if extra_loss is not None and i == len(members) - 1:
            term = extra_loss()
            loss = loss + term
            if sums is not None:
                _accumulate(sums, "router_term", term)
        loss.backward()
        # at distill 0 the KL has no weight: no teacher, so no vocab-sized log-softmax and KL
        # per member (their memory and time), and no kd_* metrics
        if teacher is None and len(members) > 1 and cfg.distill > 0:
            teacher = F.log_softmax(logits.detach().float(), dim=-1)
        if sums is not None:
            _accumulate(sums, f"loss_{m.role}", ce)
            if kd is not None:
                _accumulate(sums, f"kd_{m.role}", kd)
    if ddp:
        all_reduce_gradients(model)
    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)


def _batch_loss(net: Supernet, inputs: tuple, target: torch.Tensor, pad: int, vocab: int, autocast):
    """``loss_of(arch)``: the task loss of ``arch`` on this batch (no dropout, no graph)."""
    @torch.no_grad()
    def loss_of(arch: Arch) -> torch.Tensor:
        net.eval()
        try:
            with autocast:
                logits = net(*inputs, arch=arch)[..., :vocab]
            return task_loss(logits, target, pad)
        finally:
            net.train()
    return loss_of


def _accumulate(sums: dict, name: str, value: torch.Tensor) -> None:
    # on-device sums: reading a loss every step would stall the GPU queue
    s = sums.setdefault(name, [0.0, 0])
    s[0] = s[0] + value.detach().float()
    s[1] += 1


def _log_record(step: int, lr: float, sums: dict, tokens: int, secs: float,
                dist: DistInfo, device) -> tuple[dict, int]:
    """One metrics line: per sandwich role the mean task loss (``loss_ROLE``, label-smoothed
    cross-entropy) and distillation KL (``kd_ROLE``, when ``distill`` > 0), averaged over
    steps and workers; tokens/s of all workers. Every worker calls this at the same steps
    (it all-reduces)."""
    names = sorted(sums)
    vals = torch.tensor([float(sums[n][0]) / sums[n][1] for n in names] + [float(tokens)], dtype=torch.float64)
    if dist.world > 1:
        import torch.distributed as tdist
        v = vals.to(device)
        tdist.all_reduce(v)
        vals = v.cpu()
        vals[:-1] /= dist.world
    tok = int(vals[-1])
    record: dict[str, Any] = {"step": step}
    record.update({n: round(float(x), 5) for n, x in zip(names, vals[:-1])})
    record.update({"lr": lr, "tokens_per_s": round(tok / secs, 1) if secs > 0 else 0.0})
    return record, tok


# --------------------------------------------------------------------------- entry point
def _as_space(space) -> SearchSpace:
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, dict):
        return SearchSpace.from_dict(space)
    return SearchSpace.load(space)


#: Runs a prepared job elsewhere: ``runner(job, progress, stop_at)`` returns rank 0's summary dict.
JobRunner = Callable[[dict, bool, "int | None"], dict]


def check_task(space: SearchSpace, task: str) -> None:
    """``UserError`` unless ``task`` is known and fits the space's family."""
    if task not in TASK_FAMILY:
        raise UserError(f"unknown task {task!r}; use one of {', '.join(TASK_FAMILY)}")
    if space.family != TASK_FAMILY[task]:
        other = next(t for t, f in TASK_FAMILY.items() if f == space.family)
        raise UserError(f"--task {task} needs a {TASK_FAMILY[task]} space, but {space.name!r} "
                        f"({space.source}) is {space.family}; use --task {other} or another --space")


#: the distillation weight of a standalone run with a fixed ``teacher`` when none is given
TEACHER_DISTILL = 0.5

#: what a run written before a setting existed did (the setting's default changed since):
#: deep random members came in as an option (0) and became the default (2026-12-05)
LEGACY_DEFAULTS = {"deep_random": 0}


def recorded_defaults() -> dict:
    """What a training setting missing from a run's config.json was: the default when it
    was added, or ``LEGACY_DEFAULTS`` where the default changed since."""
    return {**asdict(TrainConfig()), **LEGACY_DEFAULTS}


def _recorded(out, key: str):
    """The value of training setting ``key`` an existing run in ``out`` was made with
    (``LEGACY_DEFAULTS`` where it predates the setting), else None (no run there). Rerunning
    the command of a run made before a default changed (distill 0.5 -> 0, deep_random 0 -> 1,
    both 2026-12-05), without the flag, resumes it as it was made rather than refusing."""
    if out is None or not (Path(out) / CONFIG).is_file():
        return None
    try:
        return read_config(out).get("train", {}).get(key, LEGACY_DEFAULTS.get(key))
    except UserError:
        return None  # a damaged config: check_config names it later


def train(space: SearchSpace | str | Path | dict, task: str, data: str | Path | None, out: str | Path,
          steps: int = 2000, workers: int | None = None, gpu: bool = False, seed: int = 0, *,
          progress: bool = True, stop_at: int | None = None, arch: Arch | None = None,
          deadline: float | None = None, runner: JobRunner | None = None,
          teacher: str | Path | None = None, **hparams) -> RunSummary:
    """Train the supernet of ``space`` on ``task`` (``translation`` or ``lm``) with ``data``
    (None: the embedded default corpus, lm only), writing the run folder ``out``.

    Without ``runner`` the job runs in this process (``workers`` must be None); with one
    (``workers`` data-parallel workers, as ``cosearch.training.ray_train.train_distributed`` gives)
    the runner runs it. ``hparams`` are
    :class:`TrainConfig` fields. Re-running with the same arguments resumes from the last
    checkpoint; other arguments on an existing run raise ``UserError``.

    ``arch`` trains that one sub-network from scratch as a standalone model (same recipe:
    schedule, smoothing, staged QAT at its bit-widths); the run records it, and eval,
    export and translate then use it. ``deadline`` (a ``time.time()``) checkpoints and
    stops early (the summary says ``finished: false``; re-running resumes). ``teacher`` (a
    trained run folder; with ``arch`` only) distils its largest sub-network into the arch
    (``cosearch.training.teacher``), with weight ``distill`` (default ``TEACHER_DISTILL``).
    """
    check_number("--seed", seed, low=0, high=2 ** 63 - 1, integer=True)  # numpy and torch: non-negative seeds
    space = _as_space(space)
    check_model_support(space)  # what the space itself cannot build comes first
    check_task(space, task)
    if arch is not None:
        arch = space.validate_arch(arch)
    # weights, gradients and AdamW's two moments: 16 bytes a parameter before activations
    space.check_fits_memory(16, "training", arch)
    data = path_arg(data, "--data")
    if data is not None:
        data = resolved(existing_entry(data, "--data"), "--data")
    if teacher is not None:
        if arch is None:
            raise UserError("--teacher distils into one standalone arch; give --arch too")
        if hparams.get("distill") is None:
            hparams["distill"] = TEACHER_DISTILL
        elif hparams["distill"] == 0:
            raise UserError("--teacher with --distill 0 would learn nothing from the teacher: give --distill in "
                            f"(0, 1] or leave it out ({TEACHER_DISTILL:g} with --teacher)")
        teacher = check_teacher(teacher, space, task)
    elif hparams.get("distill") is None:
        hparams.pop("distill", None)  # not given (the CLI's None): the default, or what the run recorded
        recorded = _recorded(out, "distill")
        if recorded is not None:
            hparams["distill"] = recorded
    # the sandwich a rerun asks for; a recorded member count that no longer fits it is not carried
    # over (check_config then names the flag that changed, not this)
    n_random = TrainConfig.n_random if hparams.get("n_random") is None else hparams["n_random"]
    pooled = (hparams.get("sample_pool") or 1) > 1
    if hparams.get("deep_random") is None:  # not given: what the run recorded, 0 for one arch, else automatic
        recorded = _recorded(out, "deep_random")
        if recorded is not None and (recorded > n_random or (recorded and pooled)):
            recorded = None
        hparams["deep_random"] = recorded if recorded is not None else 0 if arch is not None else None
    if hparams.get("shallow_random") is None:  # not given: what the run recorded (0 before it existed), else 0
        recorded = (_recorded(out, "shallow_random") if arch is None else None) or 0
        if recorded > n_random - (hparams.get("deep_random") or 0) or pooled:
            recorded = 0
        hparams["shallow_random"] = recorded
    try:
        cfg = train_config_from_dict({"steps": steps, **hparams}).resolved(space)
    except TypeError as e:
        raise UserError(f"bad training setting: {e}") from None
    # the sandwich's levers do nothing to one standalone arch or a space without routers:
    # refuse them rather than record a recipe that was not applied
    if arch is not None and any(getattr(cfg, k) != v for k, v in SANDWICH_ONLY.items()):
        raise UserError("--sample-pool, --router-balance, --deep-random and --shallow-random shape the supernet's "
                        "sandwich; a standalone --arch run has none: leave them out")
    for flag, n in (("--deep-random", cfg.deep_random), ("--shallow-random", cfg.shallow_random)):
        if n > 0 and cfg.sample_pool > 1:
            # worst-of-pool would swap a deep (shallow) member for a candidate of any depth
            raise UserError(f"{flag} {n} and --sample-pool {cfg.sample_pool} do not combine (the pool would "
                            f"replace those members): give one of them")
    if cfg.router_balance > 0 and space.spec.mos.mode == "none":
        raise UserError(f"--router-balance {cfg.router_balance:g} needs MoS routers, but space {space.name!r} has "
                        "mos mode 'none': leave it out (or use a layer/neuron MoS space)")
    # a batch's logits, their log-softmax and gradients in float32: 16 bytes per token and word
    check_memory(16 * cfg.max_tokens * space.vocab_size, f"a batch of --max-tokens {cfg.max_tokens:,} "
                 f"over a {space.vocab_size:,}-word vocabulary", "lower --max-tokens")
    if task == "translation" and cfg.tokenizer != "unigram":
        raise UserError(f"--tokenizer {cfg.tokenizer} is for --task lm; translation learns a unigram "
                        "vocabulary (leave --tokenizer out)")
    if workers is not None and deadline is not None:
        raise UserError("a training deadline works in-process only; leave out --workers (or the deadline)")
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers} is invalid; give 1 or more (or leave it out to train in-process)")
    if (workers is None) != (runner is None):
        raise ValueError("give workers together with a runner (cosearch.training.ray_train.train_distributed), or neither")
    if gpu and not torch.cuda.is_available():
        raise UserError("--gpu was given but torch sees no CUDA device; drop --gpu to train on the CPU")
    out = check_out(out, "run", inputs={"--data": data, "--teacher": teacher}, legacy=is_run_folder)
    config = {"space": space.to_dict(), "space_source": space.source, "task": task,
              "data": None if data is None else str(data), "seed": int(seed),
              "workers": workers, "gpu": bool(gpu), "train": asdict(cfg)}
    if arch is not None:
        config["arch"] = arch.to_dict()
    if teacher is not None:
        config["teacher"] = str(teacher)
    with lock_out(out):  # a second train into this folder stops here (one line)
        return _train_locked(out, config, space, arch, gpu, runner, progress, stop_at, deadline)


def _train_locked(out: Path, config: dict, space: SearchSpace, arch: Arch | None, gpu: bool,
                  runner: JobRunner | None, progress: bool, stop_at: int | None,
                  deadline: float | None) -> RunSummary:
    """``train`` once its settings are checked and it holds the lock of ``out``."""
    teacher = config.get("teacher")
    created = not out.exists()
    # settings added since an older run was written take their defaults (it still resumes)
    resume = check_config(out, config, defaults={"train": recorded_defaults()})
    try:
        check_writable_dir(out)
        if created:
            mark(out, "run")
        clean_stale(out, "run", legacy=is_run_folder)
        td = load_task_data(config, out, progress=progress)
        check_tokenizer(out, td.tokenizer, space, new_run=not resume)
        if teacher is not None:
            check_teacher_tokenizer(teacher, td.tokenizer.to_bytes())
        if not resume:
            write_config(out, config)
            if arch is not None:
                atomic_write_text(out / ARCH_FILE, arch.to_json() + "\n")
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)  # nothing half-made left behind
        raise
    job = {"format": 1, **config, "run_dir": str(out.resolve())}
    if runner is None:
        device = torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")
        result = run_worker(job, DistInfo(device=device), task_data=td, progress=progress, stop_at=stop_at,
                            deadline=deadline)
    else:
        result = runner(job, progress, stop_at)
    summary = RunSummary(**result)
    if summary.finished:
        atomic_write_text(out / SUMMARY, json.dumps(asdict(summary), indent=2) + "\n")
    return summary
