"""Quality of the checked archs: inherited (extracted from the supernet) and standalone.

The data is read and tokenised once (with the supernet run's tokenizer, which every
standalone run shares: ``plan.prepare_job`` seeds their tokenizer cache, and a run with
another tokenizer is refused). Each model is scored by its mean token cross-entropy
(no smoothing) on the validation split and, where the data has one, the test split;
``bleu`` adds test BLEU for translation (beam 4). Results are cached in
``OUT/measurements.json`` (inherited) and ``JOBS/measurements.json`` (standalone, shared by
the checks of several supernets) by model and checkpoint, so a rerun measures only what is new.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path
from typing import Callable

import torch

from ..atomic import atomic_write_text
from ..data import TaskData
from ..errors import UserError
from ..space import Arch
from ..training.evaluate import bleu as corpus_bleu
from ..training.evaluate import eval_loss, load_run, translate
from ..training.checkpoint import list_checkpoints
from ..training.rundir import read_config, space_of
from ..training.finetune import finetuned, recipe
from ..training.finetune_settings import Finetune
from ..training.train import check_tokenizer, load_task_data

CACHE = "measurements.json"


class Cache:
    """``OUT/measurements.json``: key -> metrics, rewritten after every new entry."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            self.data = {}  # a cut write: measure again

    def get(self, key: str):
        return self.data.get(key)

    def put(self, key: str, value: dict) -> None:
        self.data[key] = value
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")


def task_data(run_dir: Path, config: dict) -> TaskData:
    """The supernet run's data (``UserError`` when it is gone or no longer gives the run's
    tokenizer)."""
    data = config.get("data")
    if data and not Path(data).exists():  # a check has no data flag: the fix is the run's own path
        where = ("no longer exists; put the data back there" if Path(data).is_absolute() else
                 f"is not found from {Path.cwd()} (a relative path: run the check from the folder the run was "
                 "trained from, or put the data back there)")
        raise UserError(f"{run_dir} was trained on {data} (its config.json's \"data\"), which {where}; "
                        "a check scores every model on the run's own data")
    td = load_task_data(config, run_dir)
    check_tokenizer(run_dir, td.tokenizer, space_of(config))
    return td


def score(model: torch.nn.Module, td: TaskData, train_cfg: dict, device: torch.device, max_tokens: int,
          want_bleu: bool, limit: int, eval_tokens: int | None = None) -> dict:
    """valid_loss (and test_loss, test_bleu where asked and available) of ``model``;
    ``eval_tokens``: only the first batches of each split, about that many tokens."""
    out = {}
    splits = ["valid"] + (["test"] if td.test is not None else [])
    for split in splits:
        if td.task == "translation":
            per_batch = max_tokens
            batches = td.batches(split, max_tokens=max_tokens, shuffle=False, repeat=False)
        else:
            block = int(train_cfg["max_len"])
            per_batch = max(1, max_tokens // block) * block
            batches = td.batches(split, batch_size=max(1, max_tokens // block), block=block,
                                 shuffle=False, repeat=False)
        if eval_tokens is not None:
            batches = itertools.islice(batches, math.ceil(eval_tokens / per_batch))
        loss = eval_loss(model, batches, td.tokenizer.pad_id, td.tokenizer.vocab_size, device)[0]
        # a diverged model's loss is NaN or inf: null in the JSON (which has no NaN), and the
        # report leaves the model out and says so
        out[f"{split}_loss"] = float(loss) if math.isfinite(loss) else None
    if want_bleu and td.task == "translation" and td.test is not None:
        hyps = translate(model, td, "test", device, beam=4, max_tokens=max_tokens, limit=limit)
        out["test_bleu"] = corpus_bleu(hyps, [tgt for _, tgt in td.text["test"]])
    return out


def tokenizer_digest(td: TaskData) -> str:
    """A short digest of the tokenizer: scores taken with another tokenizer are other numbers."""
    return hashlib.sha256(td.tokenizer.to_bytes()).hexdigest()[:12]


def complete(entry: dict | None, want_bleu: bool, td: TaskData) -> bool:
    return entry is not None and (not want_bleu or td.task != "translation" or td.test is None or "test_bleu" in entry)


def _key(*parts: str, eval_tokens: int | None, max_tokens: int) -> str:
    """A cache key; a partial evaluation is another measurement than the whole split, and
    of other tokens when the batches are cut otherwise (its first batches are what it reads)."""
    partial = (f"max_tokens{max_tokens}", f"first{eval_tokens}") if eval_tokens is not None else ()
    return "|".join(parts + partial)


def measure_inherited(run_dir: Path, archs: list[Arch], td: TaskData, cache: Cache, device: torch.device,
                      max_tokens: int, want_bleu: bool, progress: Callable | None = None,
                      eval_tokens: int | None = None, finetune: Finetune = Finetune()) -> tuple[list[dict], dict]:
    """Every arch extracted from the supernet's newest checkpoint (after ``finetune``'s
    steps of its own training, if any) and scored; and which checkpoint that was
    (``checkpoint``, ``step``: a run still training may have a newer one than when the
    check began)."""
    run = load_run(run_dir, device)
    cfg = recipe(run.config) if finetune.steps else None
    tuned = (finetune.key(cfg),) if finetune.steps else ()
    # the file's size and time too: a supernet trained again in the same folder writes a
    # checkpoint of the same name, whose archs are other models
    ckpt = Path(run.checkpoint).stat()
    out = []
    for a in archs:
        key = _key("inherited", Path(run.checkpoint).name, f"{ckpt.st_size}-{ckpt.st_mtime_ns}", a.digest(), *tuned,
                   eval_tokens=eval_tokens, max_tokens=max_tokens)
        entry = cache.get(key)
        if not complete(entry, want_bleu, td):
            model = finetuned(run.net, a, td, cfg, finetune, device).to(device).eval()
            entry = score(model, td, run.config["train"], device, max_tokens, want_bleu, run.space.spec.max_positions,
                          eval_tokens)
            cache.put(key, entry)
        out.append(entry)
        if progress is not None:
            progress()
    return out, {"checkpoint": Path(run.checkpoint).name, "step": run.step}


def check_last_checkpoint(run_dir: Path) -> None:
    """``UserError`` when the finished standalone run ``run_dir`` lost its last checkpoint: an
    earlier one is another model, which would be scored without a word."""
    found = list_checkpoints(run_dir)
    steps = int(read_config(run_dir)["train"]["steps"])
    if not found or found[-1][0] < steps:
        had = f"its newest checkpoint at step {found[-1][0]}" if found else "no checkpoint"
        raise UserError(f"{run_dir} finished {steps} steps but has {had} (deleted?); delete that job folder "
                        f"({run_dir.parent}) and rerun the check to train it again")


def measure_standalone(run_dir: Path, td: TaskData, cache: Cache, device: torch.device, max_tokens: int,
                       want_bleu: bool, eval_tokens: int | None = None) -> dict:
    """A finished standalone run (its own arch) scored with the shared data; its final
    checkpoint, or one line saying to train the job again."""
    check_last_checkpoint(run_dir)
    run = load_run(run_dir, device)
    if run.tokenizer.to_bytes() != td.tokenizer.to_bytes():
        raise UserError(f"{run_dir} was trained with another tokenizer than the supernet; delete that job "
                        "folder and rerun (its run is retrained with the supernet's tokenizer)")
    # shared by checks that may differ in data (another tokenizer), batching (which batches a
    # partial evaluation reads) or a retrained job (same names, another checkpoint file)
    data = tokenizer_digest(td)
    ckpt = Path(run.checkpoint).stat()
    parts = ("standalone", run_dir.parent.name, Path(run.checkpoint).name, data, f"{ckpt.st_size}-{ckpt.st_mtime_ns}")
    key = _key(*parts, eval_tokens=eval_tokens, max_tokens=max_tokens)
    entry = cache.get(key)
    if not complete(entry, want_bleu, td):
        model = run.net.extract(run.arch).to(device).eval()
        entry = score(model, td, run.config["train"], device, max_tokens, want_bleu, run.space.spec.max_positions,
                      eval_tokens)
        entry["step"] = run.step
        cache.put(key, entry)
    return entry
