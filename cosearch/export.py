"""Export a chosen sub-network as a self-contained, deployable folder, and load it back.

An export folder holds::

    OUT/config.json        format, space, arch, bits, task, tokenizer file, hardware target
                           and accelerator parameters, predicted latency/energy/size, the
                           search metrics of the trial it came from, where it came from
    OUT/model.safetensors  packed integer codes + float32 scales (cosearch.export_format)
    OUT/tokenizer.model    the tokenizer the supernet was trained with (when known)
    OUT/schedule.csv       the cost engine's per-operator schedule (when a target is known)
    OUT/model.onnx         with onnx=True: the dequantized float forward at a fixed length

The folder is built under a temporary name next to OUT and renamed into place, so OUT is
never half-written. ``load_exported(OUT)`` needs neither the supernet nor the router and
never unpickles anything (safetensors and JSON only).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .export_format import load_weights, save_weights
from .modules import Transformer
from .space import Arch, SearchSpace
from .supernet import Supernet, build_standalone

FORMAT = "cosearch-export"
FORMAT_VERSION = 1
CONFIG, WEIGHTS, SCHEDULE, ONNX_FILE, TOKENIZER = (
    "config.json", "model.safetensors", "schedule.csv", "model.onnx", "tokenizer.model")


# --------------------------------------------------------------------------- writing
def bits_summary(space: SearchSpace, arch: Arch) -> dict:
    """Per-layer weight/activation bits and the embedding bits, for config.json."""
    def side(layers):
        return {"weight": [la.weight_bits for la in layers], "act": [la.act_bits for la in layers]}
    out = {"embedding": space.spec.quantization.embedding_bits, "decoder": side(arch.decoder)}
    if space.is_encdec:
        out["encoder"] = side(arch.encoder)
    return out


def write_export(out: str | Path, model: Transformer, space: SearchSpace, arch: Arch, *,
                 tokenizer: str | Path | bytes | None = None, task: str | None = None,
                 hardware: dict | None = None, predicted: dict | None = None,
                 metrics: dict | None = None, schedule=None, source: dict | None = None,
                 onnx: bool = False, onnx_length: int = 32, extra: dict | None = None,
                 force: bool = False) -> Path:
    """Write the export folder ``out`` for ``model`` (a standalone of ``arch``).

    ``tokenizer``: a tokenizer.model path or its bytes; ``hardware``: ``{"name", "params"}``;
    ``predicted``: latency/energy/size; ``metrics``: what the search measured; ``schedule``:
    a pandas DataFrame of per-operator rows. ``force`` replaces an existing ``out``.
    """
    from . import __version__
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"{out} already exists; choose a new --out or pass --force to replace it")
    space.validate_arch(arch)
    model = model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        save_weights(model, tmp / WEIGHTS)
        tok_name = None
        if tokenizer is not None:
            data = tokenizer if isinstance(tokenizer, bytes) else Path(tokenizer).read_bytes()
            (tmp / TOKENIZER).write_bytes(data)
            tok_name = TOKENIZER
        if schedule is not None:
            schedule.to_csv(tmp / SCHEDULE, index=False)
        onnx_info = None
        if onnx:
            if not 1 <= onnx_length <= space.spec.max_positions:
                raise UserError(f"--onnx-length {onnx_length} must be in 1..{space.spec.max_positions} "
                                "(the space's max_positions)")
            from .export_onnx import check_onnx, to_onnx
            data = to_onnx(model, tmp / ONNX_FILE, length=onnx_length)
            onnx_info = check_onnx(model, data, length=onnx_length)
        size = space.size(arch)
        config = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "cosearch_version": __version__,
            "space": space.to_dict(), "arch": arch.to_dict(), "bits": bits_summary(space, arch),
            "task": task, "pad_id": int(model.pad_id), "tokenizer": tok_name,
            "hardware": hardware,
            "predicted": {"params": size.params, "size_bytes": size.weight_bits / 8, **(predicted or {})},
            "search_metrics": metrics or {},
            "files": {"weights": WEIGHTS, "schedule": SCHEDULE if schedule is not None else None,
                      "onnx": ONNX_FILE if onnx else None},
            "onnx_check": onnx_info, "source": source or {}, **(extra or {}),
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=_json_default) + "\n")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _json_default(v):
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and deleted after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


# --------------------------------------------------------------------------- reading
@dataclass
class Exported:
    """An export folder, loaded: the model plus what is needed to use it."""

    path: Path
    config: dict
    space: SearchSpace
    arch: Arch
    model: Transformer

    @property
    def task(self) -> str | None:
        return self.config.get("task")

    def tokenizer(self):
        """The exported tokenizer (``UserError`` when the export has none)."""
        from .data.tokenizer import Tokenizer
        name = self.config.get("tokenizer")
        if not name:
            raise UserError(f"{self.path} has no tokenizer; export from a training run folder "
                            "so the tokenizer is copied along")
        return Tokenizer.load(self.path / name)


def read_config(out: str | Path) -> tuple[dict, SearchSpace, Arch]:
    """(config, space, arch) of an export folder, checked (``UserError`` naming the file)."""
    out = Path(out)
    path = out / CONFIG
    if not out.is_dir():
        raise UserError(f"{out} is not an export folder; pass the --out folder of `cosearch export`")
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; pass the --out folder of `cosearch export`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); the export is damaged, export again") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise UserError(f"{path}: not a cosearch export config (format {FORMAT!r})")
    version = cfg.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"{path}: format_version {version!r} is newer than this cosearch reads "
                        f"({FORMAT_VERSION}); upgrade cosearch")
    space = SearchSpace.from_dict(cfg.get("space"), source=f"{path} (space)")
    try:
        arch = Arch.from_dict(cfg["arch"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: 'arch' is not a valid arch ({type(e).__name__}: {e})") from None
    space.validate_arch(arch, source=str(path))
    if not isinstance(cfg.get("pad_id", 0), int):
        raise UserError(f"{path}: pad_id must be an integer")
    return cfg, space, arch


def open_exported(out: str | Path) -> Exported:
    """Load an export folder: config, space, arch and the model (eval mode, CPU)."""
    out = Path(out)
    cfg, space, arch = read_config(out)
    model = build_standalone(space, arch, pad_id=cfg.get("pad_id", 0))
    weights = (cfg.get("files") or {}).get("weights") or WEIGHTS
    if not isinstance(weights, str) or Path(weights).name != weights:
        raise UserError(f"{out / CONFIG}: files.weights must be a file name inside the folder")
    load_weights(model, out / weights)
    return Exported(out, cfg, space, arch, model.eval())


def load_exported(out: str | Path) -> Transformer:
    """The exported model as a plain ``nn.Module`` (a ``Transformer``, eval mode)."""
    return open_exported(out).model


# --------------------------------------------------------------------------- from runs and searches
def load_supernet(run: str | Path, checkpoint: str | Path | None = None):
    """The trained supernet of a run folder (``evaluate.LoadedRun``), from its newest
    checkpoint or from ``checkpoint``."""
    from .checkpoint import latest_checkpoint, load_checkpoint
    from .evaluate import load_run
    loaded = load_run(run)
    loaded.checkpoint = str(latest_checkpoint(run))
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        try:
            loaded.net.load_state_dict(state["model"])
        except RuntimeError as e:
            raise UserError(f"{checkpoint}: weights do not fit the space of {run} "
                            f"({str(e).splitlines()[0]}); pass a checkpoint of this run") from None
        loaded.step, loaded.checkpoint = int(state["step"]), str(checkpoint)
    return loaded


def arch_from(value: Any, space: SearchSpace, source: str = "arch") -> Arch:
    """An ``Arch`` from an Arch, a dict, a JSON string or a JSON file path (checked)."""
    if isinstance(value, Arch):
        return space.validate_arch(value, source)
    if isinstance(value, (str, Path)) and not str(value).lstrip().startswith("{"):
        path = Path(value)
        try:
            value, source = json.loads(path.read_text()), str(path)
        except FileNotFoundError:
            raise UserError(f"arch file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: not a JSON arch ({e})") from None
    elif isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict) and "arch" in value and "decoder" not in value:
        value = value["arch"]  # an export's or a trial's JSON holding the arch
    try:
        arch = Arch.from_dict(value)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{source}: not a valid arch ({type(e).__name__}: {e}); expected keys "
                        "decoder_embed_dim, decoder (list of layers), encoder_embed_dim, encoder") from None
    return space.validate_arch(arch, source)


def hardware_report(space: SearchSpace, arch: Arch, hardware, params: dict | None = None,
                    scenario: str = "prefill", **scenario_kw):
    """(hardware dict for config.json, predicted dict, per-operator DataFrame)."""
    from .hardware import cost, load_hardware
    hw = load_hardware(hardware)
    if params:
        hw = hw.with_params(**params)
    rep = cost(space, arch, hw, scenario=scenario, **scenario_kw)
    totals = rep.totals()
    predicted = {"latency_ms": rep.latency_ms, "energy_mj": rep.energy_mj,
                 "size_bytes_hw": rep.size_bytes, "scenario": totals}
    return {"name": hw.name, "params": dict(params or {})}, predicted, rep.ops


def export(out: str | Path, *, run: str | Path | None = None, supernet: Supernet | None = None,
           arch: Any = None, search: str | Path | None = None, trial: int | None = None,
           pick: str | None = None, latency_max: float | None = None,
           checkpoint: str | Path | None = None, hardware: Any = None,
           hardware_params: dict | None = None, scenario: str | None = None,
           tokenizer: str | Path | bytes | None = None, task: str | None = None,
           metrics: dict | None = None, onnx: bool = False, onnx_length: int = 32,
           force: bool = False) -> Path:
    """Export one sub-network to the folder ``out`` (what ``cosearch export`` runs).

    The sub-network comes from a search folder (``search`` with ``trial`` or ``pick``
    ``"best-quality"`` [and ``latency_max`` in ms], which also gives the run, hardware and
    metrics) or from a training ``run`` folder / an in-memory ``supernet`` plus ``arch``
    (an Arch, dict, JSON string or JSON file). ``hardware`` (preset name, YAML path or
    ``Hardware``) with ``hardware_params`` adds the predicted cost and schedule.csv.
    """
    source: dict = {}
    languages = search_space = None
    if search is not None and (trial is not None or pick is not None):
        if arch is not None:
            raise UserError("give one of --trial, --pick and --arch, not several")
        from .export_pick import pick_trial
        chosen = pick_trial(search, trial=trial, pick=pick, latency_max=latency_max)
        run = run if run is not None else chosen.run
        arch = chosen.arch
        hardware = hardware if hardware is not None else chosen.hardware
        hardware_params = hardware_params if hardware_params is not None else chosen.hardware_params
        scenario = scenario or chosen.scenario
        metrics = {**chosen.metrics, **(metrics or {})}
        search_space = chosen.space
        source.update(search=str(Path(search).resolve()), trial=chosen.number)
    elif search is not None:
        from .export_pick import search_defaults
        ctx = search_defaults(search)
        run = run if run is not None else ctx["run"]
        hardware = hardware if hardware is not None else ctx["hardware"]
        scenario = scenario or ctx["scenario"]
        search_space = ctx["space"]
        source.update(search=str(Path(search).resolve()))
    elif trial is not None or pick is not None:
        raise UserError("--trial and --pick need a search folder; with a run folder pass --arch FILE.json")
    if search is not None and run is None and supernet is None:
        raise UserError(f"{search}/search.json does not name the training run; pass --run RUN "
                        "(the folder the search measured)")
    if arch is None:
        raise UserError("say which sub-network to export: --trial N, --pick best-quality, or --arch FILE.json")
    if supernet is None:
        if run is None:
            raise UserError("export needs the trained supernet: a run folder (or a search made from one)")
        loaded = load_supernet(run, checkpoint)
        supernet, run = loaded.net, Path(run)
        task = task or loaded.config.get("task")
        tokenizer = tokenizer if tokenizer is not None else loaded.tokenizer.to_bytes()
        source.update(run=str(run.resolve()), step=loaded.step, checkpoint=loaded.checkpoint)
        if task == "translation":
            hp = loaded.config.get("train") or {}
            languages = {"src": hp.get("src", "en"), "tgt": hp.get("tgt", "de")}
    space = supernet.space
    if search_space is not None and SearchSpace.from_dict(search_space).to_dict() != space.to_dict():
        raise UserError(f"{search} searched another space than the run {run} was trained on; "
                        "pass the run the search measured (--run)")
    arch = arch_from(arch, space)
    hw_info, predicted, schedule = None, {}, None
    if hardware is not None:
        hw_info, predicted, schedule = hardware_report(space, arch, hardware, hardware_params,
                                                        scenario or "prefill")
    was_training = supernet.training
    with torch.no_grad():
        model = supernet.eval().extract(arch)
    supernet.train(was_training)
    return write_export(out, model, space, arch, tokenizer=tokenizer, task=task, hardware=hw_info,
                        predicted=predicted, metrics=metrics, schedule=schedule, source=source,
                        onnx=onnx, onnx_length=onnx_length, force=force, extra={"languages": languages})
