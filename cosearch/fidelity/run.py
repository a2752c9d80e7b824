"""``cosearch fidelity RUN``: does the supernet rank its sub-networks as training them
alone would?

1. Read the run and the settings; check everything before any work (``UserError``).
2. Plan (``OUT/plan.json``): pick the archs (``pick``), list the standalone jobs
   (``plan``). A rerun must plan the same; it then resumes.
3. Train the standalone jobs as independent ``cosearch train --arch`` command lines
   through :func:`cosearch.jobs.run_jobs` (Ray tasks, one GPU share each; in this process
   one after another with ``parallel=1``). Finished jobs are skipped, killed ones resume
   from their checkpoints.
4. Measure the inherited and the standalone quality (``measure``, cached).
5. Report (``OUT/fidelity.json``, ``OUT/fidelity.png``): ``report``, from ``OUT/plan.json``
   and ``OUT/measured.json`` alone, so :func:`write_report` can rebuild it on another
   machine from those two small files (e.g. where the GPU machine lacks scipy).
"""
from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

from ..atomic import atomic_write_text, make_dir
from ..outdirs import check_out, lock_out, mark
from ..errors import UserError
from ..inputs import read_json
from ..jobs import run_jobs
from .pick import unpicked_choices
from .plan import (JOB_ARCH, JOB_NAME, JOB_RUN, JOB_SPACE, PLAN, FidelitySettings, Plan, check_or_write_plan,
                   make_plan, parse_shard, plan_jobs, prepare_jobs, read_run)

REPORT, PLOT, MEASURED = "fidelity.json", "fidelity.png", "measured.json"


def fidelity(run_dir: str | Path, out: str | Path | None = None, settings: FidelitySettings = FidelitySettings(),
             *, jobs_dir: str | Path | None = None, parallel: int | None = 1, gpu_share: float = 0.125,
             max_tokens: int = 4096, progress: bool = True, address: str | None = None,
             standalone_from: str | Path | Sequence[str | Path] | None = None) -> dict:
    """Run (or resume) the fidelity check of the supernet run ``run_dir``; returns the
    report (also written to ``OUT/fidelity.json``, default the folder ``RUN-fidelity`` next
    to the run: an output is never inside an input).

    ``jobs_dir``: where the standalone jobs live (default ``OUT/jobs``; share one between
    the checks of several supernets of the same space, data and recipe to train each
    standalone run once). ``parallel``: jobs at once (1: in this process, no Ray; None:
    as many as Ray's CPUs and GPU shares allow). ``gpu_share``: each job's share of a
    GPU with ``settings.gpu`` (0.125: eight small jobs per GPU). ``standalone_from``: the
    ``--out`` folder of an earlier check (or several: the parts of a reference trained with
    ``--shard``) whose standalone scores this one reuses instead of training
    (:func:`reference_scores`: the same jobs, tokenizer and evaluation).
    """
    settings.check()
    if not 0 < gpu_share <= 1:
        raise UserError(f"--gpu-share {gpu_share:g} is invalid; give a share of one GPU in (0, 1]")
    if max_tokens < 2:
        raise UserError(f"--max-tokens {max_tokens} is invalid; give >= 2")
    if parallel is not None and parallel < 1:
        raise UserError(f"--parallel {parallel} is invalid; give 1 or more")
    import torch
    if settings.gpu and not torch.cuda.is_available():
        raise UserError("--gpu was given but torch sees no CUDA device; drop --gpu")
    sources = _sources(standalone_from)
    if sources is not None and jobs_dir is not None:
        raise UserError("--jobs and --standalone-from exclude each other (the standalone runs are either trained "
                        "in --jobs or read from an earlier check); give one")
    if sources is not None and settings.shard is not None:
        raise UserError("--shard trains part of the standalone runs, --standalone-from reads them all from earlier "
                        "checks; give one")
    run = read_run(run_dir)
    if settings.bleu and run.config.get("task") != "translation":
        raise UserError(f"--bleu scores translations, and {run.run_dir} is a {run.config.get('task')} run; drop --bleu")
    inputs = {"RUN": run.run_dir, **{"--standalone-from" + (f" {s}" if len(sources) > 1 else ""): Path(s)
                                     for s in sources or ()}}
    out = check_out(out if out is not None else default_out(run.run_dir), "fidelity", inputs=inputs,
                    legacy=lambda p: (p / PLAN).is_file())
    check_same_source(out, sources)
    root = None
    if sources is None:
        root = check_out(jobs_dir if jobs_dir is not None else out / "jobs", "fidelity", flag="--jobs",
                         inputs={"RUN": run.run_dir},
                         legacy=_old_jobs_folder)
        if root.resolve() == out.resolve() or (root / PLAN).is_file():  # jobs mixed with a check's results
            raise UserError(f"--jobs {root} is the --out folder of a check; give its jobs folder ({root / 'jobs'}) "
                            "or a new folder")
    plan = make_plan(run, settings)
    if settings.shard is not None and len(plan.jobs) < parse_shard(settings.shard)[1]:
        raise UserError(f"--shard {settings.shard}: this check plans only {len(plan.jobs)} standalone runs, so some "
                        f"parts would train none; give N <= {len(plan.jobs)}")

    from ..training.checkpoint import load_checkpoint
    from .measure import check_last_checkpoint, task_data
    td = task_data(run.run_dir, run.config)  # data and tokenizer checked before anything is written
    if settings.bleu and td.test is None:
        raise UserError(f"--bleu scores the test split's translations, and {run.config.get('data')} has no test "
                        "split; add test files there or drop --bleu")
    if sources is None:  # the supernet is scored after the standalone training: a damaged one stops it first
        weights = load_checkpoint(run.checkpoint)["model"]
        bad = next((k for k, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
        if bad is not None:  # diverged: every inherited score would be NaN, after hours of standalone training
            raise UserError(f"{run.run_dir}: its newest checkpoint ({Path(run.checkpoint).name}) holds non-finite "
                            f"weights ({bad}): its training diverged and no sub-network of it can be scored; train it "
                            "again (e.g. with a lower --lr) before checking it")
        for j in plan.jobs:  # a done job that lost its last checkpoint stops the rerun now, not after training
            if (root / j["name"] / JOB_RUN / "summary.json").is_file():
                check_last_checkpoint(root / j["name"] / JOB_RUN)
    reference = None if sources is None else reference_scores(sources, plan, td, out, max_tokens)
    # a second check of this folder, or of these jobs (checks may share one), stops here in one line
    with lock_out(out), (lock_out(root, flag="--jobs") if root is not None else nullcontext()):
        check_or_write_plan(out, plan)
        unpicked = unpicked_choices(run.space, [plan.arch(i) for i in range(len(plan.archs))])
        if unpicked:  # said once the check goes ahead, not refused: a user may check a few archs on purpose
            print(f"warning: no checked arch takes {', '.join(unpicked)}; the check says nothing about "
                  f"{'it' if len(unpicked) == 1 else 'them'} (more --archs may cover them)", file=sys.stderr)
        for folder in (out,) if root is None else (out, root):
            mark(make_dir(folder), "fidelity")
        return _run_locked(run, out, root, plan, settings, td, parallel, gpu_share, max_tokens, progress, address,
                           reference, unpicked)


def _old_jobs_folder(folder: Path) -> bool:
    """A jobs folder from before markers: only job folders (named as jobs are, holding a job's
    files) and the scores beside them, and at least one job; a user's folder that merely holds
    an ``sa-`` name is not one."""
    names = [c for c in folder.iterdir() if not c.name.startswith(".")]
    jobs = [c for c in names if JOB_NAME.fullmatch(c.name) and any((c / f).exists() for f in (JOB_SPACE, JOB_ARCH,
                                                                                                JOB_RUN))]
    return bool(jobs) and all(c in jobs or c.name == "measurements.json" for c in names)


def _sources(standalone_from) -> list[str] | None:
    """The ``--standalone-from`` folders, resolved, in the order given, each once (None: none)."""
    if standalone_from is None:
        return None
    given = [standalone_from] if isinstance(standalone_from, (str, Path)) else list(standalone_from)
    return list(dict.fromkeys(str(Path(g).resolve()) for g in given)) or None


def _recorded_source(sources: list[str] | None):
    """How ``measured.json`` records the source: None, one path, or a list of paths."""
    return None if sources is None else sources[0] if len(sources) == 1 else sources


def check_same_source(out: Path, sources: list[str] | None) -> None:
    """``UserError`` when the check in ``out`` took its standalone scores from elsewhere
    (trained, or other ``--standalone-from`` folders): a rerun must not swap its reference."""
    path = Path(out) / MEASURED
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text()).get("standalone_from")
    except (OSError, json.JSONDecodeError, AttributeError):
        return  # a damaged file is rewritten by the rerun
    listed = None if before is None else sorted([before] if isinstance(before, str) else before)
    if listed != (None if sources is None else sorted(sources)):
        shown = None if listed is None else " ".join(listed)
        was = "trained its standalone runs" if before is None else f"read its standalone scores from {shown}"
        flag = ("without --standalone-from" if before is None
                else " ".join(f"--standalone-from {b}" for b in listed))
        raise UserError(f"{out} {was}; rerun it {flag}, or choose a new --out")


def reference_scores(checks, plan: Plan, td, out: Path, max_tokens: int = 4096) -> dict:
    """The standalone scores of earlier checks (their ``--out`` folders: one, or the parts
    of a reference trained with ``--shard``) for this plan's jobs, with where they came
    from; ``UserError`` unless together they scored every job of this plan (a job's name is
    a digest of its arch, recipe, data path and seed, so the same name is the same model),
    each with the same tokenizer and the same ``--eval-tokens`` (and ``--max-tokens`` with
    it: they decide which tokens are scored), and no two of them disagree on a job. The
    data's contents are not compared: the tokenizer digest catches most other data behind
    one path.

    For checking another supernet of the same space, data and recipe when the earlier
    standalone runs' checkpoints are gone (another machine): nothing is trained again."""
    from .measure import complete
    sources = _sources(checks)
    bleu = bool(plan.settings["bleu"])
    if plan.settings["distilled_archs"]:  # a distilled job's teacher is this supernet: never in another check
        raise UserError(f"--standalone-from {sources[0]}: its distilled controls learnt from another supernet; give "
                        "--distilled-archs 0")
    scores = merge_scores([(check, _check_scores(Path(check), plan, td, out, max_tokens)) for check in sources])
    if bleu and any(scores.get(j["name"]) and not complete(scores[j["name"]], True, td) for j in plan.jobs):
        raise UserError(f"--standalone-from {' '.join(sources)} scored its standalone runs without BLEU; drop --bleu")
    missing = [j["name"] for j in plan.jobs if not complete(scores.get(j["name"]), bleu, td)]
    if missing:
        what = "with BLEU " if bleu else ""
        which, whose = ("it", "its") if len(sources) == 1 else ("they", "their")
        raise UserError(f"--standalone-from {' '.join(sources)} has no score {what}of {len(missing)} of this "
                        f"check's {len(plan.jobs)} standalone runs (e.g. {missing[0]}): {which} planned other archs, "
                        f"recipe, data or settings, or a part (--shard) is missing; repeat the settings in {whose} "
                        f"{PLAN} (a supernet of another seed: --standalone-seed of that check's runs), give every "
                        "part, or drop --standalone-from to train them")
    return {"from": _recorded_source(sources), "standalone": {j["name"]: scores[j["name"]] for j in plan.jobs}}



def merge_scores(held: list[tuple[str | Path, dict]], flag: str = "--standalone-from") -> dict:
    """The standalone scores several checks hold (``(check, {job: scores})`` each; the parts of
    one reference), one entry per job; ``UserError`` when two hold one job with other scores
    (it was trained twice: a GPU need not repeat itself, so they are not parts of one reference)."""
    scores, found_in = {}, {}
    for check, entries in held:
        for name, entry in entries.items():
            if not entry:
                continue
            if name in scores and scores[name] != entry:
                raise UserError(f"{flag} {found_in[name]} and {flag} {check} both hold the standalone run {name}, "
                                "with other scores; give parts that each trained their own runs (one --shard K/N "
                                "each)")
            scores.setdefault(name, entry)
            found_in.setdefault(name, check)
    return scores


def _check_scores(check: Path, plan: Plan, td, out: Path, max_tokens: int) -> dict:
    """The standalone scores one earlier check holds for this plan's jobs, after checking
    it scored them as this check would (:func:`reference_scores`)."""
    from .measure import tokenizer_digest
    flag = f"--standalone-from {check}"
    if check == Path(out).resolve():
        raise UserError(f"{flag} is this check's own --out; give the --out folder of an earlier check")
    if not check.is_dir():
        raise UserError(f"{flag} {'is not a folder' if check.exists() else 'does not exist'}; give the --out folder "
                        "of a finished fidelity check")
    for name in (PLAN, MEASURED):
        if not (check / name).is_file():
            raise UserError(f"{flag} has no {name}; give the --out folder of a finished fidelity check")
    m = read_json(check / MEASURED, "fidelity measurements")
    theirs = read_json(check / PLAN, "fidelity plan")
    scores = m.get("standalone") if isinstance(m, dict) else None
    settings = theirs.get("settings") if isinstance(theirs, dict) else None
    if not isinstance(scores, dict) or not isinstance(settings, dict):
        raise UserError(f"{flag}: its {PLAN} or {MEASURED} lacks what a fidelity check writes; rerun that check")
    if settings.get("eval_tokens") != plan.settings["eval_tokens"]:
        def scored(n):
            return "all tokens" if n is None else f"the first {n} tokens"
        raise UserError(f"{flag} scored {scored(settings.get('eval_tokens'))} of each split, this check "
                        f"{scored(plan.settings['eval_tokens'])}; give the same --eval-tokens")
    if plan.settings["eval_tokens"] is not None and m.get("max_tokens") != max_tokens:
        raise UserError(f"{flag} scored its first tokens in batches of --max-tokens {m.get('max_tokens', 'unknown')}, "
                        f"this check {max_tokens}: the batches decide which tokens; give the same --max-tokens")
    digest = tokenizer_digest(td)
    if m.get("tokenizer") is not None and m["tokenizer"] != digest:
        # the same data trains another tokenizer under another sentencepiece build
        theirs, ours = m.get("sentencepiece"), _spm_version()
        why = f" (sentencepiece {theirs} there, {ours} here)" if theirs and theirs != ours else ""
        raise UserError(f"{flag} scored with another tokenizer ({m['tokenizer']}, here {digest}){why}; its scores "
                        "are other numbers: check a supernet trained on that check's data and tokenizer")
    failed = [j["name"] for j in plan.jobs if j["name"] in (m.get("failed") or {})]
    if failed:
        raise UserError(f"{flag}: {len(failed)} of the standalone runs it planned failed (e.g. {failed[0]}); "
                        "rerun that check to finish them first")
    if m.get("tokenizer") is None:  # a check written before tokenizers were recorded
        print(f"warning: {check / MEASURED} does not record its tokenizer; its scores are taken as this "
              "supernet's tokenizer's", file=sys.stderr)
    wanted = {j["name"] for j in plan.jobs}
    return {k: v for k, v in scores.items() if k in wanted and v}


def _spm_version() -> str:
    import sentencepiece
    return sentencepiece.__version__


def default_out(run_dir: Path) -> Path:
    return run_dir.parent / f"{run_dir.name}-fidelity"


def _run_locked(run, out: Path, root: Path | None, plan, settings: FidelitySettings, td, parallel,
                gpu_share: float, max_tokens: int, progress: bool, address, reference: dict | None,
                unpicked: list[str]) -> dict:
    """Train the jobs (unless ``reference`` scored them), measure and report, holding the
    lock of ``out``."""
    import torch

    from .measure import Cache, measure_inherited, measure_standalone, tokenizer_digest
    results = []
    if reference is None:
        prepare_jobs(plan, run, root)
        env = (("OMP_NUM_THREADS", "1"),) if parallel != 1 else ()
        results = run_jobs(plan_jobs(plan, run, root, gpu_share, env), root, parallel=parallel,
                           progress=progress, address=address)
    failed = {r.name: str(r.log) for r in results if not r.ok}

    device = torch.device("cuda" if settings.gpu else "cpu")
    cache = Cache(out / "measurements.json")
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(plan.archs) + len(results), desc="measure", unit="model", dynamic_ncols=True)
    tick = bar.update if bar is not None else None
    inherited, loaded = measure_inherited(run.run_dir, [plan.arch(i) for i in range(len(plan.archs))], td, cache,
                                          device, max_tokens, settings.bleu, tick, settings.eval_tokens,
                                          settings.finetune())
    measured = {} if reference is None else dict(reference["standalone"])
    if results:
        # a standalone run's score depends on it and the data only: kept beside the jobs, so the
        # checks of several supernets sharing one jobs folder score each standalone run once
        standalone_cache = Cache(root / "measurements.json")
    for r in results:
        if r.ok:
            measured[r.name] = measure_standalone(root / r.name / "run", td, standalone_cache, device, max_tokens,
                                                  settings.bleu, settings.eval_tokens)
        if tick is not None:
            tick()
    if bar is not None:
        bar.close()
    supernet = {**loaded, "steps_planned": int(run.train["steps"])}
    atomic_write_text(out / MEASURED, json.dumps({"inherited": inherited, "standalone": measured,
                                                  "failed": failed, "supernet": supernet,
                                                  "tokenizer": tokenizer_digest(td), "sentencepiece": _spm_version(),
                                                  "max_tokens": max_tokens, "unpicked_choices": unpicked,
                                                  "standalone_from": None if reference is None else reference["from"]},
                                                 indent=1) + "\n")
    if supernet["step"] < supernet["steps_planned"]:
        # a check of an unfinished run is allowed (a user may look early) but never silent: a
        # fidelity benchmark once scored a supernet whose training had died at step 1
        print(f"warning: {run.run_dir} is checked at step {supernet['step']} of its {supernet['steps_planned']} "
              "(its newest checkpoint); finish `cosearch train` first to check the trained supernet", file=sys.stderr)
    report = write_report(out)
    if failed:
        raise UserError(failure_message(results, out / REPORT))
    return report


def failure_message(results, report: Path) -> str:
    """The one line for failed standalone jobs (``results``: every job's ``JobResult``, at
    least one failed); runs that died of GPU memory get their own hint: a Ray GPU share is
    not a memory budget."""
    failed = [r for r in results if not r.ok]
    first = failed[0]
    text = (f"{len(failed)} of {len(results)} standalone jobs failed (e.g. {first.name}: see {first.log}); the "
            f"report in {report} is partial; rerun the same command to retry them")
    oom = [r for r in failed if "out of memory" in r.tail.lower()]
    if oom:
        text += f" ({len(oom)} ran out of GPU memory; where jobs share a GPU, a larger --gpu-share runs fewer at once)"
    return text


def write_report(out: str | Path, report: dict | None = None) -> dict:
    """(Re)build ``OUT/fidelity.json`` and ``OUT/fidelity.png`` from ``OUT/plan.json`` and
    ``OUT/measured.json`` (or write ``report``, built from them already); returns the report."""
    from ..strict_json import dumps, finite_json
    from .report import plot
    out = Path(out)
    report = finite_json(read_report(out)) if report is None else report
    atomic_write_text(out / REPORT, dumps(report, indent=1) + "\n")
    plot(report, out / PLOT)
    return report


def read_report(out: str | Path) -> dict:
    """The report of the check in ``OUT``, built from its plan and measurements (nothing written)."""
    from .report import build_report
    out = Path(out)
    for name in (PLAN, MEASURED):
        if not (out / name).is_file():
            raise UserError(f"{out} has no {name}; run the check first (cosearch fidelity RUN --out {out})")
    # (with --report-only these two files may come from another machine: a damaged one is
    # one line, not a traceback)
    m = read_json(out / MEASURED, "fidelity measurements")
    try:
        plan = Plan(**read_json(out / PLAN, "fidelity plan"))
        inherited, standalone, failed = m["inherited"], m["standalone"], m["failed"]
    except (TypeError, KeyError) as e:
        raise UserError(f"{out}: {PLAN} or {MEASURED} lacks what a fidelity check writes "
                        f"({type(e).__name__}: {e}); copy both again from the check's --out, or rerun it") from None
    return build_report(plan, inherited, standalone, failed, m.get("supernet"), m.get("standalone_from"),
                        m.get("tokenizer"), m.get("max_tokens"), m.get("unpicked_choices"))
