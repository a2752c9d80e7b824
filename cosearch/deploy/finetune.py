"""Keep training an exported model on its own (as HAT retrains its sub-transformers).

Quantization-aware with the exported scales held fixed: each quantized weight gets a
float latent, initialised at its stored (already quantized) value, and every forward
re-quantizes it with the stored per-row scale (16-bit weights: fp16 rounding). Fake
quantization with a fixed scale is idempotent, so step 0 computes exactly the export;
gradients reach the latents straight-through. The result is written as a new export
folder whose codes and scales are again exact.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import UserError
from ..export.folder import SCHEDULE, Exported, open_exported, write_export
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
    from ..data.readers import read_parallel, read_text
    from ..data.tasks import LM_VALID_FRACTION, split_lm_text

    limit = exp.space.spec.max_positions
    if exp.task == "translation":
        pairs = read_parallel(data, src, tgt, "train")
        ids = [(s[: limit - 1], t[: limit - 1]) for s, t in
               zip(tok.encode_batch([p[0] for p in pairs]), tok.encode_batch([p[1] for p in pairs])) if s and t]
        if not ids:
            raise UserError(f"{data}: every train pair is empty; give sentence pairs to fine-tune on")
        return TranslationBatches(ids, max_tokens, seed, shuffle=True, repeat=True), "valid and test splits"
    if exp.task == "lm":
        train_text, valid_text = split_lm_text(read_text(data))
        ids = tok.encode(train_text)
        if len(ids) < 2:
            raise UserError(f"{data}: too short to fine-tune on once its last 5% (validation) is held out; "
                            "give more text")
        block = min(limit, max(2, len(ids) - 1))
        held = (f"last {LM_VALID_FRACTION:.0%} of the text ({len(valid_text)} characters), the validation "
                "split of training and search")
        return LMBatches(ids, block, max(1, max_tokens // block), seed, shuffle=True, repeat=True), held
    raise UserError(f"{exp.path}/config.json has task {exp.task!r}; fine-tuning needs translation or lm "
                    "(export from a training run folder)")


def finetune(model: str | Path, data: str | Path, *, steps: int = 200, out: str | Path | None = None,
             lr: float = 2e-4, max_tokens: int = 2048, label_smoothing: float = 0.1,
             seed: int = 0, src: str | None = None, tgt: str | None = None,
             progress: bool = True, force: bool = False) -> Path:
    """Fine-tune the export ``model`` on ``data`` for ``steps`` steps; write the export ``out``
    (default ``MODEL-ft``). ``data``: the translation folder (train.SRC/train.TGT) or the
    LM text of the export's task. Returns ``out``."""
    from ..training.sandwich import task_loss
    from ..training.train import TrainConfig, lr_at, make_optimizer, model_inputs

    model = Path(model)
    out = Path(out) if out is not None else model.with_name(model.name + "-ft")
    if steps < 0:
        raise UserError(f"--steps {steps} is invalid; use 0 or more")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; choose a new --out or pass --force to replace it")
    exp = open_exported(model)
    tok = exp.tokenizer()
    langs = exp.config.get("languages") or {}
    batches, held_out = _batches(exp, tok, data, max_tokens, seed, src or langs.get("src", "en"),
                       tgt or langs.get("tgt", "de"))
    net = attach_fixed_quantizers(exp.model)
    cfg = TrainConfig(steps=max(steps, 1), lr=lr, warmup=max(1, steps // 10), weight_decay=0.0)
    opt = make_optimizer(net, cfg)
    torch.manual_seed(seed)
    net.train()
    losses = []
    it = range(1, steps + 1)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="finetune", unit="step", leave=False)
    for step in it:
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
        if progress:
            it.set_postfix(loss=f"{loss.item():.3f}")
    net = detach_fixed_quantizers(net).eval()
    return _write(exp, net, out, data, steps, lr, losses, force, held_out)


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

