"""Export folders: writing one for a standalone model, and reading it back.

An export folder holds::

    OUT/config.json        format, space, arch, bits, task, tokenizer file, hardware target
                           and accelerator parameters, predicted latency/energy/size, the
                           search metrics of the trial it came from, where it came from
    OUT/model.safetensors  packed integer codes + float32 scales (cosearch.export.format)
    OUT/tokenizer.model    the tokenizer the supernet was trained with (when known)
    OUT/schedule.csv       the cost engine's per-operator schedule (when a target is known)
    OUT/.cosearch          marker: cosearch made this folder as an export (``--force`` replaces
                           only such folders, see cosearch.outdirs)
    OUT/model.onnx         with onnx=True, decoder-only: the low-bit decoder with a KV cache
    OUT/encoder_model.onnx, decoder_model.onnx, model.onnx_data
                           with onnx=True, encoder-decoder: encoder and decoder-with-past
                           graphs and their shared weights (cosearch.export.onnx_graph)

The folder is built under a temporary name next to OUT and renamed into place, so OUT is
never half-written; files get mode 0666 and folders 0777 less the umask (not mkdtemp's
0700), so a serving process of another user can read them. ``open_exported(OUT)`` needs
neither the supernet nor the router and never unpickles anything (safetensors and JSON
only); it checks config.json's sizes against the weight file before allocating.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..atomic import is_write_refusal, write_error_message
from ..errors import UserError
from ..inputs import read_json
from ..outdirs import check_out, clean_stale, lock_out, mark
from .format import load_weights, save_weights
from ..model.modules import Transformer
from ..space import Arch, SearchSpace
from ..model.supernet import build_standalone

FORMAT = "cosearch-export"
FORMAT_VERSION = 1
CONFIG, WEIGHTS, SCHEDULE, TOKENIZER = "config.json", "model.safetensors", "schedule.csv", "tokenizer.model"


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
                 onnx: bool = False, onnx_integer: bool = False, qonnx: bool = False,
                 extra: dict | None = None, force: bool = False, progress: bool = False) -> Path:
    """Write the export folder ``out`` for ``model`` (a standalone of ``arch``).

    ``tokenizer``: a tokenizer.model path or its bytes; ``hardware``: ``{"name", "params"}``;
    ``predicted``: latency/energy/size; ``metrics``: what the search measured; ``schedule``:
    a pandas DataFrame of per-operator rows. ``onnx``: also write the low-bit ONNX graphs
    and record their parity with ``model`` under onnxruntime (``onnx_check``; a difference
    is reported there, never fatal); ``onnx_integer``: in them, run the linears whose
    activations and weights are quantized as integer kernels (``MatMulInteger``).
    ``qonnx``: also write ``model_qonnx.onnx`` (``cosearch.export.qonnx_graph``, needs the
    ``fpga`` extra) and record its check (``qonnx_check``). ``force`` replaces an existing
    ``out``; ``progress`` shows a bar while the graphs are built and checked.
    """
    from ..version import __version__
    out = check_out(out, "export", force=force, legacy=is_export_folder)
    space.validate_arch(arch)
    check_onnx_flags(onnx, onnx_integer, qonnx)
    model = model.eval()
    with lock_out(out):  # re-entrant: export() and finetune() hold it from their start
        clean_stale(out, "export", legacy=is_export_folder)
        check_out(out, "export", force=force, legacy=is_export_folder)  # again, under the lock
        try:
            tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
        except OSError as e:
            if is_write_refusal(e):
                raise UserError(write_error_message(out.parent, e)) from None
            raise
        return _write_folder(tmp, out, model, space, arch, version=__version__, tokenizer=tokenizer, task=task,
                             hardware=hardware, predicted=predicted, metrics=metrics, schedule=schedule,
                             source=source, onnx=onnx, onnx_integer=onnx_integer, qonnx=qonnx, extra=extra,
                             progress=progress)


def _write_folder(tmp: Path, out: Path, model, space, arch, *, version, tokenizer, task, hardware, predicted,
                  metrics, schedule, source, onnx, onnx_integer, qonnx, extra, progress) -> Path:
    """Fill the temporary folder ``tmp`` and rename it to ``out`` (removed on any error)."""
    try:
        mark(tmp, "export")  # first: a killed export's folder is then recognisably cosearch's
        save_weights(model, tmp / WEIGHTS)
        tok_name = None
        if tokenizer is not None:
            data = tokenizer if isinstance(tokenizer, bytes) else Path(tokenizer).read_bytes()
            (tmp / TOKENIZER).write_bytes(data)
            tok_name = TOKENIZER
        if schedule is not None:
            schedule.to_csv(tmp / SCHEDULE, index=False)
        onnx_files, onnx_info, qonnx_info = None, None, None
        if onnx:
            onnx_files, onnx_info = _write_onnx(model, tmp, onnx_integer, progress)
        if qonnx:
            from .qonnx_graph import write_qonnx
            qonnx_info = write_qonnx(model, tmp, progress)
        size = space.size(arch)
        config = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "cosearch_version": version,
            "space": space.to_dict(), "arch": arch.to_dict(), "bits": bits_summary(space, arch),
            "task": task, "pad_id": int(model.pad_id), "tokenizer": tok_name,
            "hardware": hardware,
            "predicted": {"params": size.params, "size_bytes": size.weight_bits / 8, **(predicted or {})},
            "search_metrics": metrics or {},
            "files": {"weights": WEIGHTS, "schedule": SCHEDULE if schedule is not None else None,
                      "onnx": onnx_files, "qonnx": qonnx_info["file"] if qonnx_info else None},
            "onnx_mode": ("integer" if onnx_integer else "float") if onnx else None,
            "onnx_check": onnx_info, "qonnx_check": qonnx_info, "source": source or {}, **(extra or {}),
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=_json_default) + "\n")
        readable_by_all(tmp)
        _move_into_place(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_refusal(e):  # a full or read-only disk: one line naming the folder
            raise UserError(write_error_message(out, e)) from None
        raise
    return out


def check_onnx_flags(onnx: bool, onnx_integer: bool, qonnx: bool) -> None:
    """The ONNX options of an export, checked before any work."""
    if onnx_integer and not onnx:
        raise UserError("--integer chooses how the ONNX graphs compute; give it with --onnx")
    if qonnx:
        from .qonnx_graph import require_qonnx
        require_qonnx()


def is_export_folder(folder: Path) -> bool:
    """An export folder written before folders had markers (its config.json says so)."""
    try:
        cfg = read_json(folder / CONFIG, "export config")
    except UserError:
        return False
    return isinstance(cfg, dict) and cfg.get("format") == FORMAT


def _write_onnx(model: Transformer, folder: Path, integer: bool = False,
                progress: bool = False) -> tuple[dict, dict]:
    """Write the ONNX graphs of ``model`` into ``folder``: ({role: file}, parity report)."""
    from tqdm import tqdm

    from .onnx_graph import build_graphs, graph_steps, write_graphs
    from .onnx_runtime import PARITY_STEPS, OnnxTransformer, file_names, parity
    files = file_names(model.family)
    with tqdm(total=graph_steps(model) + 1 + PARITY_STEPS, desc="onnx export", unit="step",
              disable=not progress, leave=False) as bar:
        written = write_graphs(build_graphs(model, integer, tick=bar.update), folder)
        bar.update()
        info = {"files": written, "bytes": sum((folder / f).stat().st_size for f in written)}
        try:
            import onnxruntime
        except ImportError:
            import onnx
            for f in files.values():
                onnx.checker.check_model(str(folder / f))
            return files, {**info, "runtime": None, "note": "onnxruntime not installed: graphs checked by "
                           "onnx.checker only; pip install 'cosearch[onnx]' to measure parity"}
        report = parity(model, OnnxTransformer(folder, files, model.family, model.pad_id,
                                               max_positions=model.max_positions), tick=bar.update)
    return files, {**info, "runtime": f"onnxruntime {onnxruntime.__version__}", **report}


def readable_by_all(folder: Path) -> None:
    """Give ``folder`` and its files the modes a plain mkdir/open would (0777/0666 less
    the umask) instead of mkdtemp's 0700."""
    from ..atomic import default_mode
    for p in folder.rglob("*"):
        p.chmod(default_mode(directory=p.is_dir()))
    folder.chmod(default_mode(directory=True))


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
        from ..data.tokenizer import Tokenizer
        name = self.config.get("tokenizer")
        if not name:
            raise UserError(f"{self.path} has no tokenizer; export from a training run folder "
                            "so the tokenizer is copied along")
        return Tokenizer.load(self.path / name)

    def onnx_model(self, threads: int | None = None):
        """The export's ONNX graphs under onnxruntime, with ``Transformer``'s decoding
        methods (``UserError`` when the export has none or onnxruntime is missing)."""
        from .onnx_runtime import OnnxTransformer, onnx_files
        files = onnx_files(self.config)
        if files is None:
            raise UserError(f"{self.path} has no low-bit ONNX graphs; export it again with --onnx")
        for f in files.values():
            if not isinstance(f, str) or Path(f).name != f or not (self.path / f).is_file():
                raise UserError(f"{self.path / CONFIG}: files.onnx names {f!r}, which is not a file of the "
                                "folder; export again with --onnx")
        return OnnxTransformer(self.path, files, self.space.family, self.config.get("pad_id", 0), threads,
                               self.space.spec.max_positions)


def read_config(out: str | Path) -> tuple[dict, SearchSpace, Arch]:
    """(config, space, arch) of an export folder, checked (``UserError`` naming the file)."""
    out = Path(out)
    path = out / CONFIG
    if not out.is_dir():
        raise UserError(f"{out} is not an export folder; pass the --out folder of `cosearch export`")
    if not os.path.lexists(path):
        raise UserError(f"{path} does not exist; pass the --out folder of `cosearch export`")
    cfg = read_json(path, "export config")
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
    pad = cfg.get("pad_id", 0)
    if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < space.vocab_size:
        raise UserError(f"{path}: pad_id {pad!r} must be a token id, 0 to vocab_size - 1 "
                        f"({space.vocab_size - 1}); the export is damaged, export again")
    for key in ("tokenizer",):
        if cfg.get(key) is not None and not _plain_name(cfg[key]):
            raise UserError(f"{path}: {key} {cfg[key]!r} must be a file name inside the folder; "
                            "the export is damaged, export again")
    return cfg, space, arch


def _plain_name(name) -> bool:
    """A file name of the folder itself: no folder part, no '..', no absolute path."""
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name and "/" not in name


def check_weight_size(out: Path, space: SearchSpace, arch: Arch, weights: Path) -> None:
    """Refuse, before anything is allocated, a config.json whose model is larger than the
    weight file can hold (the packed file is the predicted size plus a small header)."""
    try:
        actual = weights.stat().st_size
    except OSError:
        raise UserError(f"{weights} does not exist; the export folder is incomplete, export again") from None
    predicted = space.size(arch).weight_bits / 8
    if not predicted <= 1.1 * actual + 65536:
        raise UserError(f"{out / CONFIG}: its space and arch describe {predicted / 1e6:.4g} MB of weights but "
                        f"{weights.name} holds {actual / 1e6:.4g} MB; config.json does not match the weights "
                        "(damaged or edited), export again")


def open_exported(out: str | Path) -> Exported:
    """Load an export folder: config, space, arch and the model (eval mode, CPU)."""
    out = Path(out)
    cfg, space, arch = read_config(out)
    weights = (cfg.get("files") or {}).get("weights") or WEIGHTS
    if not _plain_name(weights):
        raise UserError(f"{out / CONFIG}: files.weights must be a file name inside the folder")
    check_weight_size(out, space, arch, out / weights)
    model = build_standalone(space, arch, pad_id=cfg.get("pad_id", 0))
    load_weights(model, out / weights)
    model.check_positions = True  # a deployed model refuses inputs past max_positions
    return Exported(out, cfg, space, arch, model.eval())
