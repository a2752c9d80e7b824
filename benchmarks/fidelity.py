"""Does the supernet rank? ``cosearch fidelity`` on one or more supernet variants.

A thin caller of the public paths: each variant (a MoS mode and/or training lever, see
``--variants``) is a ``cosearch train`` supernet; every variant is checked with
``cosearch.fidelity.fidelity`` against the *same* standalone runs (one shared jobs
folder: standalone runs do not depend on the supernet's own settings), and the reports
are gathered into one JSON with the machine, versions, seeds and GPU-seconds.

To fit a short GPU slot, everything trains in one wave: each supernet first starts with
``cosearch train --time-limit 1`` (config, tokenizer, one checkpoint: enough to plan its
check), then one ``cosearch.jobs.run_jobs`` call trains the supernets on (they resume)
and all standalone jobs side by side, each with its GPU share; the ``fidelity`` calls
then only measure and report.

CPU smoke test (seconds of training, tiny_lm)::

    python benchmarks/fidelity.py --space tiny_lm --task lm --data ../shared/data/tinyshakespeare/input.txt \\
        --out /tmp/fid_bench --steps 40 --max-tokens 512 --max-len 64 --archs 6 --per-bin 3 \\
        --variants "none:mode=none;layer:mode=layer" --result /tmp/fid_bench.json

GPU (one H200, ~8 minutes; see benchmarks/results/fidelity_notes.md for what it decides)::

    python benchmarks/fidelity.py --space tiny_lm --task lm --data DATA/tinyshakespeare/input.txt \\
        --out /tmp/fid --steps 1500 --max-tokens 8192 --max-len 128 --archs 48 --per-bin 6 \\
        --noise-archs 8 --distilled-archs 6 --dropouts 0,0.1 \\
        --variants "none:mode=none;layer:mode=layer;balance:mode=layer,router_balance=0.05" \\
        --gpu --supernet-share 0.25 --gpu-share 0.0625 --result $OUT/fidelity_tiny_lm_h200.json

Without training: ``--checks NAME=FOLDER,...`` gathers checks `cosearch fidelity` made;
``--rescore RESULT.json`` scores a result's kept per-arch rows again, and with
``--reference-parts PART1,PART2,...`` against a reference still being trained in parts
(``cosearch fidelity --shard K/N`` folders), on the archs those parts have scored; parts of
references planned from runs that differ only in dropout are the points of a dropout sweep.
``--rescore OLD.json,NEW.json`` rescores several results as one: e.g. supernet seeds 1 and 2
trained later (``--first-seed 1 --supernet-seeds 2``) beside the seed 0 of OLD.json.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: supernet settings a variant may set: the space's MoS mode, or a `cosearch train` flag
TRAIN_KEYS = {"n_random": int, "distill": float, "sample_pool": int, "router_balance": float, "deep_random": int,
              "shallow_random": int, "bit_stages": str, "steps": int, "label_smoothing": float}
SPACE_KEYS = {"mode": str, "experts": int}


#: supernet seed k > 0 of variant NAME runs, and reports, as NAME_seed{k}
SEED_SUFFIX = "_seed"


def refuse(msg: str) -> SystemExit:
    """A refused input (raise it): the message on stderr and exit status 2, as the CLI's refusals."""
    print(f"fidelity.py: error: {msg}", file=sys.stderr)
    e = SystemExit(msg)
    e.code = 2
    return e


def run_key(variant: str, seed: int) -> str:
    """The run and report name of ``variant`` at supernet seed ``seed``."""
    return variant if seed == 0 else f"{variant}{SEED_SUFFIX}{seed}"


def variant_of(key: str) -> str:
    """The variant a run or report name belongs to (inverse of :func:`run_key`)."""
    return key.split(SEED_SUFFIX)[0]


def parse_variants(text: str) -> dict[str, dict]:
    """``NAME:key=value,key=value;NAME2:...`` -> {name: {key: value}} (checked)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, body = part.partition(":")
        if not name.isidentifier() or name in out:
            raise refuse(f"--variants: bad or repeated name {name!r}")
        if SEED_SUFFIX in name:  # results are grouped by that suffix (run_key)
            raise refuse(f"--variants: name {name!r} contains {SEED_SUFFIX!r}, the suffix of supernet seeds; "
                             "rename it")
        kv = {}
        for item in filter(None, (x.strip() for x in body.split(","))):
            k, _, v = item.partition("=")
            kind = TRAIN_KEYS.get(k) or SPACE_KEYS.get(k)
            if kind is None:
                raise refuse(f"--variants {name}: unknown key {k!r}; use {', '.join([*SPACE_KEYS, *TRAIN_KEYS])}")
            kv[k] = kind(v)
        out[name] = kv
    if not out:
        raise refuse("--variants: give at least one NAME:key=value")
    return out


def variant_space(space: dict, v: dict) -> dict:
    d = json.loads(json.dumps(space))
    if "mode" in v:
        mode = v["mode"]
        experts = v.get("experts", 1 if mode == "none" else max(2, int(d["mos"].get("experts", 2))))
        d["mos"] = dict(d["mos"], mode=mode, experts=experts)
    return d


def train_argv(args, space_file: Path, run: Path, v: dict, seed: int) -> list[str]:
    argv = [sys.executable, "-m", "cosearch.cli", "train", "--space", str(space_file), "--task", args.task,
            "--out", str(run), "--steps", str(v.get("steps", args.steps)), "--max-tokens", str(args.max_tokens),
            "--seed", str(seed), "--ckpt-every", str(max(1, v.get("steps", args.steps) // 4)), "--no-progress"]
    if args.max_len:
        argv += ["--max-len", str(args.max_len)]
    if args.tokenizer:  # standalone jobs take the supernet's tokenizer (its cache), never their own
        argv += ["--tokenizer", args.tokenizer]
    if args.data:
        argv += ["--data", str(Path(args.data).resolve())]
    for k in TRAIN_KEYS:
        if k in v and k != "steps":
            argv += [f"--{k.replace('_', '-')}", str(v[k])]
    if args.gpu:
        argv.append("--gpu")
    return argv


def machine() -> dict:
    import numpy
    import scipy
    import torch
    from git_version import code_version
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
           "scipy": scipy.__version__, "cpus": os.cpu_count(), "platform": platform.platform(),
           **code_version()}
    if torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="tiny_lm")
    p.add_argument("--task", default="lm", choices=["lm", "translation"])
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=None, help="work folder (a rerun resumes); needed except with --rescore")
    p.add_argument("--steps", type=int, default=300, help="supernet steps (a variant may set its own)")
    p.add_argument("--standalone-steps", type=int, default=None, help="standalone steps (default --steps)")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--max-len", type=int, default=None)
    p.add_argument("--tokenizer", choices=["unigram", "bpe"], default=None,
                   help="the supernets' tokenizer (default: cosearch train's; code_lm's recipe is bpe)")
    p.add_argument("--variants", default="none:mode=none;layer:mode=layer")
    p.add_argument("--supernet-seeds", type=int, default=1, help="supernets per variant (seeds --first-seed, "
                   "--first-seed + 1, ...)")
    p.add_argument("--first-seed", type=int, default=0, help="the first supernet seed (default 0): more seeds "
                   "of variants already checked, gathered with theirs by --rescore OLD.json,NEW.json")
    p.add_argument("--archs", type=int, default=24)
    p.add_argument("--per-bin", type=int, default=4)
    p.add_argument("--arch-seed", type=int, default=0)
    p.add_argument("--noise-archs", type=int, default=4)
    p.add_argument("--distilled-archs", type=int, default=0)
    p.add_argument("--dropouts", default="", help="dropout sweep, e.g. 0,0.1")
    p.add_argument("--step-scales", default="1", help="standalone steps sweep, e.g. 1,2")
    p.add_argument("--bleu", action="store_true")
    p.add_argument("--eval-tokens", type=int, default=None, metavar="N",
                   help="score each model on about the first N tokens of each split (default: all)")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--supernet-share", type=float, default=0.25, help="GPU share of a supernet job")
    p.add_argument("--gpu-share", type=float, default=0.125, help="GPU share of a standalone job")
    p.add_argument("--parallel", type=int, default=None, help="jobs at once (default: 1 on CPU, Ray's limits on GPU)")
    p.add_argument("--dry-run", action="store_true", help="print the supernet commands and stop")
    p.add_argument("--result", default=None, help="also write the gathered JSON here")
    p.add_argument("--copy-small", default=None, metavar="DIR", help="copy the small files (no checkpoints) here")
    p.add_argument("--report-only", action="store_true", help="rebuild the reports and the JSON from "
                   "--out's run_info, plans and measurements (e.g. copied from the GPU machine)")
    p.add_argument("--rescore", default=None, metavar="JSON[,JSON...]", help="score the per-arch rows kept in an "
                   "earlier result JSON again with this version's statistics (its work folder may be gone); "
                   "writes --result. Several JSONs of the same archs (e.g. other supernet seeds) become one result, "
                   "their reports compared together: checked against one reference, or given --reference-parts")
    p.add_argument("--reference-parts", default=None, metavar="FOLDER,...", help="with --rescore: score the "
                   "kept inherited rows against a reference trained in parts (`cosearch fidelity --shard K/N` "
                   "folders), on the archs those parts have scored so far; parts of references planned from runs of "
                   "other dropouts (the first folder's is the run's own) are a dropout sweep")
    p.add_argument("--standalone-from", default=None, action="append", metavar="CHECK", help="train no standalone "
                   "runs: every check reuses the standalone scores of this earlier check (`cosearch fidelity "
                   "--standalone-from`; once per part of a reference trained with --shard)")
    p.add_argument("--checks", default=None, metavar="NAME=FOLDER,...", help="gather checks already made by "
                   "`cosearch fidelity` (e.g. each supernet seed against one reference) into --result and compare "
                   "them; NAME is a variant, NAME_seedN its seed N")
    p.add_argument("--note", default=None, help="with --checks: what the checks are (kept as the JSON's `what`)")
    p.add_argument("--compare", default="", help="variant pairs to compare, e.g. layer:none,layer:params "
                   "(B may be a zero-cost proxy; default: every variant against the first)")
    args = p.parse_args(argv)
    if not args.out and not args.rescore and not args.checks:
        p.error("the following arguments are required: --out")
    pairs = parse_pairs(args.compare)
    command = shlex.join(["benchmarks/fidelity.py", *(sys.argv[1:] if argv is None else argv)])  # as recorded
    if args.first_seed and (args.checks or args.report_only or args.rescore):
        p.error("--first-seed chooses the supernets to train: give it without --checks, --report-only or --rescore")
    if args.checks:
        if args.out or args.report_only or args.rescore:
            p.error("--checks gathers checks already made: give it without --out, --report-only or --rescore")
        return gather_checks(parse_checks(args.checks), args.result, pairs, command, args.note)
    if args.report_only:
        return gather(Path(args.out), args.result, pairs)
    parts = None if args.reference_parts is None else [Path(f.strip()) for f in args.reference_parts.split(",")
                                                         if f.strip()]
    if parts is not None and (not args.rescore or not parts):
        p.error("--reference-parts FOLDER,... rescores a result JSON: give it with --rescore")
    if args.rescore:
        sources = [Path(f.strip()) for f in args.rescore.split(",") if f.strip()]
        if not sources:
            p.error("--rescore JSON[,JSON...]: give at least one result JSON")
        return rescore(sources, args.result, pairs, parts, command)
    if args.first_seed < 0 or args.supernet_seeds < 1:
        raise refuse(f"--first-seed {args.first_seed} --supernet-seeds {args.supernet_seeds}: give a first seed "
                     ">= 0 and at least 1 seed")
    variants = parse_variants(args.variants)

    from cosearch.atomic import make_dir
    from cosearch.errors import UserError
    from cosearch.fidelity.plan import FidelitySettings, make_plan, plan_jobs, prepare_jobs, read_run
    from cosearch.outdirs import mark
    from cosearch.jobs import Job, run_jobs
    from cosearch.space import SearchSpace

    try:  # the checks' settings, refused before any training (a check would refuse them after the wave)
        settings = FidelitySettings(archs=args.archs, per_bin=args.per_bin, seed=args.arch_seed,
                                    noise_archs=args.noise_archs, distilled_archs=args.distilled_archs,
                                    dropouts=tuple(float(x) for x in args.dropouts.split(",") if x.strip()),
                                    step_scales=tuple(float(x) for x in args.step_scales.split(",") if x.strip()),
                                    steps=args.standalone_steps or args.steps, bleu=args.bleu, gpu=args.gpu,
                                    eval_tokens=args.eval_tokens,
                                    standalone_seed=0)  # every supernet seed against the same standalone runs
        settings.check()
    except UserError as e:
        raise refuse(str(e)) from None
    except ValueError as e:  # a list flag that is not numbers
        raise refuse(f"--dropouts / --step-scales: {e}; give numbers separated by commas") from None
    t0 = time.time()
    started_on = machine()  # the code the runs start from: a long run can outlive a commit
    out = Path(args.out).resolve()  # the jobs' done-files are read relative to their own folders
    space = SearchSpace.load(args.space).to_dict()
    runs, argvs = {}, {}
    for name, v in variants.items():
        for seed in range(args.first_seed, args.first_seed + args.supernet_seeds):
            key = run_key(name, seed)
            sf = out / "spaces" / f"{name}.yaml"
            runs[key] = out / "supernets" / key
            argvs[key] = (sf, variant_space(space, v), train_argv(args, sf, runs[key], v, seed))
    try:  # a rerun resumes; a run of other supernets here would drop theirs
        before = _read(out / "run_info.json")
    except (OSError, json.JSONDecodeError):  # damaged: this run writes it again
        before = None
    lost = sorted(set(before.get("supernets") or {}) - set(runs)) if isinstance(before, dict) else []
    if lost:
        raise refuse(f"--out {out} holds the checks of {', '.join(lost)}, which this run would drop from its "
                     "result; give a new --out and gather both results with --rescore A.json,B.json")
    if args.dry_run:
        for key, (_, _, a) in argvs.items():
            print(key, " ".join(a))
        return 0
    (out / "spaces").mkdir(parents=True, exist_ok=True)
    for sf, sd, _ in argvs.values():
        sf.write_text(json.dumps(sd, indent=1))
    parallel = args.parallel if args.parallel is not None else (None if args.gpu else 1)
    env = (("OMP_NUM_THREADS", "1"),) if parallel != 1 else ()
    share = args.supernet_share if args.gpu else 0.0

    def supernet_jobs(first_only: bool) -> list[Job]:
        done = "checkpoints" if first_only else "summary.json"
        return [Job(f"start-{k}" if first_only else f"train-{k}", tuple(a + (["--time-limit", "1"] if first_only else [])),
                    done=str(runs[k] / done), gpu=share, env=env) for k, (_, _, a) in argvs.items()]

    # 0: start each supernet (config, tokenizer, a first checkpoint); the first one trains the
    # tokenizer, the others reuse its cache, so that every run shares one tokenizer
    logs = out / "logs"
    first = next(iter(runs))
    start = supernet_jobs(True)
    res = run_jobs(start[:1], logs, parallel=1, progress=False)
    for k, r in runs.items():
        if k != first and not r.exists() and (runs[first] / "tokenizers").is_dir():
            shutil.copytree(runs[first] / "tokenizers", r / "tokenizers")
    res += run_jobs(start[1:], logs, parallel=parallel, progress=False)
    if not all(r.ok for r in res):
        raise SystemExit("a supernet did not start: " + "; ".join(f"{r.name}: {r.tail}" for r in res if not r.ok))

    check_same_recipe(runs)
    if args.standalone_from is not None:  # a reference that cannot serve is refused before any training
        check_reference(args.standalone_from, runs, settings, out)
    # 1: the supernets and every standalone job in one wave (a standalone job shared by
    # several variants is one job; a teacher job runs after its supernet's training)
    jobs_root = out / "standalone"
    # marked as a check's jobs folder: it also holds the supernets' job logs (train-*), which no
    # jobs folder of `cosearch fidelity` holds, so the checks below would not take it as theirs
    if args.standalone_from is None:
        mark(make_dir(jobs_root), "fidelity")
    wave, seen, teacher_jobs = supernet_jobs(False), set(), []
    for k, r in (runs.items() if args.standalone_from is None else ()):
        run = read_run(r)
        plan = make_plan(run, settings)
        prepare_jobs(plan, run, jobs_root)
        for j, spec in zip(plan_jobs(plan, run, jobs_root, args.gpu_share, env), plan.jobs):
            if j.name not in seen:
                seen.add(j.name)
                if spec["teacher"]:
                    j = dataclasses.replace(j, after=(f"train-{k}",))
                (teacher_jobs if spec["teacher"] else wave).append(j)
    res = run_jobs(wave + teacher_jobs, jobs_root, parallel=parallel)
    failed = {r.name: r.tail for r in res if not r.ok}
    train_s = time.time() - t0

    # 2: the checks (jobs done: measure and report)
    from cosearch.fidelity.run import fidelity
    for k, r in runs.items():
        if f"train-{k}" in failed:  # its newest checkpoint is the start probe's: nothing to check
            failed[f"fidelity-{k}"] = "not checked: its supernet training failed"
            continue
        try:
            fidelity(r, out / "fidelity" / k, settings, jobs_dir=jobs_root if args.standalone_from is None else None,
                     parallel=parallel, gpu_share=args.gpu_share, progress=False, standalone_from=args.standalone_from)
        except UserError as e:  # failed jobs: the partial report is still written
            failed[f"fidelity-{k}"] = str(e)
        except ImportError as e:  # no scipy/matplotlib here: OUT/fidelity/K/measured.json is written
            print(f"{k}: no report here ({e}); rebuild it with --report-only where scipy is")
    # a check trains what the wave left unfinished (e.g. a standalone run that ran out of GPU
    # memory beside the others): such a job is done now and no longer a failure
    retried = sorted(j.name for j in wave + teacher_jobs
                     if j.name in failed and j.name in seen and j.done_path(jobs_root).exists())
    for name in retried:
        del failed[name]
    import torch
    wall = time.time() - t0
    info = {"benchmark": "fidelity", "space": args.space, "task": args.task, "data": args.data,
            "steps": args.steps, "standalone_steps": settings.steps, "max_tokens": args.max_tokens,
            "settings": vars(args), "machine": started_on, "wall_s": round(wall, 1), "train_wave_s": round(train_s, 1),
            "gpu_seconds": round(wall * (torch.cuda.device_count() if args.gpu else 0), 1), "failed": failed,
            "retried_by_checks": retried,
            "variants": {k: variants[variant_of(k)] for k in runs},
            # the recipe each supernet was trained with (a variant lists only what it sets;
            # the defaults, distill among them, change between versions)
            "supernets": {k: {"summary": _read(r / "summary.json"),
                              "train": (_read(r / "config.json") or {}).get("train"),
                              "specialisation": specialisation(r)}
                          for k, r in runs.items()}}
    (out / "run_info.json").write_text(json.dumps(info, indent=1))
    if args.copy_small:
        copy_small(out, Path(args.copy_small))
    return gather(out, args.result, pairs) if not failed else 1


def check_same_recipe(runs: dict[str, Path]) -> None:
    """SystemExit unless every supernet seed of a variant records the same training settings:
    a folder resumed with more seeds after a default changed would pool two recipes under one
    name (the variant lists only what it sets)."""
    d = recipe_difference(runs)
    if d is not None:
        name, k0, key, diff, v0, v1 = d
        raise refuse(f"--variants {name}: {k0} was trained with {diff}={v0!r}, {key} with {v1!r} (a default "
                     f"changed in between?); add {diff}={v0} to the variant, or use a new --out")


def recipe_difference(runs: dict[str, Path]) -> tuple | None:
    """The first training setting on which two supernet seeds of one variant differ:
    (variant, first seed's run, other run, setting, first's value, other's value), else None."""
    return train_difference({key: json.loads((run / "config.json").read_text())["train"] for key, run in runs.items()})


#: training settings that keep a run's weights as they are: how often it logs and checkpoints
BOOKKEEPING = ("ckpt_every", "log_every", "keep_checkpoints")


def train_difference(trains: dict[str, dict]) -> tuple | None:
    """:func:`recipe_difference` of recorded training settings (run or report name -> its
    ``train`` settings), :data:`BOOKKEEPING` left out (a run of this script checkpoints every
    quarter of its steps, one of `cosearch train` every 500)."""
    from cosearch.training.train import recorded_defaults
    base = recorded_defaults()  # what a setting missing from an older run was
    first: dict[str, tuple[str, dict]] = {}
    for key, own in trains.items():
        train = {k: v for k, v in {**base, **own}.items() if k not in BOOKKEEPING}
        name = variant_of(key)
        if name not in first:
            first[name] = (key, train)
            continue
        k0, t0 = first[name]
        diff = next((k for k in t0 if t0[k] != train.get(k)), None)
        if diff is not None:
            return name, k0, key, diff, t0[diff], train.get(diff)
    return None


def step_count_difference(reports: dict[str, dict]) -> tuple[str, dict] | None:
    """(variant, {report name: its supernet's planned steps}) for the first variant whose
    seeds come from supernets of other step counts (one unrecorded among them counts as
    other), else None."""
    steps: dict[str, dict] = {}
    for k, rep in reports.items():
        steps.setdefault(variant_of(k), {})[k] = (rep.get("supernet") or {}).get("steps_planned")
    return next(((v, by_key) for v, by_key in steps.items() if len(set(by_key.values())) > 1), None)


def check_reference(reference: list[str], runs: dict[str, Path], settings, out: Path) -> None:
    """SystemExit unless ``reference`` (each ``--standalone-from``) together scored every standalone job of
    every supernet's check (``cosearch.fidelity.run.reference_scores``)."""
    from cosearch.errors import UserError
    from cosearch.fidelity.measure import task_data
    from cosearch.fidelity.plan import make_plan, read_run
    from cosearch.fidelity.run import reference_scores
    for key, r in runs.items():
        run = read_run(r)
        try:
            reference_scores(reference, make_plan(run, settings), task_data(run.run_dir, run.config),
                             out / "fidelity" / key)
        except UserError as e:
            raise refuse(f"{key}: {e}") from None


def add_valid_comparisons(info: dict, pairs: list[tuple[str, str]] | None) -> None:
    """``comparisons_valid``: the comparisons again on the validation split, where the
    headline is the test split (choices are made on validation, the test split reported)."""
    if any("test_loss" in rep["summary"] for rep in info["reports"].values()):
        with contextlib.redirect_stdout(io.StringIO()):  # its skips were printed for the headline
            info["comparisons_valid"] = compare_variants(info["reports"], pairs, metric="valid_loss")


def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def specialisation(run: Path) -> list[dict]:
    """MoS expert distance and router spread over training (from the run's metrics)."""
    from cosearch.training.rundir import read_metrics
    return [{k: m[k] for k in ("step", "mos_expert_dist", "mos_router_spread", "router_term") if k in m}
            for m in read_metrics(run) if "mos_router_spread" in m]


def copy_small(out: Path, dest: Path) -> None:
    """What the report needs, without checkpoints: run_info, each check's plan and measurements."""
    for pattern in ("run_info.json", "fidelity/*/plan.json", "fidelity/*/measured.json", "fidelity/*/fidelity.json",
                    "fidelity/*/fidelity.png"):
        for f in out.glob(pattern):
            target = dest / f.relative_to(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)


def parse_pairs(text: str) -> list[tuple[str, str]] | None:
    """``A:B,C:D`` -> [(A, B), (C, D)] (A against B); empty -> None (each against the first)."""
    pairs = [tuple(x.strip().split(":")) for x in text.split(",") if x.strip()]
    if any(len(q) != 2 or not all(n.isidentifier() for n in q) for q in pairs):
        raise refuse(f"--compare {text!r}: give variant pairs as A:B,C:D")
    return pairs or None


def gather(out: Path, result: str | None, pairs: list[tuple[str, str]] | None = None) -> int:
    """One JSON of every variant's report (rebuilt from plan and measurements), with the run info."""
    from cosearch.fidelity.run import write_report
    info = json.loads((out / "run_info.json").read_text())
    info["reports"] = {}
    for k in info["variants"]:
        if f"fidelity-{k}" in info.get("failed", {}) and not (out / "fidelity" / k / "measured.json").is_file():
            print(f"{k}: not checked ({info['failed'][f'fidelity-{k}']})")
            continue
        rep = write_report(out / "fidelity" / k)
        info["reports"][k] = kept(rep)
        g = rep["goals"] or {}
        print(f"{k}: tau {g.get('tau')}, lower {g.get('tau_lower')}, within-bin {g.get('within_bin_tau')}, "
              f"best proxy {g.get('best_proxy')} {g.get('best_proxy_tau')}")
    if pairs is None:  # the pairs the run was given (a rebuilt report keeps its comparisons)
        pairs = parse_pairs(info.get("settings", {}).get("compare") or "")
    info["comparisons"] = compare_variants(info["reports"], pairs)
    add_valid_comparisons(info, pairs)
    print_comparisons(info["comparisons"])
    text = json.dumps(info, indent=1)
    (out / "result.json").write_text(text)
    if result:
        Path(result).parent.mkdir(parents=True, exist_ok=True)
        Path(result).write_text(text)
    return 0


def kept(rep: dict) -> dict:
    """What a result JSON keeps of a check's report (enough to rescore and compare it)."""
    out = {"supernet": rep.get("supernet"), "goals": rep["goals"], "summary": rep["summary"],
           "per_arch": rep["per_arch"]}
    # what a rescoring against other standalone scores compares: how the models were scored
    for key in ("settings", "tokenizer", "max_tokens"):
        if rep.get(key) is not None:
            out[key] = rep[key]
    return out


def print_comparisons(comparisons: dict[str, dict]) -> None:
    for name, c in comparisons.items():
        if c["kendall_diff"] is None:
            print(f"{name}: too few archs to compare with {c['baseline']} (n = {c['n']})")
            continue
        wb = c.get("within_bin_diff")
        print(f"{name}: {c['headline']} tau {c['kendall_diff']:+.3f} {c['kendall_diff_ci']}, within-bin "
              f"{'n/a' if wb is None else format(wb, '+.3f')} {c.get('within_bin_diff_ci')} vs {c['baseline']} "
              f"({c['seeds_a']} vs {c['seeds_b']} seeds, n = {c['n']})")


def parse_checks(text: str) -> dict[str, Path]:
    """``NAME=FOLDER,...`` -> {NAME: FOLDER}: NAME a variant, or ``VARIANT_seedN`` its seed N;
    each folder a `cosearch fidelity` --out folder (plan and measurements), named once."""
    checks, seen = {}, {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name, sep, folder = item.partition("=")
        variant, _, seed = name.partition(SEED_SUFFIX)
        if not sep or not folder or not variant.isidentifier() or (_ and not seed.isdigit()):
            raise refuse(f"--checks {item!r}: give NAME=FOLDER (NAME a variant, or NAME{SEED_SUFFIX}N its seed N)")
        if name in checks:
            raise refuse(f"--checks: {name} is named twice; give each check its own name")
        for f in ("plan.json", "measured.json"):
            if not (Path(folder) / f).is_file():
                raise refuse(f"--checks {name}={folder}: no {f} there; give a `cosearch fidelity` --out folder")
        real = Path(folder).resolve()
        if real in seen:  # one check under two names would count as two seeds
            raise refuse(f"--checks: {seen[real]} and {name} are the same check ({folder}); name each once")
        checks[name], seen[real] = Path(folder), name
    if not checks:
        raise refuse("--checks: give at least one NAME=FOLDER")
    return checks


def gather_checks(checks: dict[str, Path], result: str | None, pairs: list[tuple[str, str]] | None,
                  command: str = "", note: str | None = None) -> int:
    """One result JSON from checks made by `cosearch fidelity` itself (the path users run),
    each report built from its plan and measurements (the check folders are left as they are),
    with the comparisons asked for. Refused, before anything is written: checks against other
    standalone runs, seeds of one variant from supernets of other recipes, a pair naming
    neither a checked variant nor a proxy."""
    from cosearch.errors import UserError
    from cosearch.fidelity.proxies import PROXIES
    from cosearch.fidelity.run import read_report
    if not result:
        raise refuse("--checks needs --result (where to write the gathered JSON)")
    names = {variant_of(k) for k in checks}
    for pair in pairs or []:
        for side in pair:
            if side not in names and side not in PROXIES:
                raise refuse(f"--compare {':'.join(pair)}: {side} is neither a checked variant "
                             f"({', '.join(sorted(names))}) nor a proxy ({', '.join(PROXIES)})")
    reports = {}
    for k, folder in checks.items():
        try:
            rep = read_report(folder)
        except UserError as e:
            raise refuse(f"--checks {k}: {e}") from None
        reports[k] = {"run": rep.get("run"), "settings": rep.get("settings"), **kept(rep)}
    first, *others = reports
    for k in others:  # compare_variants scores every side against the first report's reference
        if [r["standalone"] for r in reports[k]["per_arch"]] != [r["standalone"] for r in reports[first]["per_arch"]]:
            raise refuse(f"--checks: {k} and {first} were checked against other standalone runs (or archs); "
                         "gather only checks of one reference")
    runs = {k: Path(r["run"]) for k, r in reports.items() if r["run"]}
    if len(runs) == len(reports) and all((r / "config.json").is_file() for r in runs.values()):
        d = recipe_difference(runs)  # seeds pooled must be seeds of one recipe
        if d is not None:
            raise refuse(f"--checks: {d[1]} and {d[2]}, seeds of {d[0]}, come from supernets trained with "
                         f"other {d[3]} ({d[4]!r} vs {d[5]!r}); give them other variant names")
    else:  # the runs live elsewhere (e.g. checks copied from a GPU machine): their step counts at least
        d = step_count_difference(reports)
        if d is not None:
            raise refuse(f"--checks: the seeds of {d[0]} come from supernets of other step counts ({d[1]}); "
                         "give them other variant names")
    info = {"benchmark": "fidelity (checks made by cosearch fidelity)", "command": command, "what": note,
            "machine": machine(), "checks": {k: str(v) for k, v in checks.items()}, "reports": reports}
    info["comparisons"] = compare_variants(reports, pairs)
    add_valid_comparisons(info, pairs)
    print_comparisons(info["comparisons"])
    Path(result).parent.mkdir(parents=True, exist_ok=True)
    Path(result).write_text(json.dumps(info, indent=1))
    return 0


def rescore(paths: list[Path], result: str | None, pairs: list[tuple[str, str]] | None = None,
            parts: list[Path] | None = None, command: str = "") -> int:
    """An earlier result JSON with every report scored again from its per-arch rows, and
    its comparisons redone (``pairs`` instead, when given). ``rescored`` records this commit
    and every value that was there before and now differs (``changed``: its path, old and new),
    so a statistic that moved between versions is seen, not silently overwritten.

    With ``parts`` (the --out folders of a reference trained in parts, ``cosearch fidelity
    --shard K/N``), every row takes its standalone scores from them instead (see
    :func:`reference_from_parts`) and the JSON is another result: the source's own fields,
    which describe its reference, move under ``source``; a comparison that cannot be redone
    here is dropped (named in ``comparisons_dropped``), not kept against the old reference;
    ``changed`` is not listed (every standalone value is another).

    Several JSONs (``paths``) become one result (:func:`merge_results`): e.g. more supernet
    seeds trained later (``--first-seed``), compared with the first JSON's as one variant."""
    import copy
    from git_version import code_version
    from cosearch.fidelity.report import score_rows
    if not result:
        raise refuse("--rescore needs --result (where to write the rescored JSON)")
    loaded, text = [], None
    for path in paths:
        try:
            own = path.read_text()
            loaded.append(json.loads(own))
            text = own if text is None else text  # the first JSON's layout is kept
        except (OSError, json.JSONDecodeError) as e:
            raise refuse(f"--rescore {path}: not a readable result JSON ({e})") from None
        check_kept_reports(loaded[-1], path)
    info = merge_results(paths, loaded, parts is not None) if len(paths) > 1 else loaded[0]
    before = copy.deepcopy({k: info.get(k) for k in ("reports", "comparisons")})
    seed = check_seed(info)
    if parts:
        ref = reference_from_parts(info["reports"], parts)
        info = {"benchmark": "fidelity (kept reports against a reference trained in parts)",
                "reference_parts": ref, "reports": info["reports"], "comparisons": info.get("comparisons") or {},
                "source": {k: v for k, v in info.items() if k not in ("reports", "comparisons", "comparisons_valid")}}
    for rep in info["reports"].values():
        rep.update({k: v for k, v in score_rows(rep["per_arch"], seed).items() if k != "headline"})
    if pairs is not None:
        info["comparisons"] = compare_variants(info["reports"], pairs)
    else:  # each comparison it had, under its own name; one against another JSON's variant stays as it was
        from cosearch.fidelity.proxies import PROXIES
        here = {variant_of(k) for k in info["reports"]} | set(PROXIES)
        dropped = []
        for name, c in list((info.get("comparisons") or {}).items()):
            again = (compare_variants(info["reports"], [(c["variant"], c["baseline"])])
                     if c["variant"] in here and c["baseline"] in here else {})
            if again:  # else kept as it was (the archs differ, or a side lives elsewhere)
                info["comparisons"][name] = next(iter(again.values()))
            elif parts:  # against the old reference: not a figure of this one
                del info["comparisons"][name]
                dropped.append(name)
        if dropped:
            info["comparisons_dropped"] = dropped
    add_valid_comparisons(info, pairs if pairs is not None else
                          [(c["variant"], c["baseline"]) for c in (info.get("comparisons") or {}).values()])
    # against parts every standalone value is another, and merged seeds pool into new comparisons:
    # neither is a statistic that moved between versions
    changed = [] if parts or len(paths) > 1 else list(changed_values(before, {k: info.get(k) for k in before}))
    for where, old, new in changed[:10]:
        print(f"changed: {where}: {old} -> {new}")
    if len(changed) > 10:
        print(f"changed: {len(changed) - 10} more values (all in the JSON's rescored.changed)")
    if "rescored" in info:  # an earlier rescoring's record stays, oldest first
        info["rescored_history"] = [*info.get("rescored_history", []), info["rescored"]]
    info["rescored"] = {"from": ",".join(p.name for p in paths), "command": command, **code_version(),
                        "changed": [{"path": w, "old": o, "new": n} for w, o, n in changed]}
    Path(result).parent.mkdir(parents=True, exist_ok=True)
    # laid out as the source was (one line or indented), so its diff shows only what changed
    Path(result).write_text(json.dumps(info, indent=1 if "\n" in text.strip() else None))
    return 0


def merge_results(paths: list[Path], infos: list[dict], new_reference: bool) -> dict:
    """One result JSON of several (``--rescore A.json,B.json``): the first's fields, every
    report of each (``merged`` lists the others' own fields, e.g. their machines and
    commands). Refused (exit 2) unless the reports are named apart, picked the same archs
    with the same arch seed, and, unless ``new_reference`` (``--reference-parts`` replaces
    every standalone score), were checked against the same standalone scores: a comparison
    pools reports against one reference."""
    first, reports, seeds = infos[0], {}, {}
    for path, info in zip(paths, infos):
        for key, rep in info["reports"].items():
            if key in reports:
                raise refuse(f"--rescore: {path} and {reports[key][0]} both hold a report {key}; give results of "
                             "other variants or seeds (--first-seed)")
            reports[key] = (path, rep)
        seeds[path] = check_seed(info)
    (p0, r0), *rest = reports.values()
    for path, rep in rest:
        if [r["arch"] for r in rep["per_arch"]] != [r["arch"] for r in r0["per_arch"]]:
            raise refuse(f"--rescore: {path} checked other archs than {p0}; give results of one space, data and "
                         "arch seed")
        standalone = [r["standalone"] for r in rep["per_arch"]]
        if not new_reference and standalone != [r["standalone"] for r in r0["per_arch"]]:
            raise refuse(f"--rescore: {path} and {p0} were checked against other standalone runs; give "
                         "--reference-parts to read them all against one reference")
    if len(set(seeds.values())) > 1:
        raise refuse(f"--rescore: the results' arch seeds differ ({', '.join(f'{p}: {s}' for p, s in seeds.items())})")
    # seeds pooled under one variant name must be seeds of one recipe (as within one --out)
    trains = {k: ((info.get("supernets") or {}).get(k) or {}).get("train") for info in infos for k in info["reports"]}
    d = train_difference({k: t for k, t in trains.items() if t is not None})
    if d is not None:
        raise refuse(f"--rescore: {d[1]} ({reports[d[1]][0]}) and {d[2]} ({reports[d[2]][0]}), seeds of {d[0]}, "
                     f"come from supernets trained with other {d[3]} ({d[4]!r} vs {d[5]!r}); give results of "
                     "one recipe per variant name")
    d = step_count_difference({k: rep for k, (_, rep) in reports.items()})
    if d is not None:
        raise refuse(f"--rescore: the seeds of {d[0]} come from supernets of other step counts ({d[1]}); "
                     "give results of one recipe per variant name")
    merged = {k: v for k, v in first.items() if k not in ("reports", "comparisons", "comparisons_valid")}
    merged["reports"] = {k: rep for k, (_, rep) in reports.items()}
    merged["comparisons"] = {}
    for info in infos:  # every JSON's comparisons, the first's on a name they share
        for name, c in (info.get("comparisons") or {}).items():
            merged["comparisons"].setdefault(name, c)
    merged["merged"] = [{"from": p.name, **{k: v for k, v in info.items()
                                            if k not in ("reports", "comparisons", "comparisons_valid")}}
                        for p, info in zip(paths[1:], infos[1:])]
    return merged


def check_kept_reports(info, path: Path) -> None:
    """Refuse (exit 2) a JSON that holds no kept reports to score: a dict whose ``reports``
    map names to reports with per-arch rows, each naming its arch and inherited scores."""
    reports = info.get("reports") if isinstance(info, dict) else None
    ok = isinstance(reports, dict) and reports and all(
        isinstance(r, dict) and isinstance(r.get("per_arch"), list) and r["per_arch"] and all(
            isinstance(row, dict) and "arch" in row and "inherited" in row for row in r["per_arch"])
        for r in reports.values())
    if not ok:
        raise refuse(f"--rescore {path}: holds no reports with per-arch rows; give a result JSON that "
                     "benchmarks/fidelity.py wrote (--result)")


def check_seed(info: dict) -> int:
    """The arch seed of the checks a result JSON holds (their bootstrap seed too): a run's
    --arch-seed, or, for gathered checks (--checks), the first report's plan seed."""
    if "arch_seed" in (info.get("settings") or {}):
        return int(info["settings"]["arch_seed"])
    return int((next(iter(info["reports"].values()), {}).get("settings") or {}).get("seed", 0))


#: plan settings that decide how a standalone run is scored: a part must share them with the checks
SCORING_SETTINGS = ("seq_len", "eval_tokens")


def read_part(folder: Path) -> tuple[dict, dict, tuple[int, int]]:
    """A part's plan, its standalone scores and its (K, N); refused (exit 2) unless it is
    the --out folder of a `cosearch fidelity --shard K/N` check."""
    import dataclasses as dc
    from cosearch.errors import UserError
    from cosearch.fidelity.plan import Plan, parse_shard
    from cosearch.inputs import read_json
    try:
        plan = read_json(folder / "plan.json", "fidelity plan")
        measured = read_json(folder / "measured.json", "fidelity measurements")
    except UserError as e:
        raise refuse(f"--reference-parts {folder}: {e}; give the --out folder of a `cosearch fidelity --shard K/N` "
                     "check") from None
    need = [f.name for f in dc.fields(Plan) if f.default is dc.MISSING and f.default_factory is dc.MISSING]
    scores = measured.get("standalone") if isinstance(measured, dict) else None
    if (not isinstance(plan, dict) or any(k not in plan for k in need) or not isinstance(plan["settings"], dict)
            or not isinstance(scores, dict) or not all(v is None or isinstance(v, dict) for v in scores.values())
            or not all(isinstance(j, dict) and {"arch", "role", "name"} <= set(j) for j in plan["jobs"])):
        raise refuse(f"--reference-parts {folder}: its plan.json or measured.json lacks what a fidelity check "
                     "writes; rerun that part")
    shard = plan["settings"].get("shard")
    if shard is None:
        raise refuse(f"--reference-parts {folder}: not a part (its check ran without --shard); give it to "
                     "`cosearch fidelity --standalone-from` instead")
    kn = parse_shard(shard)
    if kn is None:
        raise refuse(f"--reference-parts {folder}: its shard {shard!r} is not K/N with 1 <= K <= N; rerun that part")
    batch = measured.get("max_tokens")
    return plan, {"standalone": scores, "tokenizer": measured.get("tokenizer"),
                  "max_tokens": batch if isinstance(batch, int) else None}, kn


def _plan_dropout(plan: dict) -> float | None:
    """The dropout of the run a part was planned from (its space's): the sweep point it trains."""
    space = plan.get("space")
    d = space.get("dropout") if isinstance(space, dict) else None
    return float(d) if isinstance(d, (int, float)) else None


#: what a sweep point's parts may plan otherwise than the first point's: the run's dropout
#: (its space's), and no seed-noise runs (those belong to the first point, the run's recipe)
_SWEEP_POINT_FREE = ("shard", "noise_archs")


def _sweep_point_view(plan: dict) -> dict:
    """A part's plan with what may differ between sweep points taken out."""
    space = plan.get("space")
    return {**plan, "settings": {k: v for k, v in plan["settings"].items() if k not in _SWEEP_POINT_FREE},
            "space": {**space, "dropout": None} if isinstance(space, dict) else space,
            "jobs": None, "noise": None}


def _combined_plan(groups: list[tuple[float | None, list[Path], list[dict]]]) -> dict:
    """One plan of every sweep point: the first point's, with each further point's grid runs
    appended (so each arch's sweep lists the run's own dropout first) and its dropout in
    ``settings.dropouts``; refused (exit 2) unless the points plan the same archs and
    settings, each at its own dropout, one sweep point per dropout."""
    base_d, base_folders, base_plans = groups[0]
    base = base_plans[0]
    jobs = list(base["jobs"])
    dropouts = [float(d) for d in base["settings"].get("dropouts") or ()]
    seen = {base_d, *dropouts}
    for d, folders, plans in groups[1:]:
        if d is None or d in seen:
            raise refuse(f"--reference-parts {folders[0]}: planned otherwise than {base_folders[0]} and not as a "
                         f"dropout sweep point (its run's dropout {d} is already {base_folders[0]}'s or in its sweep); "
                         "give parts of one reference, or of references that differ only in the run's dropout")
        if _sweep_point_view(plans[0]) != _sweep_point_view(base):
            raise refuse(f"--reference-parts {folders[0]}: planned otherwise than {base_folders[0]} (archs, recipe or "
                         "settings), beyond the run's dropout; give parts of one reference, or of references that "
                         "differ only in the run's dropout")
        seen.add(d)
        dropouts.append(d)
        jobs += [j for j in plans[0]["jobs"] if j["role"] == "grid"]
    return {**base, "jobs": jobs, "settings": {**base["settings"], "dropouts": dropouts}}


def reference_from_parts(reports: dict[str, dict], folders: list[Path]) -> dict:
    """Put the standalone scores of a reference trained in parts into every report's per-arch
    rows (in place): each row is rebuilt from the parts' plan (the same archs, in the same
    order, as the rows) with the report's own inherited scores. An arch without a score for
    every point of its sweep (its grid runs: a part not trained yet holds some) has no
    standalone score and drops out of every statistic. For reading a reference while its
    parts are still being trained; refused (exit 2) unless the folders are parts of one plan
    (the same plan but for ``--shard``, each shard once, of one N), of the reports' archs
    and scoring settings, that agree on the tokenizer and on any run two of them hold.

    The parts may also be of several references that differ only in the dropout of the run
    they were planned from (a probe whose space sets another dropout): each such reference
    is a point of a dropout sweep, its runs named as that point of a ``--dropouts`` sweep of
    the first reference's run would name them. The first folder's reference is the run's own
    recipe (``untuned``); each arch keeps its best point by validation loss."""
    from cosearch.errors import UserError
    from cosearch.fidelity.plan import Plan
    from cosearch.fidelity.report import per_arch
    from cosearch.fidelity.run import merge_scores
    held, tokenizers, batches = [], set(), set()
    groups: dict[float | None, tuple[list[Path], list[dict], dict]] = {}  # dropout -> folders, plans, shards
    for folder in folders:
        plan, measured, (k, n) = read_part(folder)
        g_folders, g_plans, shards = groups.setdefault(_plan_dropout(plan), ([], [], {}))
        if (k, n) in shards:
            raise refuse(f"--reference-parts: {shards[(k, n)]} and {folder} are both part {k}/{n}; give each part once")
        shards[(k, n)] = folder
        held.append((folder, measured["standalone"]))
        if measured["tokenizer"] is not None:
            tokenizers.add(str(measured["tokenizer"]))
        if measured["max_tokens"] is not None:
            batches.add(measured["max_tokens"])
        g_folders.append(folder)
        g_plans.append(plan)
    try:
        scores = merge_scores(held, "--reference-parts")
    except UserError as e:
        raise refuse(str(e)) from None
    for g_folders, g_plans, shards in groups.values():
        first = {**g_plans[0], "settings": {**g_plans[0]["settings"], "shard": None}}
        for folder, plan in zip(g_folders[1:], g_plans[1:]):
            if {**plan, "settings": {**plan["settings"], "shard": None}} != first:
                raise refuse(f"--reference-parts {folder}: planned otherwise than {g_folders[0]} (archs, recipe or "
                             "settings); give parts of one reference")
        if len({n for _, n in shards}) > 1:
            raise refuse(f"--reference-parts: parts of other splits ({', '.join(f'{k}/{n}' for k, n in sorted(shards))}); "
                         "give parts of one --shard K/N")
    if len(tokenizers) > 1:
        raise refuse(f"--reference-parts: the parts scored with other tokenizers ({', '.join(sorted(tokenizers))})")
    combined = _combined_plan([(d, f, p) for d, (f, p, _) in groups.items()])
    try:
        plan = Plan(**combined)
    except TypeError as e:
        raise refuse(f"--reference-parts {folders[0]}: its plan.json is not a fidelity plan ({e})") from None
    if plan.settings.get("eval_tokens") is not None and len(batches) > 1:
        raise refuse(f"--reference-parts: the parts scored their first tokens in batches of "
                     f"{', '.join(map(str, sorted(batches)))}: other tokens; give parts scored with one --max-tokens")
    jobs_measured = sum(1 for j in plan.jobs if scores.get(j["name"]))
    partial = []
    for i in range(len(plan.archs)):  # an arch with part of its sweep scored: not scored yet
        grid = [j["name"] for j in plan.jobs if j["arch"] == i and j["role"] == "grid"]
        if any(scores.get(g) for g in grid) and not all(scores.get(g) for g in grid):
            partial.append(i)
            for g in grid:
                scores.pop(g, None)
    for key, rep in reports.items():
        if (plan.settings.get("eval_tokens") is not None and rep.get("max_tokens") is not None and batches
                and batches != {rep["max_tokens"]}):  # a prefix of other batches is other tokens
            raise refuse(f"--reference-parts: {key}'s check scored its first tokens in batches of "
                         f"{rep['max_tokens']}, the parts in {', '.join(map(str, sorted(batches)))}; give parts "
                         "scored with the same --max-tokens")
        if rep.get("tokenizer") and tokenizers and rep["tokenizer"] not in tokenizers:
            raise refuse(f"--reference-parts: {key}'s check scored with tokenizer {rep['tokenizer']}, the parts with "
                         f"{', '.join(sorted(tokenizers))}: its losses are over other tokens; give parts of a "
                         "reference scored with its tokenizer")
        if [r["arch"] for r in rep["per_arch"]] != plan.archs:
            raise refuse(f"--reference-parts: {key}'s check picked other archs than the parts; give parts of a "
                         "reference of the same space, data and arch seed")
        theirs = rep.get("settings") or {}
        for k in SCORING_SETTINGS:
            if k in theirs and theirs[k] != plan.settings.get(k):
                raise refuse(f"--reference-parts: {key}'s check scored with {k} {theirs[k]!r}, the parts with "
                             f"{plan.settings.get(k)!r}; give parts of a reference scored as the checks were")
        rep["per_arch"] = per_arch(plan, [r["inherited"] for r in rep["per_arch"]], scores)
        if "settings" in rep:  # the check's settings are now the reference's (its steps, its sweep)
            rep["settings"] = {**plan.settings, "shard": None}
    grid_done = [i for i in range(len(plan.archs)) if any(
        scores.get(j["name"]) for j in plan.jobs if j["arch"] == i and j["role"] == "grid")]
    shards = sorted({kn for _, _, sh in groups.values() for kn in sh})
    info = {"folders": [str(f) for f in folders], "shards": [f"{k}/{n}" for k, n in shards],
            "steps": plan.settings.get("steps"), "tokenizer": next(iter(tokenizers), None),
            "jobs_planned": len(plan.jobs), "jobs_measured": jobs_measured,
            "archs_measured": len(grid_done), "archs_partly_measured": len(partial)}
    if len(groups) > 1:
        info["sweep_dropouts"] = list(groups)
    return info


def changed_values(old, new, where: str = ""):
    """(path, old, new) for each leaf value of ``old`` that ``new`` holds differently or not
    at all; keys only in ``new`` (new statistics) are not changes."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k, v in old.items():
            yield from changed_values(v, new.get(k), f"{where}.{k}" if where else str(k))
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            yield from changed_values(a, b, f"{where}[{i}]")
    elif old != new and not (_is_nan(old) and _is_nan(new)):  # nan != nan, yet nothing moved
        yield where, old, new


def _is_nan(v) -> bool:
    return isinstance(v, float) and v != v


def compare_variants(reports: dict[str, dict], pairs: list[tuple[str, str]] | None = None,
                     metric: str | None = None) -> dict[str, dict]:
    """Variant A against variant B (each with its seeds pooled) on ``metric`` (default the
    headline metric: test loss where there is a test split, else validation loss): the
    mean tau difference with a paired bootstrap interval over archs (``tau_difference``).
    ``pairs``: (A, B) pairs, default every variant against the first; B may also name a
    zero-cost proxy (``params``, ``weight_mb``, ...). Keyed "A" when B is the first variant,
    else "A vs B". Variants are compared only where their checks picked the same archs."""
    from cosearch.fidelity.proxies import PROXIES
    from cosearch.fidelity.report import bin_axis, metric_column
    from cosearch.fidelity.stats import tau_difference
    by_name: dict[str, list[dict]] = {}
    for key, rep in reports.items():
        by_name.setdefault(variant_of(key), []).append(rep)
    if not by_name:
        return {}
    first = next(iter(by_name))
    if pairs is None:
        pairs = [(name, first) for name in by_name if name != first]
    out = {}
    for a, b in pairs:
        proxy = b in PROXIES and b not in by_name  # a proxy (bigger predicts better): one "seed"
        missing = [n for n in ((a,) if proxy else (a, b)) if n not in by_name]
        if missing:
            print(f"{a} vs {b}: not compared (no report of {missing[0]})")
            continue
        reps = by_name[a] + ([] if proxy else by_name[b])
        rows = reps[0]["per_arch"]
        if any([r["arch"] for r in rep["per_arch"]] != [r["arch"] for r in rows] for rep in reps):
            print(f"{a}: not compared with {b} (its check picked other archs)")
            continue
        m = metric or ("test_loss" if "test_loss" in reps[0]["summary"] else "valid_loss")
        if m not in reps[0]["summary"]:
            continue
        preds_b = ([[-r[b] for r in rows]] if proxy else
                   [metric_column(rep["per_arch"], "inherited", m) for rep in by_name[b]])
        d = tau_difference([metric_column(rep["per_arch"], "inherited", m) for rep in by_name[a]], preds_b,
                           metric_column(rows, "standalone", m), bin_axis(rows))
        out[a if b == first else f"{a} vs {b}"] = {"variant": a, "baseline": b, "headline": m, **d}
    return out


if __name__ == "__main__":
    sys.exit(main())
