"""The bits-vs-size front of a trained supernet (issue 22, item 4): at equal weight size,
which weight bit-width gives the best model?

For a grid of target sizes (exported weight MB, embedding and scales included), it takes
for every uniform weight bit-width of the space (W1.58, W2, W3, W4, W8, W16) the
homogeneous archs (every layer the same FFN width and heads) whose size is within ``--tol``
of the target, the ``--per-cell`` closest ones, and ``--mixed`` random archs with mixed
per-layer weight bits of that size; activations stay at 16 bits (ParetoQ quantizes weights
only). Each is scored with the supernet's inherited weights on the whole validation split:
loss per token and bits per byte, plus per-sequence sums for paired bootstrap intervals
(the same validation blocks for every arch). A few points are then trained alone from
scratch with the run's own recipe (``cosearch train --arch``, as ``cosearch.jobs`` jobs
sharing the GPU) to check the inherited ranking.

    # 1. score the candidates with inherited weights (resumable: scored archs are skipped)
    python3 benchmarks/bits_front.py inherited --run RUN --out FRONT [--gpu]
    # 2. standalone checks: the size-nearest arch of each bit-width at one target size
    python3 benchmarks/bits_front.py standalone --run RUN --out FRONT --data DATA --steps 400 [--gpu]
    # 3. table, bootstrap intervals, verdict and plot (FRONT/bits_front.json, FRONT/bits_front.png)
    python3 benchmarks/bits_front.py report --out FRONT

Needs torch, numpy, pyyaml, pydantic, sentencepiece, matplotlib (report), Ray for parallel
standalone jobs (else they run one after another).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cosearch.space import Arch, LayerArch, SearchSpace  # noqa: E402

INHERITED = "inherited.jsonl"
CANDIDATES = "candidates.json"
STANDALONE = "standalone"


def label_of(arch: Arch) -> str:
    """``W2`` for an arch whose layers all have 2-bit weights, ``mixed`` otherwise."""
    bits = {la.weight_bits for la in arch.decoder} | {la.weight_bits for la in arch.encoder}
    return f"W{bits.pop()}" if len(bits) == 1 else "mixed"


def weight_mb(space: SearchSpace, arch: Arch) -> float:
    return space.weight_size_bits(arch) / 8e6


# --------------------------------------------------------------------------- choosing archs
def homogeneous_archs(space: SearchSpace, weight_bits: float, act_bits: int = 16) -> list[Arch]:
    """Every decoder-only arch whose layers share one FFN width, head count and bit-widths."""
    d = space.spec.decoder
    return [Arch(decoder_embed_dim=e, decoder=tuple(LayerArch(ffn_dim=f, heads=h, weight_bits=weight_bits,
                                                              act_bits=act_bits) for _ in range(n)))
            for e, n, f, h in itertools.product(d.embed_dim, d.layers, d.ffn_dim, d.heads)]


def default_targets(space: SearchSpace, n: int = 7, tol: float = 0.12, min_labels: int = 3) -> list[float]:
    """``n`` sizes spaced evenly in log between the smallest and the largest arch, keeping
    those that at least ``min_labels`` uniform bit-widths can reach (within ``tol``)."""
    lo, hi = weight_mb(space, space.smallest()), weight_mb(space, space.largest())
    grid = np.geomspace(lo, hi, n)
    sizes = {b: np.array([weight_mb(space, a) for a in homogeneous_archs(space, b)])
             for b in space.spec.quantization.weight_bits}
    keep = [float(t) for t in grid
            if sum(bool((np.abs(s / t - 1) <= tol).any()) for s in sizes.values()) >= min_labels]
    return [round(t, 3) for t in keep]


@dataclass(frozen=True)
class Candidate:
    label: str
    target_mb: float
    arch: Arch

    def to_dict(self, space: SearchSpace) -> dict:
        return {"label": self.label, "target_mb": self.target_mb, "weight_mb": weight_mb(space, self.arch),
                "params": space.param_count(self.arch), "digest": self.arch.digest(),
                "arch": self.arch.to_dict()}


def select(space: SearchSpace, targets_mb: list[float], per_cell: int = 3, tol: float = 0.12,
           mixed: int = 4, seed: int = 0, mixed_draws: int = 4000) -> list[Candidate]:
    """For each target size: per uniform bit-width the ``per_cell`` homogeneous archs closest
    in size (within ``tol``, relative), and ``mixed`` random archs of mixed weight bits (no
    float layer) within ``tol`` (rejection sampling from ``space.sample``; activations 16 bits)."""
    wbits = space.spec.quantization.weight_bits
    out: list[Candidate] = []
    for t in targets_mb:
        for b in wbits:
            archs = homogeneous_archs(space, b)
            dist = [abs(weight_mb(space, a) / t - 1) for a in archs]
            order = sorted((d, i) for i, d in enumerate(dist) if d <= tol)
            out += [Candidate(f"W{b}", t, archs[i]) for _, i in order[:per_cell]]
        rng = np.random.default_rng([seed, int(t * 1000)])
        low = [b for b in wbits if b < 16]
        found: dict[str, Arch] = {}
        for _ in range(mixed_draws):
            if len(found) >= mixed or len(low) < 2:
                break
            a = space.sample(rng)
            layers = tuple(LayerArch(ffn_dim=la.ffn_dim, heads=la.heads, act_bits=16,
                                     weight_bits=low[rng.integers(len(low))]) for la in a.decoder)
            a = Arch(decoder_embed_dim=a.decoder_embed_dim, decoder=layers)
            if label_of(a) == "mixed" and abs(weight_mb(space, a) / t - 1) <= tol:
                found.setdefault(a.digest(), a)
        out += [Candidate("mixed", t, a) for a in found.values()]
    return out


def check_points(cands: list[Candidate], space: SearchSpace, target_mb: float, labels: list[str]) -> dict[str, Arch]:
    """The arch of each label at ``target_mb`` closest in size: the standalone checks (chosen
    by size alone, so that they can train before the inherited scores exist)."""
    out = {}
    for lab in labels:
        here = [c for c in cands if c.label == lab and c.target_mb == target_mb]
        if here:
            out[lab] = min(here, key=lambda c: abs(weight_mb(space, c.arch) / target_mb - 1)).arch
    return out


# --------------------------------------------------------------------------- scoring
def score_inherited(run_dir: Path, out: Path, cands: list[Candidate], device: str = "cpu",
                    max_tokens: int = 65536, max_batches: int | None = None, progress: bool = True) -> Path:
    """Score every candidate not yet in ``out/inherited.jsonl`` on the run's validation split."""
    import torch

    from cosearch.training.evaluate import bits_per_byte, load_run, loss_sums
    from cosearch.training.train import load_task_data, to_device

    out.mkdir(parents=True, exist_ok=True)
    path = out / INHERITED
    done = {json.loads(line)["digest"] for line in path.read_text().splitlines()} if path.is_file() else set()
    todo = [c for c in cands if c.arch.digest() not in done]
    todo = list({c.arch.digest(): c for c in todo}.values())  # one score per arch
    if not todo:
        return path
    dev = torch.device(device)
    run = load_run(run_dir, dev)
    td = load_task_data(run.config, run.run_dir)
    block = run.config["train"]["max_len"]
    batches = [to_device(b, dev) for b in itertools.islice(
        td.batches("valid", batch_size=max(1, max_tokens // block), block=block, shuffle=False, repeat=False),
        max_batches)]
    tok = td.tokenizer
    table = torch.from_numpy(tok.token_bytes())
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc="inherited", unit="arch")
    with open(path, "a") as f:
        for c in todo:
            t0 = time.perf_counter()
            with dev:
                model = run.net.extract(c.arch).eval()
            s = loss_sums(model, batches, tok.pad_id, tok.vocab_size, dev, token_bytes=table, rows=True)
            rec = {**c.to_dict(run.space), "loss": s.nats / s.tokens, "bits_per_byte": bits_per_byte(s.nats, s.bytes),
                   "tokens": s.tokens, "bytes": s.bytes, "step": run.step, "seconds": time.perf_counter() - t0,
                   "row_nats": [round(x, 4) for x in s.row_nats], "row_bytes": s.row_bytes}
            f.write(json.dumps(rec) + "\n")
            f.flush()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return path


# --------------------------------------------------------------------------- standalone jobs
def cli_argv(*args: str) -> list[str]:
    """A ``cosearch`` command run by this Python (the GPU machine has no entry point installed)."""
    return [sys.executable, "-m", "cosearch.cli", *args]


def recipe_flags(run_config: dict) -> list[str]:
    """``cosearch train`` flags that repeat a run's recipe (all but the steps and the seed)."""
    t = run_config["train"]
    stages = "off" if t.get("bit_stages") is None else ",".join(map(str, t["bit_stages"]))
    flags = ["--task", run_config["task"], "--max-tokens", str(t["max_tokens"]), "--lr", str(t["lr"]),
             "--schedule", t["schedule"], "--label-smoothing", str(t["label_smoothing"]),
             "--weight-decay", str(t["weight_decay"]), "--clip-norm", str(t["clip_norm"]),
             "--bit-stages", stages, "--max-len", str(t["max_len"])]
    if run_config["task"] == "lm":
        flags += ["--tokenizer", t.get("tokenizer", "unigram")]
    if run_config.get("data"):
        flags += ["--data", run_config["data"]]
    return flags


def standalone_job(root: Path, name: str, arch: Arch, run_config: dict, steps: int, seed: int,
                   gpu_share: float, eval_max_tokens: int = 65536, time_limit: float | None = None,
                   data: str | None = None):
    """A ``cosearch.jobs.Job``: train ``arch`` alone from scratch with the run's recipe, then
    score it on valid (``eval.json`` marks it done)."""
    import yaml

    from cosearch.jobs import Job
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "arch.json").write_text(arch.to_json() + "\n")
    space_file = folder / "space.yaml"
    space_file.write_text(yaml.safe_dump(run_config["space"], sort_keys=False))
    gpu = ["--gpu"] if gpu_share > 0 else []
    flags = recipe_flags(run_config)
    if data is not None:
        flags = [x for i, x in enumerate(flags) if not (x == "--data" or (i and flags[i - 1] == "--data"))]
        flags += ["--data", data]
    train = cli_argv("train", "--space", str(space_file), "--out", str(folder / "run"), "--arch",
                     str(folder / "arch.json"), "--steps", str(steps), "--seed", str(seed), "--log-every", "50",
                     "--ckpt-every", str(max(steps, 1)), "--no-progress", "--json", *flags, *gpu,
                     *(["--time-limit", str(time_limit)] if time_limit else []))
    ev = cli_argv("eval", "--run", str(folder / "run"), "--split", "valid", "--max-tokens", str(eval_max_tokens),
                  "--json", "--no-progress", *gpu)
    script = (f"{shlex.join(train)} > {shlex.quote(str(folder / 'train.json'))} && "
              f"{shlex.join(ev)} > {shlex.quote(str(folder / 'eval.json.tmp'))} && "
              f"mv {shlex.quote(str(folder / 'eval.json.tmp'))} {shlex.quote(str(folder / 'eval.json'))}")
    return Job(name=name, argv=("bash", "-c", script), done=str(folder / "eval.json"), gpu=gpu_share,
               env=(("OMP_NUM_THREADS", "2"),))


# --------------------------------------------------------------------------- the report
def read_inherited(out: Path) -> list[dict]:
    path = out / INHERITED
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def paired_bootstrap(rows: dict[str, tuple[np.ndarray, np.ndarray]], n: int = 2000, seed: int = 0) -> dict:
    """Bits per byte of each arch under ``n`` resamples of the validation sequences (the same
    sequences for every arch): per arch its 95% interval, and per arch the interval of its
    difference to the arch with the lowest point estimate and how often it wins."""
    names = list(rows)
    nats = np.stack([rows[k][0] for k in names])
    nbytes = np.asarray(rows[names[0]][1], dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, nats.shape[1], size=(n, nats.shape[1]))
    bpb = nats[:, idx].sum(-1) / (math.log(2) * nbytes[idx].sum(-1))  # (archs, n)
    point = nats.sum(1) / (math.log(2) * nbytes.sum())
    best = int(point.argmin())
    wins = np.bincount(bpb.argmin(0), minlength=len(names)) / n
    out = {}
    for i, k in enumerate(names):
        d = bpb[i] - bpb[best]
        out[k] = {"bits_per_byte": float(point[i]), "ci95": [float(np.quantile(bpb[i], q)) for q in (0.025, 0.975)],
                  "minus_best": float(point[i] - point[best]),
                  "minus_best_ci95": [float(np.quantile(d, q)) for q in (0.025, 0.975)], "p_best": float(wins[i])}
    return {"best": names[best], "archs": out}


def summarize(recs: list[dict], n_boot: int = 2000) -> dict:
    """Per target size: the best arch of each label (lowest bits per byte), with paired
    bootstrap intervals among those bests; and how often low bits (<= 2) win."""
    table = {}
    for t in sorted({r["target_mb"] for r in recs}):
        here = [r for r in recs if r["target_mb"] == t]
        bests = {}
        for r in here:
            if r["label"] not in bests or r["bits_per_byte"] < bests[r["label"]]["bits_per_byte"]:
                bests[r["label"]] = r
        boot = paired_bootstrap({k: (np.asarray(r["row_nats"]), np.asarray(r["row_bytes"])) for k, r in bests.items()},
                                n=n_boot)
        table[str(t)] = {"target_mb": t, "best_label": boot["best"],
                         "labels": {k: {**boot["archs"][k], "loss": r["loss"], "weight_mb": r["weight_mb"],
                                        "params": r["params"], "digest": r["digest"],
                                        "candidates": sum(1 for x in here if x["label"] == k)}
                                    for k, r in bests.items()}}
    low = {"W1", "W1.58", "W2"}
    winners = [v["best_label"] for v in table.values()]
    sure = [v["best_label"] for v in table.values()
            if all(x["minus_best_ci95"][0] > 0 for k, x in v["labels"].items() if k != v["best_label"])]
    return {"by_target": table, "winners": winners,
            "low_bit_wins": sum(w in low for w in winners), "targets": len(winners),
            "clear_winners": sure}


def verdict(summary: dict, tau: float | None, n_standalone: int) -> str:
    """One factual sentence on ParetoQ's claim (at equal size, <= 2-bit weights are on the front)."""
    by = summary["by_target"]
    wins = ", ".join(f"{v['best_label']} at {v['target_mb']:g} MB" for v in by.values())
    clear = len(summary["clear_winners"])
    line = (f"Lowest validation bits per byte at matched weight size: {wins}; weights of 2 bits or fewer win "
            f"{summary['low_bit_wins']} of {summary['targets']} sizes, {clear} of the {summary['targets']} winners "
            f"clear of every other bit-width (95% paired bootstrap over validation sequences). Inherited weights of "
            f"one supernet seed: training noise is not in these intervals.")
    if tau is not None:
        line += f" Standalone training of {n_standalone} of these archs ranks them with Kendall tau {tau:.2f} against inherited."
    return line


def standalone_results(out: Path) -> list[dict]:
    rows = []
    root = out / STANDALONE
    for ev in sorted(root.glob("*/eval.json")) if root.is_dir() else []:
        r = json.loads(ev.read_text())
        arch = Arch.from_dict(r["arch"])
        rows.append({"name": ev.parent.name, "label": label_of(arch), "digest": arch.digest(),
                     "loss": r["loss"], "bits_per_byte": r.get("bits_per_byte"), "step": r["step"]})
    return rows


def plot(recs: list[dict], summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = sorted({r["label"] for r in recs}, key=lambda s: (s == "mixed", float(s[1:]) if s != "mixed" else 0))
    colors = dict(zip(labels, plt.cm.viridis(np.linspace(0, 0.9, len(labels)))))
    for lab in labels:
        pts = [r for r in recs if r["label"] == lab]
        ax.scatter([r["weight_mb"] for r in pts], [r["bits_per_byte"] for r in pts], s=10, alpha=0.3, color=colors[lab])
        best = [v["labels"][lab] for v in summary["by_target"].values() if lab in v["labels"]]
        best.sort(key=lambda x: x["weight_mb"])
        ax.plot([b["weight_mb"] for b in best], [b["bits_per_byte"] for b in best], marker="o", ms=4,
                color=colors[lab], label=lab, linestyle="--" if lab == "mixed" else "-")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("exported weight size (MB, embedding included)")
    ax.set_ylabel("validation bits per byte (inherited weights)")
    ax.set_title("bits vs size: best arch per weight bit-width at each target size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    return info


# --------------------------------------------------------------------------- commands
def candidates(out: Path, space: SearchSpace, targets_mb: list[float] | None = None, tol: float = 0.12,
               per_cell: int = 3, mixed: int = 4, seed: int = 0, keep: bool = True) -> list[Candidate]:
    """The front's candidates: chosen once and kept in ``out/candidates.json`` (unless not
    ``keep``), so that every later call (resumed scoring, standalone checks, the report) sees
    the same archs."""
    path = out / CANDIDATES
    if path.is_file():
        d = json.loads(path.read_text())
        return [Candidate(c["label"], c["target_mb"], Arch.from_dict(c["arch"])) for c in d["candidates"]]
    targets = targets_mb or default_targets(space, tol=tol)
    cands = select(space, targets, per_cell=per_cell, tol=tol, mixed=mixed, seed=seed)
    if not keep:
        return cands
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"targets_mb": targets, "tol": tol, "per_cell": per_cell, "mixed": mixed, "seed": seed,
                                "candidates": [c.to_dict(space) for c in cands]}, indent=1) + "\n")
    return cands


def _candidates(args, space: SearchSpace) -> list[Candidate]:
    return candidates(Path(args.out), space, args.targets_mb, args.tol, args.per_cell, args.mixed, args.seed)


def _run_space(run: Path) -> tuple[dict, SearchSpace]:
    from cosearch.training.rundir import read_config, space_of
    cfg = read_config(run)
    return cfg, space_of(cfg)


def cmd_inherited(args) -> int:
    _, space = _run_space(Path(args.run))
    cands = _candidates(args, space)
    print(f"{len(cands)} candidates over {len({c.target_mb for c in cands})} target sizes", flush=True)
    score_inherited(Path(args.run), Path(args.out), cands, "cuda" if args.gpu else "cpu", args.max_tokens,
                    args.max_batches, progress=not args.no_progress)
    return 0


def check_points_at_middle(cands: list[Candidate], space: SearchSpace, target_mb: float | None = None,
                           labels: list[str] | None = None) -> dict[str, tuple[float, Arch]]:
    """label -> (target size, arch) of the standalone checks: by default at the middle target
    size (the lower of two middle ones: smaller archs, cheaper runs), every label that has an
    arch there."""
    targets = sorted({c.target_mb for c in cands})
    t = target_mb if target_mb is not None else targets[(len(targets) - 1) // 2]
    labels = labels or sorted({c.label for c in cands if c.target_mb == t})
    return {lab: (t, a) for lab, a in check_points(cands, space, t, labels).items()}


def check_name(label: str, target_mb: float, seed: int) -> str:
    return f"alone_{label.replace('.', 'p')}_{target_mb:g}MB_seed{seed}"


def standalone_check_jobs(run: Path, out: Path, cands: list[Candidate], space: SearchSpace, steps: int,
                          gpu_share: float, target_mb: float | None = None, labels: list[str] | None = None,
                          seed: int = 0, data: str | None = None, time_limit: float | None = None) -> list:
    """The standalone-check jobs (see :func:`check_points_at_middle`)."""
    from cosearch.training.rundir import read_config
    cfg = read_config(run)
    return [standalone_job(out / STANDALONE, check_name(lab, t, seed), a, cfg, steps, seed, gpu_share,
                           time_limit=time_limit, data=data)
            for lab, (t, a) in check_points_at_middle(cands, space, target_mb, labels).items()]


def cmd_standalone(args) -> int:
    from cosearch.jobs import run_jobs
    _, space = _run_space(Path(args.run))
    cands = _candidates(args, space)
    jobs = standalone_check_jobs(Path(args.run), Path(args.out), cands, space, args.steps,
                                 args.gpu_share if args.gpu else 0.0, args.target_mb, args.labels, args.seed,
                                 args.data, args.time_limit)
    res = run_jobs(jobs, Path(args.out) / STANDALONE, parallel=args.parallel, progress=not args.no_progress)
    bad = [r for r in res if not r.ok]
    for r in bad:
        print(f"{r.name} failed:\n{r.tail}", file=sys.stderr)
    return 1 if bad else 0


def report(out: Path, n_boot: int = 2000) -> dict:
    recs = read_inherited(out)
    if not recs:
        raise SystemExit(f"{out}/{INHERITED} is empty; run `bits_front.py inherited` first")
    summary = summarize(recs, n_boot)
    alone = standalone_results(out)
    inh = {r["digest"]: r for r in recs}
    for a in alone:
        if a["digest"] in inh:
            a["inherited_bits_per_byte"] = inh[a["digest"]]["bits_per_byte"]
            a["inherited_loss"] = inh[a["digest"]]["loss"]
    pairs = [a for a in alone if "inherited_loss" in a]
    tau = None
    if len(pairs) >= 3:
        from scipy.stats import kendalltau
        tau = float(kendalltau([a["inherited_loss"] for a in pairs], [a["loss"] for a in pairs]).statistic)
    res = {"benchmark": "bits_front", "machine": machine(), "step": recs[0]["step"], "archs_scored": len(recs),
           "verdict": verdict(summary, tau, len(pairs)),
           "split": "valid", "bootstrap": {"resamples": n_boot, "unit": "validation sequence (block)", "seed": 0},
           **summary, "standalone": alone, "standalone_vs_inherited_kendall_tau": tau,
           "note": "one supernet seed: the intervals cover the validation sample, not training noise"}
    (out / "bits_front.json").write_text(json.dumps(res, indent=1) + "\n")
    plot(recs, summary, out / "bits_front.png")
    return res


def cmd_report(args) -> int:
    res = report(Path(args.out), args.bootstrap)
    print(res["verdict"])
    for t, v in res["by_target"].items():
        row = ", ".join(f"{k} {x['bits_per_byte']:.4f}" for k, x in sorted(v["labels"].items()))
        print(f"  {float(t):7.2f} MB: {row}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("inherited", "standalone", "report"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True, help="the front's folder")
        p.add_argument("--no-progress", action="store_true")
        if name != "report":
            p.add_argument("--run", required=True, help="a trained supernet run folder")
            p.add_argument("--gpu", action="store_true")
            p.add_argument("--targets-mb", type=float, nargs="+", default=None,
                           help="target sizes (default: 7 log-spaced sizes that >= 3 bit-widths reach)")
            p.add_argument("--tol", type=float, default=0.12, help="relative size tolerance (default 0.12)")
            p.add_argument("--per-cell", type=int, default=3, help="uniform archs per bit-width and size")
            p.add_argument("--mixed", type=int, default=4, help="mixed-bit archs per size")
            p.add_argument("--seed", type=int, default=0)
    i = sub.choices["inherited"]
    i.add_argument("--max-tokens", type=int, default=65536, help="tokens per evaluation batch")
    i.add_argument("--max-batches", type=int, default=None, help="only the first N validation batches")
    s = sub.choices["standalone"]
    s.add_argument("--data", default=None, help="the data folder (default: the run's)")
    s.add_argument("--steps", type=int, required=True)
    s.add_argument("--gpu-share", type=float, default=0.1, help="GPU share of each job (with --gpu)")
    s.add_argument("--target-mb", type=float, default=None, help="the checks' size (default: the (lower) middle target)")
    s.add_argument("--labels", nargs="+", default=None, help="bit-width labels to check (default: all there)")
    s.add_argument("--parallel", type=int, default=None, help="jobs at once (1: no Ray)")
    s.add_argument("--time-limit", type=float, default=None, help="per-job training time limit (s)")
    sub.choices["report"].add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    args = ap.parse_args(argv)
    return {"inherited": cmd_inherited, "standalone": cmd_standalone, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
