"""Keep training an exported model on its own (as HAT retrains its sub-transformers).

Quantization-aware with the exported scales held fixed: each quantized weight gets a
float latent, initialised at its stored (already quantized) value, and every forward
re-quantizes it with the stored per-row scale (16-bit weights: fp16 rounding). Fake
quantization with a fixed scale is idempotent, so step 0 computes exactly the export;
gradients reach the latents straight-through. The result is written as a new export
folder whose codes and scales are again exact.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..atomic import atomic_write_text, check_writable_dir
from ..errors import UserError
from ..export.folder import SCHEDULE, Exported, is_export_folder, open_exported, write_export
from ..inputs import check_number, existing_entry, path_arg, read_json
from ..outdirs import check_out, clean_stale, kind_of, lock_out, mark
from ..training.checkpoint import save_checkpoint
from ..model.modules import PlainEmbedding, QLinear, Transformer
from ..model.quant import fake_quant_weight


class FixedScaleQuant(nn.Module):
    """Parametrization ``latent -> Q(latent)`` with a fixed per-row scale."""

    def __init__(self, bits: float, scale: torch.Tensor | None):
        super().__init__()
        self.bits = bits
        self.register_buffer("scale", None if scale is None else scale.detach().clone())

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return fake_quant_weight(latent, self.bits, self.scale)


def attach_fixed_quantizers(model: Transformer) -> Transformer:
    """Make every quantized weight of ``model`` a float latent re-quantized each forward."""
    for mod in list(model.modules()):
        if isinstance(mod, QLinear):
            bits = mod.weight_bits
        elif isinstance(mod, PlainEmbedding):
            bits = mod.bits
        else:
            continue
        parametrize.register_parametrization(mod, "weight", FixedScaleQuant(bits, mod.weight_scale))
    return model


def detach_fixed_quantizers(model: Transformer) -> Transformer:
    """Store the quantized weights themselves again (what ``write_export`` expects)."""
    for mod in list(model.modules()):
        if parametrize.is_parametrized(mod, "weight"):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
    return model


def _batches(exp: Exported, tok, data: str | Path, max_tokens: int, seed: int, src: str, tgt: str):
    """(endless shuffled training batches of ``data`` tokenised with the export's tokenizer,
    what was held out). Translation trains on the train split; an LM text loses its last 5%,
    the validation split training held out and the search ranked models on."""
    from ..data.batches import LMBatches, TranslationBatches
    from ..data.lm_text import LM_VALID_FRACTION, lm_sources
    from ..data.readers import read_parallel

    limit = exp.space.spec.max_positions
    if exp.task == "translation":
        pairs = read_parallel(data, src, tgt, "train")
        ids = [(s[: limit - 1], t[: limit - 1]) for s, t in
               zip(tok.encode_batch([p[0] for p in pairs]), tok.encode_batch([p[1] for p in pairs])) if s and t]
        if not ids:
            raise UserError(f"{data}: every train pair is empty; give sentence pairs to fine-tune on")
        return TranslationBatches(ids, max_tokens, seed, shuffle=True, repeat=True), "valid and test splits"
    if exp.task == "lm":
        # the train split alone: of a folder of split files, its train file (valid and test
        # stay unseen); else the text without its last 5%
        sources = lm_sources(data)
        ids = tok.encode("".join(sources.train.chunks()))
        if len(ids) < 2:
            raise UserError(f"{data}: too short to fine-tune on once its last 5% (validation) is held out; "
                            "give more text")
        block = min(limit, max(2, len(ids) - 1))
        if sources.info["valid"] == "file":
            held = "the valid and test files, the splits of training and search"
        else:
            held = (f"last {LM_VALID_FRACTION:.0%} of the text ({len(''.join(sources.valid.chunks()))} characters), "
                    "the validation split of training and search")
        return LMBatches(ids, block, max(1, max_tokens // block), seed, shuffle=True, repeat=True), held
    raise UserError(f"{exp.path}/config.json has task {exp.task!r}; fine-tuning needs translation or lm "
                    "(export from a training run folder)")


def finetune(model: str | Path, data: str | Path, *, steps: int = 200, out: str | Path | None = None,
             lr: float = 2e-4, max_tokens: int = 2048, label_smoothing: float = 0.1,
             seed: int = 0, src: str | None = None, tgt: str | None = None,
             progress: bool = True, force: bool = False, ckpt_every: int = 50,
             stop_at: int | None = None) -> Path:
    """Fine-tune the export ``model`` on ``data`` for ``steps`` steps; write the export ``out``
    (default ``MODEL-ft``). ``data``: the translation folder (train.SRC/train.TGT) or the
    LM text of the export's task. Returns ``out``.

    Resumable like ``train``: every ``ckpt_every`` steps the latent weights, optimizer, data
    position and random state go to a hidden folder next to ``out`` (``.OUT.finetune``);
    the same call after a kill goes on from there and ends at the same weights, and the
    folder is removed once ``out`` is written. ``stop_at`` ends the session after that
    step without a checkpoint, as a kill would (tests).
    """
    model = path_arg(model, "MODEL")
    data = existing_entry(path_arg(data, "--data"), "--data")
    for flag, value, low in (("--steps", steps, 1), ("--max-tokens", max_tokens, 2), ("--ckpt-every", ckpt_every, 1)):
        check_number(flag, value, low=low, integer=True)
    check_number("--lr", lr, low=0, low_open=True)
    check_number("label_smoothing", label_smoothing, low=0, high=0.999)
    out = Path(out) if out is not None else model.with_name(model.name + "-ft")
    out = check_out(out, "export", force=force, legacy=is_export_folder,
                    inputs={"MODEL": model, "--data": data})
    check_writable_dir(out.parent)  # a read-only --out fails here, before any work
    with lock_out(out):
        return _finetune(model, data, out, steps=steps, lr=lr, max_tokens=max_tokens,
                         label_smoothing=label_smoothing, seed=seed, src=src, tgt=tgt, progress=progress,
                         force=force, ckpt_every=ckpt_every, stop_at=stop_at)


def work_dir(out: Path) -> Path:
    """Where an unfinished fine-tune into ``out`` keeps its checkpoints."""
    return out.parent / f".{out.name}.finetune"


def _finetune(model: Path, data: Path, out: Path, *, steps, lr, max_tokens, label_smoothing, seed, src, tgt,
              progress, force, ckpt_every, stop_at) -> Path:
    from ..training.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints
    from ..training.sandwich import task_loss
    from ..training.train import TrainConfig, lr_at, make_optimizer, model_inputs

    exp = open_exported(model)
    tok = exp.tokenizer()
    langs = exp.config.get("languages") or {}
    src, tgt = src or langs.get("src", "en"), tgt or langs.get("tgt", "de")
    batches, held_out = _batches(exp, tok, data, max_tokens, seed, src, tgt)
    net = attach_fixed_quantizers(exp.model)
    cfg = TrainConfig(steps=steps, lr=lr, warmup=max(1, steps // 10), weight_decay=0.0)
    opt = make_optimizer(net, cfg)
    work = work_dir(out)
    settings = {"model": str(model.resolve()), "data": str(data.resolve()), "steps": steps, "lr": lr,
                "max_tokens": max_tokens, "label_smoothing": label_smoothing, "seed": seed, "src": src, "tgt": tgt}
    torch.manual_seed(seed)
    start, losses = 0, []
    if _open_work(work, settings, out):
        ckpt = latest_checkpoint(work)
        if ckpt is not None:
            state = load_checkpoint(ckpt)
            start, losses = _resume(ckpt, state, net, opt, batches)
    net.train()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, initial=start, desc="finetune", unit="step", leave=False)
    try:
        for step in range(start + 1, steps + 1):
            if stop_at is not None and step > stop_at:
                return out
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            inputs, target = model_inputs(next(batches))
            loss = task_loss(net(*inputs), target, tok.pad_id, label_smoothing)
            if not math.isfinite(loss.item()):
                raise UserError(f"the loss became {loss.item()} at step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % ckpt_every == 0 and step < steps:
                save_checkpoint(checkpoint_path(work, step), {
                    "step": step, "model": net.state_dict(), "optimizer": opt.state_dict(),
                    "data_state": json.dumps(batches.state()), "rng": torch.get_rng_state(), "losses": losses})
                prune_checkpoints(work, 1)
    finally:
        if bar is not None:
            bar.close()
    net = detach_fixed_quantizers(net).eval()
    written = _write(exp, net, out, data, steps, lr, losses, force, held_out)
    shutil.rmtree(work, ignore_errors=True)  # done: nothing left to resume
    return written


def _open_work(work: Path, settings: dict, out: Path) -> bool:
    """Create (or check) the work folder of a fine-tune; True when it may hold checkpoints."""
    from ..training.rundir import first_difference
    path = work / "settings.json"
    if kind_of(work) == "finetune-work" and path.is_file():
        saved = read_json(path, "fine-tune settings")
        diff = first_difference(saved, settings) if isinstance(saved, dict) else ("settings", saved, settings)
        if diff:
            k, old, new = diff
            raise UserError(f"{work} holds an unfinished fine-tune into {out} with {k}={old!r}, but this command "
                            f"gives {k}={new!r}; rerun it with the same settings to resume, or delete {work}")
        clean_stale(work, "finetune-work")  # a checkpoint write cut by a kill
        return True
    if os.path.lexists(work):
        raise UserError(f"{work} exists and is not cosearch's; move it away (cosearch keeps an unfinished "
                        f"fine-tune into {out} there)")
    mark(work, "finetune-work")
    atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return False


def _resume(ckpt: Path, state: dict, net, opt, batches) -> tuple[int, list[float]]:
    """Restore a fine-tune checkpoint; (step, losses so far)."""
    fix = f"delete {ckpt.parent.parent} to start the fine-tune again"
    try:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        batches.load_state(json.loads(state["data_state"]))
        torch.set_rng_state(state["rng"])
        losses = [float(x) for x in state["losses"]]
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, UserError) as e:
        raise UserError(f"{ckpt} does not fit this fine-tune ({str(e).splitlines()[0][:200]}); {fix}") from None
    return int(state["step"]), losses


def _write(exp: Exported, net: Transformer, out: Path, data, steps: int, lr: float,
           losses: list[float], force: bool, held_out: str) -> Path:
    cfg = exp.config
    schedule = None
    if (exp.path / SCHEDULE).is_file():
        import pandas as pd
        schedule = pd.read_csv(exp.path / SCHEDULE)
    tok_name = cfg.get("tokenizer")
    predicted = {k: v for k, v in (cfg.get("predicted") or {}).items() if k not in ("params", "size_bytes")}
    tail = losses[-max(1, len(losses) // 10):]
    history = list(cfg.get("finetuned") or []) + [{
        "from": str(exp.path.resolve()), "data": str(Path(data).resolve()), "steps": steps, "lr": lr,
        "held_out": held_out,
        "first_loss": losses[0] if losses else None,
        "last_loss": sum(tail) / len(tail) if losses else None}]
    return write_export(out, net, exp.space, exp.arch,
                        tokenizer=(exp.path / tok_name) if tok_name else None, task=exp.task,
                        hardware=cfg.get("hardware"), predicted=predicted,
                        metrics=cfg.get("search_metrics"), schedule=schedule,
                        source=cfg.get("source"), onnx=bool((cfg.get("files") or {}).get("onnx")),
                        extra={"languages": cfg.get("languages"), "finetuned": history}, force=force)

