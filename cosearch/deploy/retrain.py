"""HAT's last step: train the sub-network a search chose from scratch, as a standalone
model, with the recipe of the supernet run the search measured.

``retrain(search, out, trial=N | pick="best-quality")`` reads the chosen arch and the
run from the search folder, then calls :func:`cosearch.training.train.train` with that run's
space, task, data and hyper-parameters (any of them overridable) and ``arch=`` the pick.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..outdirs import check_out
from ..training.rundir import is_run_folder, read_config, space_of
from ..space import Arch
from ..training.train import SANDWICH_ONLY, RunSummary, run_arch, train


def retrain(search: str | Path, out: str | Path, *, trial: int | None = None, pick: str | None = None,
            latency_max: float | None = None, run: str | Path | None = None, gpu: bool = False,
            seed: int | None = None, progress: bool = True, **overrides) -> RunSummary:
    """Train the chosen trial's arch from scratch into ``out`` (resumable like ``train``).

    ``run`` is the supernet run whose recipe is reused (default: the one the search
    measured); ``overrides`` are ``TrainConfig`` fields (``steps`` etc.; None keeps the
    run's value). Changing ``steps`` without ``warmup`` re-derives the warm-up (5%).
    """
    from ..export.pick import pick_trial

    if (trial is None) == (pick is None):
        raise UserError("say which trial to retrain: --trial N or --pick best-quality")
    check_out(out, "run", inputs={"search folder": search, "--run": run}, legacy=is_run_folder)
    chosen = pick_trial(search, trial=trial, pick=pick, latency_max=latency_max)
    run = run if run is not None else chosen.run
    if run is None:
        raise UserError(f"{search} does not name its training run; pass --run RUN (the supernet run "
                        "the search measured)")
    check_out(out, "run", inputs={"the search's run": run}, legacy=is_run_folder)
    config = read_config(run)
    if run_arch(config) is not None:
        raise UserError(f"{run} is a standalone run; pass the supernet run the search measured (--run)")
    space = space_of(config)
    arch = space.validate_arch(Arch.from_dict(chosen.arch), source=f"{search} trial {chosen.number}")
    # the sandwich's levers shape the supernet only: one arch trained alone has no sandwich
    hp = {**config["train"], **SANDWICH_ONLY}
    given = {k: v for k, v in overrides.items() if v is not None}
    if "steps" in given and "warmup" not in given:
        hp["warmup"] = None
    hp.update(given)
    steps = hp.pop("steps")
    return train(space, config["task"], config["data"], out, steps=steps, gpu=gpu,
                 seed=config["seed"] if seed is None else seed, progress=progress, arch=arch, **hp)
