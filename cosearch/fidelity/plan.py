"""What a fidelity check trains: its settings, the supernet run it checks, its archs and
the standalone jobs (``cosearch train --arch`` command lines).

Each standalone job trains one arch with the run's recipe (schedule, smoothing, staged
QAT, batch, steps), varied only by the regularisation sweep (dropout, steps), the seed
(the seed-noise subset) or a teacher (the distilled-standalone subset). A job's name is
a digest of everything that decides its model, so a jobs folder can be shared by the
checks of several supernets (standalone runs do not depend on the supernet's own
settings) and a rerun finds its finished jobs.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UserError
from ..hardware.workload import MAX_TOKENS
from ..jobs import Job
from ..space import Arch, SearchSpace
from ..training.checkpoint import latest_checkpoint
from ..training.rundir import read_config, space_of
from ..training.train import MAX_STEPS, TEACHER_DISTILL, TrainConfig
from .pick import AXES, CANDIDATES, pick_archs, subset

PLAN = "plan.json"
FORMAT = 1
#: a job's files, inside its folder: the space (its dropout), the arch, the run folder
JOB_SPACE, JOB_ARCH, JOB_RUN = "space.yaml", "arch.json", "run"
#: training settings that ``cosearch train`` has no flag for: the run must use the defaults
_NO_FLAG = ("min_lr_ratio", "betas", "keep_checkpoints")


@dataclass(frozen=True)
class FidelitySettings:
    """What to check and how (the CLI's flags; all recorded in the plan)."""

    archs: int = 24
    per_bin: int = 4
    seed: int = 0
    stratify: str = "size"
    hw: str = "zcu102"
    seq_len: int = 30
    #: archs also trained with seed + 1 (the reference's own noise)
    noise_archs: int = 4
    #: archs also trained with the supernet's largest as teacher (0: none)
    distilled_archs: int = 0
    #: the dropout sweep (empty: the run's dropout only)
    dropouts: tuple[float, ...] = ()
    #: the steps sweep, as multiples of the standalone steps
    step_scales: tuple[float, ...] = (1.0,)
    #: standalone steps (None: the supernet's)
    steps: int | None = None
    bleu: bool = False
    gpu: bool = False
    #: the standalone runs' seed (None: the supernet run's); fix it to compare several
    #: supernet seeds against the same standalone runs
    standalone_seed: int | None = None
    #: score each model on about this many tokens at the start of each split (None: all;
    #: the same prefix for every model, so a short GPU budget can still rank them)
    eval_tokens: int | None = None
    #: "K/N": train only part K of the N parts of the standalone jobs (parts of about equal
    #: training cost, :func:`shard_jobs`). A reference too big for one machine session is
    #: trained as N checks; a later check reads them all (``--standalone-from`` each)
    shard: str | None = None
    #: steps of each arch's own training from the supernet's weights before it is scored
    #: (``training.finetune``; None or 0: scored as inherited); ``finetune_lr`` None: the
    #: default fraction of the run's lr. Neither changes a standalone job.
    finetune_steps: int | None = None
    finetune_lr: float | None = None

    def __post_init__(self):
        if self.finetune_steps == 0 and not isinstance(self.finetune_steps, bool):  # 0 and None: no finetune,
            object.__setattr__(self, "finetune_steps", None)  # recorded alike (a rerun of either resumes)

    def finetune(self):
        from ..training.finetune_settings import Finetune
        return Finetune(steps=self.finetune_steps or 0, lr=self.finetune_lr)

    def check(self) -> None:
        """``UserError`` naming the first bad setting (its flag)."""
        checks = [
            # the picks come from 2 x CANDIDATES random archs (+2): more can never be distinct
            ("--archs", 3 <= self.archs <= 2 * CANDIDATES,
             f"between 3 (a rank correlation needs 3) and {2 * CANDIDATES:,} (the random archs drawn to pick from)"),
            ("--per-bin", 1 <= self.per_bin <= self.archs, "between 1 and --archs"),
            ("--seed", 0 <= self.seed < 2 ** 63, "a whole number from 0 to 2^63 - 1"),
            # the seed-noise runs use the standalone seed + 1
            ("--standalone-seed", self.standalone_seed is None or 0 <= self.standalone_seed < 2 ** 63 - 1,
             "a whole number from 0 to 2^63 - 2"),
            ("--stratify", self.stratify in AXES, f"one of {', '.join(AXES)}"),
            ("--seq-len", 1 <= self.seq_len <= MAX_TOKENS, f"a whole number from 1 to {MAX_TOKENS}"),
            ("--noise-archs", 0 <= self.noise_archs <= self.archs, "between 0 and --archs"),
            ("--distilled-archs", 0 <= self.distilled_archs <= self.archs, "between 0 and --archs"),
            ("--dropouts", all(0 <= d < 1 for d in self.dropouts), "fractions in [0, 1)"),
            ("--step-scales", bool(self.step_scales) and all(0 < s < math.inf for s in self.step_scales),
             "finite factors > 0"),
            ("--steps", self.steps is None or 1 <= self.steps <= MAX_STEPS, f"between 1 and {MAX_STEPS:,}"),
            ("--eval-tokens", self.eval_tokens is None or self.eval_tokens >= 1, ">= 1 (or leave it out: all)"),
            ("--shard", self.shard is None or parse_shard(self.shard) is not None,
             "K/N, whole numbers with 1 <= K <= N (e.g. 1/4)"),
        ]
        for flag, ok, want in checks:
            if not ok:
                value = getattr(self, flag[2:].replace("-", "_"))
                raise UserError(f"{flag} {_show(value)} is invalid; give {want}")
        self.finetune().check()
        if self.finetune_lr is not None and not self.finetune_steps:
            raise UserError(f"--finetune-lr {self.finetune_lr:g} sets the rate of --finetune-steps K >= 1; give "
                            "--finetune-steps too, or drop --finetune-lr")
        from ..hardware import load_hardware
        if not str(self.hw).strip():
            raise UserError("--hw '' is invalid; give a preset name (e.g. zcu102) or a hardware YAML file")
        try:  # a mistyped preset is one line even when --stratify size never uses it
            load_hardware(self.hw)
        except UserError as e:
            raise UserError(f"--hw {self.hw}: {e}") from None


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """(K, N) of a ``--shard K/N``; None when it is not one."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if m is None:
        return None
    k, n = int(m.group(1)), int(m.group(2))
    return (k, n) if 1 <= k <= n else None


def shard_jobs(plan: "Plan") -> list[dict]:
    """The jobs this check trains: all of the plan's, or with ``--shard K/N`` part K of
    :func:`balanced_parts`, by training cost (steps x the arch's parameters)."""
    shard = plan.settings.get("shard")
    if shard is None:
        return list(plan.jobs)
    k, n = parse_shard(shard)
    space = SearchSpace.from_dict(plan.space)
    costs = [j["steps"] * space.param_count(plan.arch(j["arch"])) for j in plan.jobs]
    return [plan.jobs[i] for i in balanced_parts(costs, n)[k - 1]]


def balanced_parts(costs: list[float], n: int) -> list[list[int]]:
    """Indices of ``costs`` dealt into ``n`` parts of about equal sum: the costliest first,
    each to the part with the least so far (ties: the lower index), so the ``n`` costliest
    land in different parts (a part's jobs run at once: its wall time is about its
    costliest job's). Each part's indices ascending; none empty while ``n <= len(costs)``."""
    parts, load = [[] for _ in range(n)], [0.0] * n
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        p = min(range(n), key=lambda p: (load[p], p))
        parts[p].append(i)
        load[p] += costs[i]
    return [sorted(p) for p in parts]


def _show(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)


@dataclass
class RunInfo:
    """The supernet run being checked, read from its folder."""

    run_dir: Path
    config: dict
    space: SearchSpace
    checkpoint: Path

    @property
    def train(self) -> dict:
        return self.config["train"]


def read_run(run_dir: str | Path) -> RunInfo:
    """The run of ``run_dir``; ``UserError`` unless it is a trained supernet run whose
    recipe ``cosearch train`` can repeat."""
    path = Path(run_dir)
    config = read_config(path)
    if config.get("arch") is not None:
        raise UserError(f"{path} is a standalone run of one arch; pass a supernet run (trained without --arch)")
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise UserError(f"{path} has no checkpoint yet; train the supernet first")
    default = asdict(TrainConfig())
    for k in _NO_FLAG:
        if json.loads(json.dumps(config["train"].get(k, default[k]))) != json.loads(json.dumps(default[k])):
            raise UserError(f"{path} was trained with {k}={config['train'][k]!r}, which `cosearch train` has no "
                            f"flag for, so its standalone runs cannot repeat the recipe; use the default")
    return RunInfo(path.resolve(), config, space_of(config), ckpt)


# --------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class StandaloneSpec:
    """One standalone training: which arch and how."""

    arch: int  # index into the plan's archs
    dropout: float
    steps: int
    seed: int
    teacher: bool = False
    role: str = "grid"  # grid | noise | distilled

    def point(self) -> tuple[float, int]:
        return (self.dropout, self.steps)


def standalone_space(space: SearchSpace, dropout: float) -> dict:
    """The run's space as a standalone run sees it: no experts (a standalone model has
    none anyway) and the sweep's dropout."""
    d = space.to_dict()
    d["mos"] = dict(d["mos"], mode="none", experts=1)
    d["dropout"] = float(dropout)
    return d


def recipe_flags(train: dict, steps: int, workers: int | None = None) -> list[str]:
    """``cosearch train`` flags repeating the run's recipe at ``steps`` steps (warm-up
    scaled with them; checkpoints every quarter, so a killed job loses little). A run of
    ``workers`` data-parallel workers took ``max_tokens`` per worker: a job, one process,
    takes them all in one batch, so each step sees as many tokens."""
    t = {**asdict(TrainConfig()), **train}
    t["max_tokens"] = int(t["max_tokens"]) * max(1, int(workers or 1))
    scale = steps / max(int(t["steps"]), 1)
    stages = "off" if t["bit_stages"] is None else ",".join(repr(float(x)) for x in t["bit_stages"])
    ema = "off" if t["ema_start"] is None else repr(float(t["ema_start"]))
    return ["--steps", str(steps), "--max-tokens", str(t["max_tokens"]), "--lr", repr(float(t["lr"])),
            "--warmup", str(max(0, round(int(t["warmup"]) * scale))), "--schedule", t["schedule"],
            "--label-smoothing", repr(float(t["label_smoothing"])), "--weight-decay", repr(float(t["weight_decay"])),
            "--clip-norm", repr(float(t["clip_norm"])), "--bit-stages", stages, "--ema-start", ema,
            "--ema-decay", repr(float(t["ema_decay"])), "--max-len", str(t["max_len"]), "--src", t["src"],
            "--tgt", t["tgt"], "--tokenizer", t["tokenizer"],
            "--log-every", str(min(int(t["log_every"]), steps)),
            "--ckpt-every", str(max(1, steps // 4))]


def job_content(run: RunInfo, arch: Arch, spec: StandaloneSpec, gpu: bool) -> dict:
    """Everything that decides a job's model (its name is a digest of this)."""
    return {"space": standalone_space(run.space, spec.dropout), "task": run.config["task"],
            "data": run.config["data"], "arch": arch.to_dict(), "seed": spec.seed,
            "flags": recipe_flags(run.train, spec.steps, run.config.get("workers")),
            # the control distils even from a supernet trained without distillation
            "distill": (run.train["distill"] or TEACHER_DISTILL) if spec.teacher else 0.0,
            "teacher": str(run.run_dir) if spec.teacher else None, "gpu": bool(gpu)}


#: what job_name gives: a folder of this name is a standalone job's
JOB_NAME = re.compile(r"sa-[0-9a-f]{12}")


def job_name(content: dict) -> str:
    text = json.dumps(content, sort_keys=True)
    return "sa-" + hashlib.sha1(text.encode()).hexdigest()[:12]


def job_argv(folder: Path, content: dict) -> tuple[str, ...]:
    """The ``cosearch train --arch`` command line of a job in ``folder``."""
    argv = [sys.executable, "-m", "cosearch.cli", "train", "--space", str(folder / JOB_SPACE),
            "--task", content["task"], "--out", str(folder / JOB_RUN), "--arch", str(folder / JOB_ARCH),
            "--seed", str(content["seed"]), "--distill", repr(float(content["distill"])), *content["flags"],
            "--no-progress"]
    if content["data"] is not None:
        argv += ["--data", content["data"]]
    if content["teacher"] is not None:
        argv += ["--teacher", content["teacher"]]
    if content["gpu"]:
        argv.append("--gpu")
    return tuple(argv)


def prepare_job(folder: Path, content: dict, run: RunInfo) -> None:
    """Write the job's space and arch files; a new job's run folder starts with the
    supernet's tokenizer cache, so every standalone run uses the very same tokenizer
    (and none trains its own)."""
    from ..atomic import atomic_write_text
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in ((JOB_SPACE, json.dumps(content["space"], indent=1)),
                       (JOB_ARCH, json.dumps(content["arch"], sort_keys=True))):
        path = folder / name
        if not path.is_file() or path.read_text() != text:
            atomic_write_text(path, text)
    cache, target = run.run_dir / "tokenizers", folder / JOB_RUN / "tokenizers"
    if cache.is_dir() and not (folder / JOB_RUN).exists():
        shutil.copytree(cache, target)


# --------------------------------------------------------------------------- the plan
@dataclass
class Plan:
    """Everything a check decides before it trains (``OUT/plan.json``)."""

    run: str
    settings: dict
    archs: list[dict]
    labels: list[str]
    bins: list[int]
    kinds: list[str]
    axis: list[float]
    in_band: list[bool]
    centres: list[float]
    space: dict  # the run's space: archs, sizes and proxies are read against it
    jobs: list[dict]  # StandaloneSpec as dicts, plus "name"
    noise: list[int] = field(default_factory=list)
    distilled: list[int] = field(default_factory=list)
    format: int = FORMAT

    def arch(self, i: int) -> Arch:
        return Arch.from_dict(self.archs[i])


def grid_points(run: RunInfo, s: FidelitySettings) -> list[tuple[float, int]]:
    """(dropout, steps) of the sweep. The first is always the run's own recipe (its
    dropout and steps): the untuned baseline, and the point of the noise and teacher runs."""
    base = s.steps if s.steps is not None else int(run.train["steps"])
    d0 = float(run.space.spec.dropout)
    dropouts = [d0] + [float(d) for d in dict.fromkeys(s.dropouts) if d != d0]
    scales = [1.0] + [float(x) for x in dict.fromkeys(s.step_scales) if x != 1.0]
    for x in scales:
        if not base * x <= MAX_STEPS:  # (also inf): a run that would never end, or a crash
            raise UserError(f"--step-scales {x:g} is invalid: {base} x {x:g} steps is more than {MAX_STEPS:,}; "
                            "give smaller factors")
    # scales that round to the same step count are one point (one job, not two of one name)
    return list(dict.fromkeys((d, max(1, math.ceil(base * x))) for d in dropouts for x in scales))


def latency_axis(space: SearchSpace, s: FidelitySettings):
    """Prefill latency (ms) of archs on ``s.hw``, the ``--stratify latency`` axis."""
    from ..hardware import cost_batch, load_hardware
    hw = load_hardware(s.hw)  # UserError for an unknown preset, before any work

    def axis_of(archs):
        return list(cost_batch(space, archs, hw, scenario="prefill", seq_len=s.seq_len)["latency_ms"])
    return axis_of


def make_plan(run: RunInfo, s: FidelitySettings) -> Plan:
    """Pick the archs and list the standalone jobs (pure: the same inputs, the same plan)."""
    space = run.space
    picked = pick_archs(space, s.archs, s.per_bin, s.seed, latency_axis(space, s) if s.stratify == "latency" else None)
    if len(picked.archs) < s.archs:  # a small space: fewer distinct archs than asked for
        raise UserError(f"--archs {s.archs}: only {len(picked.archs)} distinct archs were drawn from the space of "
                        f"{run.run_dir} (the picks come from {2 * CANDIDATES:,} random draws); give --archs "
                        f"{len(picked.archs)} or fewer" if len(picked.archs) >= 3 else
                        f"--archs {s.archs}: the space of {run.run_dir} has only {len(picked.archs)} distinct "
                        "arch(s), and ranking needs 3; check a supernet of a larger space")
    points = grid_points(run, s)
    noise, distilled = subset(len(picked.archs), s.noise_archs), subset(len(picked.archs), s.distilled_archs)
    seed = int(run.config["seed"]) if s.standalone_seed is None else int(s.standalone_seed)
    specs = [StandaloneSpec(i, d, n, seed) for i in range(len(picked.archs)) for d, n in points]
    d0, n0 = points[0]
    specs += [StandaloneSpec(i, d0, n0, seed + 1, role="noise") for i in noise]
    specs += [StandaloneSpec(i, d0, n0, seed, teacher=True, role="distilled") for i in distilled]
    jobs = []
    for sp in specs:
        content = job_content(run, picked.archs[sp.arch], sp, s.gpu)
        jobs.append({**asdict(sp), "name": job_name(content)})
    return Plan(run=str(run.run_dir), settings=asdict(s), archs=[a.to_dict() for a in picked.archs],
                labels=picked.labels, bins=picked.bins, kinds=picked.kinds, axis=picked.axis,
                in_band=picked.in_band, centres=picked.centres, space=space.to_dict(), jobs=jobs, noise=noise,
                distilled=distilled)


def _job_contents(plan: Plan, run: RunInfo) -> list[tuple[str, dict]]:
    """(name, :func:`job_content`) of each job this check trains (:func:`shard_jobs`)."""
    gpu = bool(plan.settings["gpu"])
    out = []
    for j in shard_jobs(plan):
        spec = StandaloneSpec(**{k: v for k, v in j.items() if k != "name"})
        out.append((j["name"], job_content(run, plan.arch(spec.arch), spec, gpu)))
    return out


def plan_jobs(plan: Plan, run: RunInfo, root: Path, gpu_share: float, env: tuple = ()) -> list[Job]:
    """The jobs this check trains as ``cosearch.jobs.Job`` command lines under ``root``."""
    share = gpu_share if plan.settings["gpu"] else 0.0
    return [Job(name, job_argv(root / name, content), done=f"{JOB_RUN}/summary.json", gpu=share, env=env)
            for name, content in _job_contents(plan, run)]


def prepare_jobs(plan: Plan, run: RunInfo, root: Path) -> None:
    """Write the files of every job this check trains under ``root`` (:func:`prepare_job`)."""
    for name, content in _job_contents(plan, run):
        prepare_job(root / name, content, run)


# --------------------------------------------------------------------------- the plan file
def _canon(v):
    return json.loads(json.dumps(v, sort_keys=True))


def check_or_write_plan(out: Path, plan: Plan) -> bool:
    """Write ``OUT/plan.json`` for a new check; for an existing one (a rerun) check that
    it planned the same, else ``UserError`` naming what differs. True when resuming."""
    from ..atomic import atomic_write_text, check_writable_dir
    path = out / PLAN
    new = _canon(asdict(plan))
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: cannot read ({e}); it is damaged, choose a new --out") from None
        # a setting added later (default None) is absent from older plans: the same check
        old["settings"] = {**{k: None for k, v in new["settings"].items() if v is None}, **old.get("settings", {})}
        for key in ["run", "settings"] + [k for k in new if k not in ("run", "settings")]:
            if old.get(key) != new.get(key):
                what = {"jobs": "list of standalone jobs (the run's recipe, data or seed changed since)",
                        "space": "space (the run's space changed since)"}.get(key, key)
                if key == "settings":
                    what = next((f"--{k.replace('_', '-')}" for k in new[key] if old[key].get(k) != new[key][k]), key)
                raise UserError(f"{out} holds a fidelity check with another {what}; rerun it with the same "
                                "settings to resume, or choose a new --out")
        return True
    if out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise UserError(f"{out} exists and is not a fidelity check (no {PLAN}); choose a new or empty --out")
    check_writable_dir(out)
    atomic_write_text(path, json.dumps(new, indent=1) + "\n")
    return False
