"""Exporting a sub-network of a trained supernet: from a run folder, an in-memory supernet or
a search folder's trial (what ``cosearch export`` runs)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..atomic import check_writable_dir
from ..errors import UserError
from ..inputs import parse_json, read_json
from ..outdirs import check_out, lock_out
from ..space import Arch, SearchSpace
from ..model.supernet import Supernet
from .folder import check_onnx_flags, is_export_folder, write_export

# --------------------------------------------------------------------------- from runs and searches
def load_supernet(run: str | Path, checkpoint: str | Path | None = None):
    """The trained supernet of a run folder (``evaluate.LoadedRun``), from its newest
    checkpoint or from ``checkpoint``."""
    from ..training.checkpoint import latest_checkpoint, load_checkpoint
    from ..training.evaluate import load_run
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
        value, source = read_json(path, "arch file"), str(path)
    elif isinstance(value, str):
        try:
            value, source = parse_json(value, "--arch"), "--arch"
        except UserError as e:
            raise UserError(f"{e}: the inline JSON does not parse; give an arch JSON file or the JSON "
                            "Arch.to_json() writes, quoted for the shell") from None
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
    from ..hardware import cost, load_hardware
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
           metrics: dict | None = None, onnx: bool = False, onnx_integer: bool = False,
           qonnx: bool = False, force: bool = False, progress: bool = False) -> Path:
    """Export one sub-network to the folder ``out`` (what ``cosearch export`` runs).

    The sub-network comes from a search folder (``search`` with ``trial`` or ``pick``
    ``"best-quality"`` [and ``latency_max`` in ms], which also gives the run, hardware and
    metrics) or from a training ``run`` folder / an in-memory ``supernet`` plus ``arch``
    (an Arch, dict, JSON string or JSON file). ``hardware`` (preset name, YAML path or
    ``Hardware``) with ``hardware_params`` adds the predicted cost and schedule.csv.
    ``onnx``, ``onnx_integer``, ``qonnx``, ``progress``: as ``write_export``.
    """
    out = check_out(out, "export", force=force, legacy=is_export_folder,
                    inputs={"run folder": run, "search folder": search, "--checkpoint": checkpoint})
    check_writable_dir(out.parent)  # a read-only --out fails here, before any loading
    check_onnx_flags(onnx, onnx_integer, qonnx)
    with lock_out(out):  # held until the folder is in place (write_export takes it again)
        return _export(out, run=run, supernet=supernet, arch=arch, search=search, trial=trial, pick=pick,
                       latency_max=latency_max, checkpoint=checkpoint, hardware=hardware,
                       hardware_params=hardware_params, scenario=scenario, tokenizer=tokenizer, task=task,
                       metrics=metrics, onnx=onnx, onnx_integer=onnx_integer, qonnx=qonnx, force=force,
                       progress=progress)


def _export(out: Path, *, run, supernet, arch, search, trial, pick, latency_max, checkpoint, hardware,
            hardware_params, scenario, tokenizer, task, metrics, onnx, onnx_integer, qonnx, force,
            progress) -> Path:
    source: dict = {}
    languages = search_space = None
    if search is not None and (trial is not None or pick is not None):
        if arch is not None:
            raise UserError("give one of --trial, --pick and --arch, not several")
        from .pick import pick_trial
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
        from .pick import search_defaults
        ctx = search_defaults(search)
        run = run if run is not None else ctx["run"]
        hardware = hardware if hardware is not None else ctx["hardware"]
        scenario = scenario or ctx["scenario"]
        search_space = ctx["space"]
        source.update(search=str(Path(search).resolve()))
    elif trial is not None or pick is not None:
        raise UserError("--trial and --pick need a search folder; with a run folder pass --arch FILE.json")
    if run is not None:  # the run a search names is an input too
        check_out(out, "export", force=force, legacy=is_export_folder, inputs={"run folder": run})
    if search is not None and run is None and supernet is None:
        raise UserError(f"{search}/search.json does not name the training run; pass --run RUN "
                        "(the folder the search measured)")
    if arch is None:
        raise UserError("say which sub-network to export: --trial N, --pick best-quality, or --arch FILE.json")
    loaded = None
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
    tuned = 0
    if search is not None:
        from .pick import search_finetune_steps
        tuned = search_finetune_steps(search)
    was_training = supernet.training
    if tuned:  # the search measured each arch after its finetune: export that model, not the inherited one
        if loaded is None:
            raise UserError(f"{search} measured archs after --finetune-steps {tuned}, which trains on the run's data; "
                            "export from the search with its run folder (--run RUN), not an in-memory supernet")
        from ..training.finetune import finetuned, recipe
        from ..training.finetune_settings import Finetune
        from ..training.train import load_task_data
        model = finetuned(supernet.eval(), arch, load_task_data(loaded.config, run), recipe(loaded.config),
                          Finetune(tuned), next(supernet.parameters()).device).eval()
        source.update(finetune_steps=tuned)
    else:
        with torch.no_grad():
            model = supernet.eval().extract(arch)
    supernet.train(was_training)
    return write_export(out, model, space, arch, tokenizer=tokenizer, task=task, hardware=hw_info,
                        predicted=predicted, metrics=metrics, schedule=schedule, source=source,
                        onnx=onnx, onnx_integer=onnx_integer, qonnx=qonnx, force=force, progress=progress,
                        extra={"languages": languages})
