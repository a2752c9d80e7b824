"""A short finetune of one sub-network from the supernet's weights, before it is scored.

Inherited weights are shared by every sub-network, so each one is scored at a point none
of them would reach alone. A few steps of the arch's own training move it towards its
own optimum. Measured (``benchmarks/README.md`` section 3): it ranks closer to standalone
runs about as short as the finetune is to the supernet (tinyshakespeare's 300-step runs,
Multi30k's 900-step ones) and further from long ones (Multi30k's 2,600-step runs): a
short finetune favours the archs that learn fast. So it is off unless asked.

The arch trains inside a copy of the supernet, as a standalone run of the recipe trains
(``cosearch train --arch``): the quantizers fake-quantize every weight and activation
at the arch's bits on each step, so a 2-bit layer stays a 2-bit layer. The extracted
model (weights stored on the quantization grid, no quantizer left on them) would turn
low-bit weights into floats at the first update. Every arch sees the same batches (one
``seed``), so two archs' finetunes differ only by the arch.
"""
from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import replace

import torch

from ..data import TaskData
from ..space import Arch
from .finetune_settings import Finetune
from .sandwich import task_loss
from .train import (DistInfo, TrainConfig, make_batches, make_optimizer, model_inputs, to_device,
                    train_config_from_dict)

def recipe(config: dict) -> TrainConfig:
    """The training settings a finetune of the run ``config`` uses: the run's, with one
    step's tokens as a standalone run of its recipe takes them (a run of N data-parallel
    workers took ``max_tokens`` per worker, so N times that per step)."""
    cfg = train_config_from_dict(config["train"])
    workers = max(1, int(config.get("workers") or 1))
    return replace(cfg, max_tokens=cfg.max_tokens * workers)


def finetuned(net: torch.nn.Module, arch: Arch, td: TaskData, cfg: TrainConfig, ft: Finetune,
              device: torch.device) -> torch.nn.Module:
    """The extracted model of ``arch`` after ``ft.steps`` steps of its own training from the
    supernet ``net``'s weights (``net`` is left as it was); with 0 steps, the inherited model."""
    if ft.steps == 0:
        return net.extract(arch)
    work = copy.deepcopy(net)
    work.train()
    work.set_arch(arch)
    opt = make_optimizer(work, cfg)
    for g in opt.param_groups:
        g["lr"] = ft.rate(cfg)
    batches = make_batches(td, cfg, ft.seed, DistInfo(device=device))
    pad, vocab = td.tokenizer.pad_id, td.tokenizer.vocab_size
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    # the dropout masks from the seed, without resetting the caller's random state
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.enable_grad():
        torch.manual_seed(ft.seed)
        for _ in range(ft.steps):
            inputs, target = model_inputs(to_device(next(batches), device))
            with autocast:
                logits = work(*inputs, arch=arch)[..., :vocab]
            loss = task_loss(logits, target, pad, cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_norm:
                torch.nn.utils.clip_grad_norm_(work.parameters(), cfg.clip_norm)
            opt.step()
    work.eval()
    return work.extract(arch)
