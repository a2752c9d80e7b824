"""Does the supernet tell the truth? Inherited-weight vs standalone quality per arch.

For each MoS mode (none / layer / neuron) one supernet is trained with the same recipe
and token budget; 8 archs spread over size and bits (the largest, the smallest, and 6
sampled with a fixed seed: size quantiles of random archs, each at one uniform weight
bit-width from 16 down to ternary) are each also trained from scratch as standalone
models with the same steps and batch (``cosearch.training.train.train(arch=...)``), and a few
archs again with another seed (seed-to-seed noise). Every model is evaluated on the
validation loss and sacreBLEU on the test split (test_2016_flickr for Multi30k, beam 4).

The report (``OUT/fidelity.json``, rewritten whenever a job finishes, so a cut-off run
still leaves partial results) gives per arch and mode the inherited vs standalone loss
and BLEU, Kendall tau and Spearman of both rankings, the mean gap, and whether MoS
shrinks the gap vs none.

All jobs run at once as independent processes (one ``job`` subprocess each), spread
over the visible GPUs with ``CUDA_VISIBLE_DEVICES`` by an estimated cost; on the CPU they
run one after the other. ``--time-budget`` sets the step count from ``--sec-per-step``
and hands every job a training deadline (it checkpoints and stops there) and an
evaluation deadline, so everything ends in time.

GPU (4 x H100, one command under 10 minutes)::

    python benchmarks/fidelity.py --data ../shared/data/multi30k --out /tmp/fidelity \
        --result $OUT/fidelity.json --copy-logs $OUT/fidelity_logs --time-budget 520

CPU smoke test (tiny settings)::

    python benchmarks/fidelity.py --space SPACE.yaml --data DIR --out OUT --steps 4 \
        --max-tokens 256 --n-archs 4 --noise-archs 1 --cpu
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

MODES = ("none", "layer", "neuron")
#: the recipe every supernet and standalone run uses (TrainConfig fields; --recipe overrides)
RECIPE = dict(lr=1e-3, warmup=None, schedule="cosine", label_smoothing=0.1, weight_decay=0.01,
              n_random=2, distill=0.5, bit_stages=(0.2, 0.5), ema_start=0.6, ema_decay=0.99,
              log_every=25, ckpt_every=100000)
#: supernet jobs also evaluate the un-averaged weights: BLEU for these archs (loss for all)
RAW_BLEU_ARCHS = ("0", "1")


# --------------------------------------------------------------------------- choosing archs
def pick_archs(space, n: int = 8, seed: int = 0, candidates: int = 400) -> list:
    """Largest (float), smallest (lowest bits) and ``n - 2`` sampled archs: the size
    quantiles of ``candidates`` random archs, each set to one uniform weight bit-width
    cycling from the highest to the lowest (in a seeded order uncorrelated with size)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    q = space.spec.quantization
    wbits = sorted(q.weight_bits, reverse=True)
    pool = sorted((space.sample(rng) for _ in range(candidates)), key=space.param_count)
    k = max(0, n - 2)
    picks = [pool[int((i + 1) * len(pool) / (k + 1))] for i in range(k)]
    order = rng.permutation(k)
    archs = [space.largest(), space.smallest()]
    for i, a in zip(order, picks):
        wb = wbits[int(i) % len(wbits)]
        ab = max(q.act_bits) if wb >= 16 else min((b for b in q.act_bits if b >= 8), default=max(q.act_bits))
        archs.append(space.with_bits(a, wb, ab))
    return archs[:n]


def mode_space(space_dict: dict, mode: str, experts: int = 2) -> dict:
    d = json.loads(json.dumps(space_dict))
    mos = dict(d.get("mos") or {})
    mos.update(mode=mode, experts=1 if mode == "none" else max(2, int(mos.get("experts", experts) or experts)))
    d["mos"] = mos
    return d


# --------------------------------------------------------------------------- statistics
def rank_stats(a: list[float], b: list[float]) -> dict:
    """Kendall tau and Spearman rho of two score lists (None when fewer than 3)."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if len(pairs) < 3:
        return {"kendall_tau": None, "spearman": None, "n": len(pairs)}
    try:
        from scipy.stats import kendalltau, spearmanr
    except ImportError:  # the job results stay; rerun `fidelity.py report --out DIR` where scipy is
        return {"kendall_tau": None, "spearman": None, "n": len(pairs), "note": "scipy missing"}
    xs, ys = zip(*pairs)
    return {"kendall_tau": float(kendalltau(xs, ys).statistic), "spearman": float(spearmanr(xs, ys).statistic),
            "n": len(pairs)}


def fidelity_stats(inherited: list, standalone: list) -> dict:
    """Per metric: rank agreement of inherited vs standalone, the mean gap (> 0: inherited
    is worse) and the mean absolute gap."""
    m = {}
    for metric, better_low in (("loss", True), ("bleu", False)):
        xs = [e.get(metric) if e else None for e in inherited]
        ys = [e.get(metric) if e else None for e in standalone]
        stats = rank_stats(xs, ys)
        gaps = [(x - y) if better_low else (y - x) for x, y in zip(xs, ys) if x is not None and y is not None]
        stats["mean_gap"] = sum(gaps) / len(gaps) if gaps else None
        stats["mean_abs_gap"] = sum(abs(g) for g in gaps) / len(gaps) if gaps else None
        m[metric] = stats
    return m


def supernet_job(mode: str, k: int, seed: int) -> str:
    """The job name of ``mode``'s supernet for the ``k``-th supernet seed ``seed`` (the
    first seed's keeps the plain name)."""
    return f"supernet_{mode}" + (f"_seed{seed}" if k else "")


def summarise(out: Path, plan: dict) -> dict:
    """Merge the job results into the report (partial results where jobs are missing)."""
    jobs = {}
    for p in sorted((out / "jobs").glob("*.json")):
        try:
            jobs[p.stem] = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # being written
    archs = plan["archs"]
    standalone = [jobs.get(f"standalone_{i}", {}).get("evals", {}).get("0") for i in range(len(archs))]
    report = {"plan": {k: v for k, v in plan.items() if k != "space"}, "modes": {}, "jobs": {
        k: {x: v.get(x) for x in ("train", "finished", "error", "specialisation", "device")} for k, v in jobs.items()}}
    per_arch = []
    for i, a in enumerate(archs):
        row = {"index": i, "label": plan["labels"][i], "params": plan["params"][i], "size_mb": plan["size_mb"][i],
               "arch": a, "standalone": standalone[i]}
        for mode in plan["modes"]:
            row[mode] = jobs.get(f"supernet_{mode}", {}).get("evals", {}).get(str(i))
            row[f"{mode}_no_average"] = jobs.get(f"supernet_{mode}", {}).get("evals_raw", {}).get(str(i))
        per_arch.append(row)
    report["per_arch"] = per_arch
    for mode in plan["modes"]:
        report["modes"][mode] = fidelity_stats([r[mode] for r in per_arch], standalone)

    def trained(name):  # steps a supernet job trained (a deadline can cut it short)
        t = jobs.get(name, {}).get("train") or {}
        return {"trained_steps": t.get("step"), "finished_training": t.get("step") == plan.get("steps")}

    seeds = plan.get("supernet_seeds", [])
    for k, seed in enumerate(seeds[1:], 1):  # the same table for the other supernet seeds
        report.setdefault("modes_other_seeds", {})[f"seed{seed}"] = {
            mode: dict(fidelity_stats([jobs.get(supernet_job(mode, k, seed), {}).get("evals", {}).get(str(i))
                                       for i in range(len(archs))], standalone),
                       **trained(supernet_job(mode, k, seed))) for mode in plan["modes"]}
    if len(seeds) > 1:  # the inherited quality averaged over the supernet seeds (less seed noise)
        report["modes_seed_mean"] = {}
        for mode in plan["modes"]:
            names = [supernet_job(mode, k, s) for k, s in enumerate(seeds)]
            runs = [jobs.get(n, {}).get("evals", {}) for n in names]
            mean = []
            for i in range(len(archs)):
                es = [r.get(str(i)) or {} for r in runs]
                mean.append({m: sum(e[m] for e in es) / len(es) for m in ("loss", "bleu") if all(m in e for e in es)})
            report["modes_seed_mean"][mode] = dict(fidelity_stats(mean, standalone), seeds=seeds, cut_short=[
                n for n in names if not trained(n)["finished_training"]])
    noise = []
    for i, seeds in plan["noise"].items():
        a = (standalone[int(i)] or {})
        for s in seeds:
            b = jobs.get(f"standalone_{i}_seed{s}", {}).get("evals", {}).get("0")
            if a and b:
                noise.append({"arch": int(i), "seed": s, "loss_diff": abs(a.get("loss", 0) - b.get("loss", 0)),
                              "bleu_diff": (abs(a["bleu"] - b["bleu"]) if "bleu" in a and "bleu" in b else None)})
    report["seed_noise"] = noise
    if "none" in report["modes"]:
        base = report["modes"]["none"]
        report["mos_vs_none"] = {
            mode: {metric: (None if base[metric]["mean_abs_gap"] is None or report["modes"][mode][metric]["mean_abs_gap"] is None
                            else report["modes"][mode][metric]["mean_abs_gap"] < base[metric]["mean_abs_gap"])
                   for metric in ("loss", "bleu")} for mode in plan["modes"] if mode != "none"}
    return report


# --------------------------------------------------------------------------- one job (a subprocess)
def run_job(spec_path: str) -> int:
    """Train one supernet or standalone model, then evaluate its archs (results written
    after every evaluation)."""
    import torch

    from cosearch.training.evaluate import bleu, eval_loss, load_run, translate
    from cosearch.space import Arch, SearchSpace
    from cosearch.training.train import load_task_data, train

    spec = json.loads(Path(spec_path).read_text())
    res_path = Path(spec["out"]) / "jobs" / f"{spec['name']}.json"
    result: dict = {"name": spec["name"], "evals": {}, "finished": False}

    def save():
        tmp = res_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, res_path)

    gpu = spec["gpu"] and torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    result["device"] = torch.cuda.get_device_name(0) if gpu else "cpu"
    space = SearchSpace.from_dict(spec["space"])
    arch = Arch.from_dict(spec["arch"]) if spec.get("arch") else None
    run_dir = Path(spec["out"]) / "runs" / spec["name"]
    try:
        t0 = time.time()
        s = train(space, "translation", spec["data"], run_dir, steps=spec["steps"], gpu=gpu, seed=spec["seed"],
                  progress=False, arch=arch, deadline=spec["train_deadline"], max_tokens=spec["max_tokens"],
                  **spec["recipe"])
        result["train"] = {"step": s.step, "steps": s.steps, "finished": s.finished, "seconds": round(time.time() - t0, 1),
                           "tokens_per_s": round(s.tokens_per_s, 1), "losses": s.losses}
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        result["specialisation"] = [{k: r[k] for k in ("step", "mos_expert_dist", "mos_router_spread") if k in r}
                                    for r in metrics if "mos_expert_dist" in r]
        save()
        run = load_run(run_dir, device)
        td = load_task_data(run.config, run_dir)
        tok, vocab = td.tokenizer, td.tokenizer.vocab_size
        refs = [tgt for _, tgt in td.text["test"]]
        evals = spec["eval_archs"]
        models = {}
        for idx, a in evals.items():  # losses first: cheap, and what ranks fastest
            model = run.net.extract(Arch.from_dict(a)).to(device).eval()
            batches = td.batches("valid", max_tokens=spec["eval_tokens"], shuffle=False, repeat=False)
            loss, _ = eval_loss(model, batches, tok.pad_id, vocab, device)
            result["evals"][idx] = {"loss": loss}
            models[idx] = model
            save()
        for idx, model in models.items():
            if time.time() > spec["eval_deadline"]:
                result["evals"][idx]["bleu_skipped"] = "out of time"
                continue
            hyps = translate(model, td, "test", device, beam=spec["beam"], max_tokens=spec["eval_tokens"],
                             limit=space.spec.max_positions)
            result["evals"][idx]["bleu"] = bleu(hyps, refs)
            save()
        if arch is None and run.config["train"].get("ema_start") is not None:  # what the average gained
            raw = load_run(run_dir, device, raw_weights=True).net
            result["evals_raw"] = {}
            for idx, a in evals.items():
                model = raw.extract(Arch.from_dict(a)).to(device).eval()
                batches = td.batches("valid", max_tokens=spec["eval_tokens"], shuffle=False, repeat=False)
                r = result["evals_raw"][idx] = {"loss": eval_loss(model, batches, tok.pad_id, vocab, device)[0]}
                if idx in RAW_BLEU_ARCHS and time.time() < spec["eval_deadline"]:
                    r["bleu"] = bleu(translate(model, td, "test", device, beam=spec["beam"],
                                               max_tokens=spec["eval_tokens"], limit=space.spec.max_positions), refs)
                save()
        result["finished"] = True
    except Exception as e:  # a failed job must not take the others' results with it
        result["error"] = f"{type(e).__name__}: {e}"
        save()
        raise
    save()
    return 0


# --------------------------------------------------------------------------- the orchestrator
def job_cost(space, arch, mode: str = "none") -> float:
    """Relative GPU time per step, in steps of the float largest arch trained alone (H100,
    32k tokens: sandwich step 0.44 s vs 0.086 s; quantized layers about double a step;
    small archs are launch-bound, hence the constant part)."""
    if arch is None:
        return 5.0 if mode == "none" else 5.5
    quantized = any(la.weight_bits < 16 for la in arch.encoder + arch.decoder)
    size = space.param_count(arch) / space.param_count(space.largest())
    return (0.5 + 0.5 * size) * (2.0 if quantized else 1.0)


def assign_gpus(costs: dict[str, float], n_gpus: int) -> dict[str, int]:
    """Greedy longest-first bin packing of the jobs onto GPUs."""
    load = [0.0] * max(n_gpus, 1)
    out = {}
    for name, c in sorted(costs.items(), key=lambda kv: -kv[1]):
        g = min(range(len(load)), key=load.__getitem__)
        out[name], load[g] = g, load[g] + c
    return out


def job_finished(out: Path, name: str) -> bool:
    try:
        return bool(json.loads((out / "jobs" / f"{name}.json").read_text()).get("finished"))
    except (OSError, json.JSONDecodeError):
        return False


def check_same_plan(src: Path, plan: dict, how: str) -> None:
    """``SystemExit`` unless the run in ``src`` planned the same archs, steps, batch, recipe
    and data as ``plan`` (only then do its finished jobs belong in this run's report)."""
    old = json.loads((src / "plan.json").read_text())
    new = json.loads(json.dumps(plan))  # tuples as JSON lists, as in the file
    for key in ("archs", "steps", "max_tokens", "recipe", "data"):
        if old.get(key) != new.get(key) and not (key == "data" and Path(old[key]).name == Path(new[key]).name):
            raise SystemExit(f"{how} {src}: its plan has another {key!r}; its finished jobs are kept only with the "
                             "same archs, steps, batch and recipe (pass the same --steps/--max-tokens/--recipe)")


def reuse_jobs(src: Path, out: Path, plan: dict) -> None:
    """Copy the finished job results of an earlier run with the same archs, steps and batch
    (e.g. its standalone runs, to add supernet seeds without training them again)."""
    import shutil
    check_same_plan(src, plan, "--reuse")
    for f in (src / "jobs").glob("*.json"):
        if job_finished(src, f.stem) and not (out / "jobs" / f.name).exists():
            shutil.copyfile(f, out / "jobs" / f.name)


def copy_logs(out: Path, dest: Path) -> None:
    """The small files of a run (logs, job results, metrics), not the checkpoints."""
    import shutil
    for pattern in ("plan.json", "fidelity.json", "logs/*.log", "jobs/*.json", "runs/*/metrics.jsonl",
                    "runs/*/summary.json", "runs/*/arch.json"):
        for f in out.glob(pattern):
            target = dest / f.relative_to(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    j = sub.add_parser("job", help="(internal) train and evaluate one job")
    j.add_argument("spec")
    r = sub.add_parser("report", help="recompute the report from a (copied) run folder's plan and job results")
    r.add_argument("dir")
    p.add_argument("--data", default="../shared/data/multi30k", help="Multi30k folder (train/val/test_2016_flickr)")
    p.add_argument("--out", default="benchmarks/results/fidelity_run", help="work and result folder")
    p.add_argument("--space", default="multi30k")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--time-budget", type=float, default=540, help="seconds for everything (one command)")
    p.add_argument("--startup-s", type=float, default=45, help="reserved for imports, tokenizer and data")
    p.add_argument("--eval-s", type=float, default=110, help="reserved after training for evaluation")
    p.add_argument("--sec-per-step", type=float, default=0.6,
                   help="expected seconds per supernet step with the jobs sharing the GPUs (sets --steps)")
    p.add_argument("--steps", type=int, default=None, help="fixed step count (default: from the time budget)")
    p.add_argument("--max-tokens", type=int, default=32768)
    p.add_argument("--n-archs", type=int, default=8)
    p.add_argument("--noise-archs", type=int, default=2, help="archs trained standalone with a second seed")
    p.add_argument("--arch-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--supernet-seeds", type=int, default=1, help="supernets per MoS mode (seeds SEED, SEED+1, ...)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--eval-tokens", type=int, default=12000, help="tokens per evaluation batch")
    p.add_argument("--recipe", default="{}", help="JSON of TrainConfig overrides for every run")
    p.add_argument("--reuse", default=None, metavar="DIR",
                   help="an earlier run folder (or copied logs) with the same plan: its finished jobs are kept")
    p.add_argument("--cpu", action="store_true", help="run the jobs one after the other on the CPU")
    p.add_argument("--result", default=None, help="also write the report here (e.g. benchmarks/results/fidelity.json)")
    p.add_argument("--copy-logs", default=None, metavar="DIR",
                   help="at the end copy the job logs, job results and training metrics (no checkpoints) here")
    args = p.parse_args(argv)
    if args.cmd == "job":
        return run_job(args.spec)
    if args.cmd == "report":
        d = Path(args.dir)
        text = json.dumps(summarise(d, json.loads((d / "plan.json").read_text())), indent=1)
        (d / "fidelity.json").write_text(text)
        if args.result:
            Path(args.result).write_text(text)
        print(text)
        return 0

    from cosearch.space import SearchSpace

    t_start = time.time()
    out = Path(args.out)
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    (out / "specs").mkdir(exist_ok=True)
    space = SearchSpace.load(args.space)
    base = space.to_dict()
    modes = [m for m in args.modes.split(",") if m]
    archs = pick_archs(space, args.n_archs, args.arch_seed)
    labels = ["largest", "smallest"] + [f"sample{i}" for i in range(1, len(archs) - 1)]
    train_s = args.time_budget - args.startup_s - args.eval_s
    steps = args.steps or max(10, int(train_s / args.sec_per_step))
    recipe = {**RECIPE, **json.loads(args.recipe)}
    n_gpus = 0
    if not args.cpu:
        import torch
        n_gpus = torch.cuda.device_count()
    noise_idx = [0, len(archs) // 2][: args.noise_archs] if len(archs) > 1 else [0][: args.noise_archs]
    plan = {"space": space.name, "modes": modes, "archs": [a.to_dict() for a in archs], "labels": labels,
            "params": [space.param_count(a) for a in archs],
            "size_mb": [round(space.weight_size_bits(a) / 8e6, 3) for a in archs],
            "steps": steps, "max_tokens": args.max_tokens, "recipe": recipe, "seed": args.seed,
            "noise": {str(i): [args.seed + 1] for i in noise_idx},
            "supernet_seeds": [args.seed + k for k in range(args.supernet_seeds)], "time_budget": args.time_budget,
            "gpus": n_gpus, "data": str(Path(args.data).resolve()), "beam": args.beam,
            "bleu_split": "test (test_2016_flickr for Multi30k)", "loss_split": "valid"}
    if (out / "plan.json").is_file():  # a rerun keeps its finished jobs: only those of the same plan
        check_same_plan(out, plan, "--out")
    (out / "plan.json").write_text(json.dumps(plan, indent=1))

    common = dict(out=str(out.resolve()), data=str(Path(args.data).resolve()), steps=steps,
                  max_tokens=args.max_tokens, recipe=recipe, gpu=n_gpus > 0, beam=args.beam,
                  eval_tokens=args.eval_tokens,
                  train_deadline=t_start + args.time_budget - args.eval_s,
                  eval_deadline=t_start + args.time_budget - 25)
    specs, costs = {}, {}
    every = {str(i): a.to_dict() for i, a in enumerate(archs)}
    for mode in modes:
        for k, seed in enumerate(plan["supernet_seeds"]):
            name = supernet_job(mode, k, seed)
            specs[name] = dict(common, name=name, space=mode_space(base, mode), seed=seed, eval_archs=every)
            costs[name] = job_cost(space, None, mode)
    for i, a in enumerate(archs):
        for seed in [args.seed] + ([args.seed + 1] if i in noise_idx else []):
            name = f"standalone_{i}" + ("" if seed == args.seed else f"_seed{seed}")
            specs[name] = dict(common, name=name, space=mode_space(base, "none"), arch=a.to_dict(), seed=seed,
                               eval_archs={"0": a.to_dict()})
            costs[name] = job_cost(space, a)
    if args.reuse:
        reuse_jobs(Path(args.reuse), out, plan)
    done = {n for n in specs if job_finished(out, n)}  # a rerun (or --reuse) keeps finished jobs
    for n in done:
        specs.pop(n), costs.pop(n)
    gpu_of = assign_gpus(costs, n_gpus)
    procs: dict[str, subprocess.Popen] = {}
    queue = sorted(specs, key=lambda n: -costs[n])
    logs = out / "logs"
    logs.mkdir(exist_ok=True)

    def launch(name):
        path = out / "specs" / f"{name}.json"
        path.write_text(json.dumps(specs[name]))
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if n_gpus:  # index into the GPUs this process sees (CUDA_VISIBLE_DEVICES may already narrow them)
            visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
            env["CUDA_VISIBLE_DEVICES"] = visible[gpu_of[name]] if visible else str(gpu_of[name])
        with open(logs / f"{name}.log", "w") as log:
            procs[name] = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "job", str(path)],
                                           stdout=log, stderr=subprocess.STDOUT, env=env)

    report_path = out / "fidelity.json"

    def write_report():
        rep = summarise(out, plan)
        rep["wall_s"] = round(time.time() - t_start, 1)
        rep["running"] = sorted(n for n, pr in procs.items() if pr.poll() is None)
        rep["assignment"] = gpu_of if n_gpus else "cpu, sequential"
        text = json.dumps(rep, indent=1)
        report_path.write_text(text)
        if args.result:
            Path(args.result).parent.mkdir(parents=True, exist_ok=True)
            Path(args.result).write_text(text)
        return rep

    hard_end = t_start + args.time_budget
    parallel = len(queue) if n_gpus else 1
    while queue or any(pr.poll() is None for pr in procs.values()):
        while queue and sum(pr.poll() is None for pr in procs.values()) < parallel:
            launch(queue.pop(0))
        time.sleep(2 if n_gpus else 0.5)
        write_report()
        if time.time() > hard_end:
            for n, pr in procs.items():
                if pr.poll() is None:
                    pr.kill()
            break
    rep = write_report()
    if args.copy_logs:
        copy_logs(out, Path(args.copy_logs))
    codes = {n: pr.returncode for n, pr in procs.items()}
    print(json.dumps({"modes": rep["modes"], "mos_vs_none": rep.get("mos_vs_none"), "seed_noise": rep["seed_noise"],
                      "exit_codes": codes, "wall_s": rep["wall_s"]}, indent=1))
    return 0 if all(c == 0 for c in codes.values()) and not queue else 1


if __name__ == "__main__":
    sys.exit(main())
