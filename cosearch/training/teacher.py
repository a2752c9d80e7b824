"""A fixed teacher for a standalone run: the largest sub-network of a trained supernet.

``cosearch train --arch A --teacher RUN`` trains arch A from scratch with the loss its
sandwich members get, ``(1 - distill) * task + distill * KL(teacher || student)``, but
with RUN's largest (float) sub-network as the teacher. This is the *distilled
standalone* control of ``cosearch fidelity``: a supernet member learns from a teacher and
a plain standalone run does not, so "inherited beats standalone" may come from the
teacher alone; this run separates the two.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from .checkpoint import latest_checkpoint
from .rundir import TOKENIZER, read_config, space_of


def check_teacher(run_dir: str | Path, space, task: str) -> Path:
    """The resolved teacher run folder; ``UserError`` unless it is a trained run of the
    same task, family and vocabulary as the student's space. Reads only config.json."""
    path = Path(run_dir)
    config = read_config(path)  # UserError when it is not a run
    t_space = space_of(config)
    if config.get("task") != task or t_space.family != space.family or t_space.vocab_size != space.vocab_size:
        raise UserError(f"--teacher {path}: a {config.get('task')} run of a {t_space.family} space with "
                        f"vocab_size {t_space.vocab_size}; the student needs --task {task}, a {space.family} "
                        f"space with vocab_size {space.vocab_size}")
    if latest_checkpoint(path) is None:
        raise UserError(f"--teacher {path} has no checkpoint yet; train it first")
    return path.resolve()


def check_teacher_tokenizer(run_dir: str | Path, tokenizer_bytes: bytes) -> None:
    """The teacher's token ids must mean what the student's mean."""
    path = Path(run_dir) / TOKENIZER
    if not path.is_file() or path.read_bytes() != tokenizer_bytes:
        raise UserError(f"--teacher {run_dir}: its tokenizer differs from this run's (other data or "
                        "vocabulary); train the student on the teacher's --data and space")


def load_teacher(run_dir: str | Path, device: torch.device) -> torch.nn.Module:
    """The teacher run's largest sub-network (its own arch for a standalone run), frozen,
    in eval mode on ``device``."""
    from .evaluate import load_run  # evaluate imports train, which imports this module

    run = load_run(run_dir, device)
    model = run.net.extract(run.arch if run.arch is not None else run.space.largest()).to(device).eval()
    return model.requires_grad_(False)


@torch.no_grad()
def teacher_logp(teacher: torch.nn.Module, inputs: tuple, vocab: int, autocast) -> torch.Tensor:
    """Log-probabilities of the fixed teacher on a batch (float32, no graph)."""
    with autocast:
        logits = teacher(*inputs)[..., :vocab]
    return torch.log_softmax(logits.float(), dim=-1)
