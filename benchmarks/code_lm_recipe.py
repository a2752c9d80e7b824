"""The code_lm recipe on one GPU (issue 22): a decoder-only supernet on the Linux C corpus
in a fixed wall-clock budget, then everything measured on it.

Stages (each skipped when its result exists, so rerunning after a lost machine goes on):

1. ``data``: train the BPE tokenizer on a sample of train and encode every split into the
   token cache (``$COSEARCH_DATA_CACHE`` = WORK/cache, shared by every later run), timed;
2. ``calibrate`` (unless ``--steps``): a short run of the same recipe; its steady step time
   (the second half: all bit-widths on, the slowest stage) sets the steps that fill
   ``--budget-s``;
3. ``supernet``: ``cosearch train --space code_lm --task lm --tokenizer bpe ...`` (the CLI);
4. ``jobs``: one batch of ``cosearch.jobs`` jobs sharing the GPU (Ray; fractional shares):
   ``cosearch eval`` of the largest, smallest, two random archs and the largest at W4A8 on
   valid and test (loss, bits per byte); an export of the W4A8 largest and ``cosearch
   generate`` samples; the bits-vs-size front with inherited weights
   (``benchmarks/bits_front.py``) and its standalone checks; the standalone seed-noise runs
   (largest and smallest, seeds 0 and 1); ``cosearch search`` on zcu102 and tpu_like
   (quality = validation loss, latency, size);
5. ``report``: RESULTS/code_lm_recipe.json, the bits front (JSON + PNG) and the search fronts
   (PNG), with the seed-noise ratio and the weight bit-widths on each front.

    python3 benchmarks/code_lm_recipe.py --data DATA --work /tmp/codelm --results RESULTS [--budget-s 600]
    # CPU smoke test at tiny scale:
    python3 benchmarks/code_lm_recipe.py --data SLICE --work /tmp/w --results /tmp/r --device cpu \\
        --space tiny.yaml --steps 20 --max-tokens 512 --search-trials 12 --parallel 2

On the GPU machine run it as the ``code_lm`` plan of ``benchmarks/gpu_runner.py`` (each stage
and job a Ray task; it outlives a 10-minute device command):

    python3 benchmarks/gpu_runner.py start code_lm --root /tmp/gpu --set data=DATA [--set budget_s=600]
    python3 benchmarks/gpu_runner.py wait --root /tmp/gpu --for 540 --pack $OUT/results.tgz
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bits_front  # noqa: E402
from cosearch.space import SearchSpace  # noqa: E402

PROMPTS = ("static int ", "/*\n * ", "#include <linux/")
HARDWARE = ("zcu102", "tpu_like")
EVAL_ARCHS = ("largest", "smallest", "random0", "random1", "largest_w4a8")


def remove_run(folder: Path) -> None:
    """Delete ``folder`` when it is a cosearch run (its marker says so); anything else
    there is left alone, and ``cosearch train --out`` then refuses it with one line."""
    from cosearch.outdirs import kind_of
    if not folder.is_symlink() and kind_of(folder) == "run":
        shutil.rmtree(folder)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cosearch.cli", *args]


def run_logged(argv: list[str], logfile: Path) -> None:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "a") as f:
        f.write(f"$ {shlex.join(argv)}\n")
        f.flush()
        rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"command failed ({rc}): {shlex.join(argv)}\n{tail}")


@dataclass(frozen=True)
class JobSpec:
    """One job of stage 4 as a GPU plan sees it before anything ran."""

    gpu: float
    done: Path
    build: Callable


class Recipe:
    def __init__(self, a):
        self.a = a
        self.work, self.res = Path(a.work).resolve(), Path(a.results).resolve()
        self.logs = self.work / "logs"
        self.space = SearchSpace.load(a.space)
        self.gpu = a.device == "cuda"
        self.stage_dir = self.res / "stages"  # one file per stage: parallel jobs never write the same file
        self.stages = {f.stem: json.loads(f.read_text()) for f in sorted(self.stage_dir.glob("*.json"))}

    # ------------------------------------------------------------------ helpers
    def done(self, name: str) -> bool:
        return name in self.stages

    def mark(self, name: str, t0: float, **info) -> None:
        self.stages[name] = {"wall_s": round(time.time() - t0, 2), **info}
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.stage_dir / f".{name}.tmp"
        tmp.write_text(json.dumps(self.stages[name], indent=1) + "\n")
        tmp.replace(self.stage_dir / f"{name}.json")

    def train_flags(self) -> list[str]:
        a = self.a
        flags = ["--space", str(self.space.source), "--task", "lm", "--tokenizer", "bpe", "--data", str(Path(a.data).resolve()),
                 "--max-tokens", str(a.max_tokens), "--lr", str(a.lr), "--label-smoothing", "0",
                 "--seed", str(a.seed), "--no-progress"]
        return flags + (["--gpu"] if self.gpu else [])

    def arch_file(self, name: str) -> Path:
        """largest, smallest, randomN (space.sample(N)) or largest_w4a8 as a JSON file."""
        if name in ("largest", "smallest"):
            return Path(name)
        path = self.work / "archs" / f"{name}.json"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            sp = self.space
            arch = sp.with_bits(sp.largest(), 4, 8) if name == "largest_w4a8" else sp.sample(int(name.removeprefix("random")))
            path.write_text(arch.to_json() + "\n")
        return path

    # ------------------------------------------------------------------ 1. data
    def stage_data(self) -> None:
        if self.done("data"):
            return
        from cosearch.data import build_task_data
        from cosearch.data.tasks import encode_threads
        from cosearch.training.train import data_cache_dir
        t0 = time.time()
        log("data: tokenizer and token cache")
        td = build_task_data("lm", Path(self.a.data).resolve(), self.space.vocab_size, self.work / "data_probe",
                             max_len=self.space.spec.max_positions, cache_dir=data_cache_dir(), tokenizer="bpe",
                             progress=False)
        info = {k: v for k, v in td.info.items()}
        self.mark("data", t0, info=info, threads=encode_threads(), cpus=os.cpu_count())
        log(f"data: {time.time() - t0:.1f} s, {info}")

    # ------------------------------------------------------------------ 2. calibrate
    def steps(self) -> int:
        if self.a.steps:
            return self.a.steps
        return self.stages["calibrate"]["steps"]

    def stage_calibrate(self) -> None:
        if self.a.steps or self.done("calibrate"):
            return
        from cosearch.training.rundir import read_metrics
        from train_gpu import stage_step_time
        t0 = time.time()
        calib = self.work / "calib"
        remove_run(calib)  # a killed calibration starts again: its timing must be from one run
        n = self.a.calib_steps
        log(f"calibrate: {n} steps")
        run_logged(cli("train", *self.train_flags(), "--out", str(calib), "--steps", str(n),
                       "--log-every", str(max(1, n // 20)), "--ckpt-every", str(10 ** 9)), self.logs / "calibrate.log")
        records = read_metrics(calib)
        wall = time.time() - t0
        est = stage_step_time(records, n, (0.2, 0.5))
        setup = wall - records[-1]["elapsed"]
        steps = max(20, int((self.a.budget_s - setup) / est["step_s"] * 0.97))
        remove_run(calib)
        self.mark("calibrate", t0, steps=steps, step_s=est["step_s"], per_stage_step_s=est["per_stage_step_s"],
                  setup_s=setup, calib_steps=n, budget_s=self.a.budget_s)
        log(f"calibrate: {est['step_s']:.3f} s/step, setup {setup:.0f} s -> {steps} steps")

    # ------------------------------------------------------------------ 3. supernet
    @property
    def run_dir(self) -> Path:
        return self.work / "supernet"

    def stage_supernet(self) -> None:
        if self.done("supernet"):
            return
        t0 = time.time()
        steps = self.steps()
        log(f"supernet: {steps} steps")
        limit = self.a.budget_s * 1.3 if self.a.budget_s else None
        run_logged(cli("train", *self.train_flags(), "--out", str(self.run_dir), "--steps", str(steps),
                       "--log-every", "50", "--ckpt-every", "500", "--json",
                       *(["--time-limit", str(limit)] if limit else [])), self.logs / "supernet.log")
        from cosearch.training.rundir import read_metrics
        m = read_metrics(self.run_dir)
        summary_file = self.run_dir / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {"finished": False, "step": m[-1]["step"]}
        self.mark("supernet", t0, steps=steps, summary=summary, last_metrics=m[-1],
                  tokens_per_s_median=sorted(r["tokens_per_s"] for r in m)[len(m) // 2])
        log(f"supernet: done in {time.time() - t0:.0f} s")

    # ------------------------------------------------------------------ 4. jobs
    def json_job(self, name: str, argv: list[str], out: Path, gpu: float):
        """A job whose command prints JSON: kept in ``out`` (written last: it marks the job done)."""
        from cosearch.jobs import Job
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        script = f"{shlex.join(argv)} > {shlex.quote(str(tmp))} && mv {shlex.quote(str(tmp))} {shlex.quote(str(out))}"
        return Job(name=name, argv=("bash", "-c", script), done=str(out), gpu=gpu if self.gpu else 0.0,
                   env=(("OMP_NUM_THREADS", "2"),))

    def job_table(self) -> dict[str, "JobSpec"]:
        """Every job of stage 4 by name: its GPU share, the file that marks it done, and a
        function that builds the Job. Names, shares and done files need only the space (a GPU
        plan lists them before anything ran); the commands need the trained run (its recipe)
        and the calibrated steps."""
        a, g = self.a, (["--gpu"] if self.gpu else [])
        run, res = str(self.run_dir), self.res
        share = (lambda x: x) if self.gpu else (lambda x: 0.0)
        table = {}
        for arch in EVAL_ARCHS:
            for split in ("valid", "test"):
                out = res / "eval" / f"{arch}_{split}.json"
                table[f"eval_{arch}_{split}"] = JobSpec(share(0.01), out, lambda arch=arch, split=split, out=out: self.json_job(
                    f"eval_{arch}_{split}", cli("eval", "--run", run, "--arch", str(self.arch_file(arch)), "--split", split,
                                                "--json", "--max-tokens", str(a.eval_max_tokens), "--no-progress", *g),
                    out, 0.01))
        table["export_generate"] = JobSpec(0.0, res / "samples.done", self.export_job)
        front = self.work / "front"

        def bits_job():
            from cosearch.jobs import Job
            cmd = [sys.executable, str(ROOT / "benchmarks" / "bits_front.py"), "inherited", "--run", run,
                   "--out", str(front), "--no-progress", *g]
            return Job("bits_inherited", ("bash", "-c", f"{shlex.join(cmd)} && touch {shlex.quote(str(front / 'inherited.done'))}"),
                       done=str(front / "inherited.done"), gpu=share(0.05), env=(("OMP_NUM_THREADS", "2"),))
        table["bits_inherited"] = JobSpec(share(0.05), front / "inherited.done", bits_job)
        for hw in HARDWARE:
            out = self.work / f"search_{hw}"

            def search_job(hw=hw, out=out):
                from cosearch.jobs import Job
                return Job(f"search_{hw}", tuple(cli("search", "--run", run, "--hw", hw, "--trials", str(a.search_trials),
                                                     "--out", str(out), "--seed", str(a.seed), "--no-progress", *g)),
                           done=str(out / "summary.json"), gpu=share(0.05), env=(("OMP_NUM_THREADS", "2"),))
            table[f"search_{hw}"] = JobSpec(share(0.05), out / "summary.json", search_job)
        alone = self.work / "alone"
        for name, arch, sh in (("largest", self.space.largest(), 0.2), ("smallest", self.space.smallest(), 0.04)):
            for seed in (0, 1):
                job = f"alone_{name}_seed{seed}"
                table[job] = JobSpec(share(sh), alone / job / "eval.json",
                                     lambda job=job, arch=arch, seed=seed, sh=sh: bits_front.standalone_job(
                                         alone, job, arch, self.run_config(), self.alone_steps(), seed, share(sh),
                                         a.eval_max_tokens, a.alone_time_limit))
        cands = bits_front.candidates(front, self.space, keep=False)
        checks = front / bits_front.STANDALONE
        for lab, (t, arch) in bits_front.check_points_at_middle(cands, self.space).items():
            job = bits_front.check_name(lab, t, 0)
            table[job] = JobSpec(share(0.05), checks / job / "eval.json", lambda job=job, arch=arch: bits_front.standalone_job(
                checks, job, arch, self.run_config(), self.alone_steps(), 0, share(0.05), a.eval_max_tokens,
                a.alone_time_limit))
        return table

    def run_config(self) -> dict:
        from cosearch.training.rundir import read_config
        return read_config(self.run_dir)

    def alone_steps(self) -> int:
        return max(2, int(self.steps() * self.a.alone_fraction))

    def export_job(self):
        from cosearch.jobs import Job
        res, export = self.res, self.work / "export_largest_w4a8"
        res.mkdir(parents=True, exist_ok=True)
        steps = [shlex.join(cli("export", str(self.run_dir), "--arch", str(self.arch_file("largest_w4a8")),
                                "--out", str(export), "--force"))]
        for i, p in enumerate(PROMPTS):
            steps.append(f"{shlex.join(cli('generate', str(export), '--prompt', p, '--max-new-tokens', '200', '--seed', str(i)))}"
                         f" > {shlex.quote(str(res / f'sample{i}.txt'))}")
        steps.append(f"touch {shlex.quote(str(res / 'samples.done'))}")
        return Job("export_generate", ("bash", "-c", " && ".join(steps)), done=str(res / "samples.done"),
                   gpu=0.0, env=(("OMP_NUM_THREADS", "4"),))

    def jobs(self) -> list:
        return [spec.build() for spec in self.job_table().values()]

    def stage_job(self, name: str) -> None:
        """Run one job of stage 4 in the foreground (a GPU plan runs each as its own task)."""
        table = self.job_table()
        if name not in table:
            raise SystemExit(f"no job {name!r}; jobs: {', '.join(table)}")
        job = table[name].build()
        if Path(job.done).exists():
            log(f"{name}: already done")
            return
        log(f"{name}: {shlex.join(job.argv)}")
        rc = subprocess.run(list(job.argv), env=dict(os.environ, **dict(job.env))).returncode
        if rc != 0 or not Path(job.done).exists():
            raise SystemExit(f"{name} failed (exit {rc}) or wrote no {job.done}")

    def stage_jobs(self) -> None:
        if self.done("jobs"):
            return
        from cosearch.jobs import run_jobs
        t0 = time.time()
        jobs = self.jobs()
        parallel = self.a.parallel or (len(jobs) if self.gpu else 1)
        if parallel > 1:
            wait_for_ray(self.a.ray_wait_s)
        log(f"jobs: {len(jobs)} ({', '.join(j.name for j in jobs)}), {parallel} at once")
        results = run_jobs(jobs, self.work / "jobs", parallel=parallel, progress=False)
        failed = {r.name: r.tail[-2000:] for r in results if not r.ok}
        # seconds of every job that ran, this call or an earlier one that had failures
        seconds = {**self.stages.get("jobs_failed", {}).get("seconds", {}),
                   **{r.name: round(r.seconds, 1) for r in results if not r.skipped}}
        if failed:  # not done: the next call retries the failed jobs (done ones are skipped)
            self.mark("jobs_failed", t0, seconds=seconds, failed=failed)
        else:
            (self.stage_dir / "jobs_failed.json").unlink(missing_ok=True)
            self.mark("jobs", t0, seconds=seconds)
        log(f"jobs: done in {time.time() - t0:.0f} s; failed: {sorted(failed) or 'none'}")

    # ------------------------------------------------------------------ 5. report
    def stage_report(self) -> dict:
        t0 = time.time()
        self.res.mkdir(parents=True, exist_ok=True)
        out = {"benchmark": "code_lm recipe (issue 22)", "machine": bits_front.machine(), "space": self.space.name,
               "data": str(self.a.data), "settings": {k: v for k, v in vars(self.a).items()},
               "stages": self.stages}
        out["eval"] = {}
        for f in sorted((self.res / "eval").glob("*.json")):
            r = json.loads(f.read_text())
            out["eval"][f.stem] = {k: r[k] for k in ("loss", "bits_per_byte", "tokens", "bytes", "step") if k in r}
        out["samples"] = {p: (self.res / f"sample{i}.txt").read_text() for i, p in enumerate(PROMPTS)
                          if (self.res / f"sample{i}.txt").is_file()}
        out["seed_noise"] = seed_noise(self.work / "alone")
        front = self.work / "front"
        if (front / bits_front.INHERITED).is_file():
            rep = bits_front.report(front)
            out["bits_front"] = {k: rep[k] for k in ("verdict", "winners", "low_bit_wins", "targets", "clear_winners",
                                                     "standalone_vs_inherited_kendall_tau", "by_target", "standalone")}
            for f in ("bits_front.json", "bits_front.png"):
                shutil.copy(front / f, self.res / f)
        out["search"] = {hw: search_front(self.work / f"search_{hw}") for hw in HARDWARE
                         if (self.work / f"search_{hw}" / "pareto.csv").is_file()}
        if out["search"]:
            plot_search_fronts({hw: self.work / f"search_{hw}" for hw in out["search"]}, self.res / "search_fronts.png")
        out["report_s"] = round(time.time() - t0, 2)
        (self.res / "code_lm_recipe.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
        log(f"report: {self.res / 'code_lm_recipe.json'}")
        return out

    def run(self, parts: list[str]) -> None:
        # every run and job of the recipe shares one encoded corpus (set here, not when a GPU
        # plan only lists the jobs)
        os.environ["COSEARCH_DATA_CACHE"] = str(self.work / "cache")
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        for name in ("data", "calibrate", "supernet", "jobs", "report"):
            if name in parts:
                getattr(self, f"stage_{name}")()
        for part in parts:
            if part.startswith("job:"):
                self.stage_job(part.removeprefix("job:"))


def wait_for_ray(seconds: float) -> None:
    """Wait up to ``seconds`` for Ray to become importable (code_lm_recipe.sh installs its
    wheels in a later device call: they and the data do not fit in one)."""
    import importlib
    end = time.time() + seconds
    while importlib.util.find_spec("ray") is None:
        if time.time() > end:
            raise SystemExit("the job stage runs its jobs at once through Ray, which is not installed; carry "
                             ".whl/ray (benchmarks/gpu_ray_wheels.sh) or pass --parallel 1")
        log("jobs: waiting for Ray to be installed")
        time.sleep(10)
        importlib.invalidate_caches()


# --------------------------------------------------------------------------- summaries
def seed_noise(alone: Path) -> dict:
    """Standalone largest and smallest over seeds: the validation-loss gap against the
    pooled seed-to-seed standard deviation (the >= 10x goal)."""
    import numpy as np
    by: dict[str, list] = {}
    for ev in sorted(alone.glob("alone_*_seed*/eval.json")) if alone.is_dir() else []:
        name = ev.parent.name.removeprefix("alone_").rsplit("_seed", 1)[0]
        r = json.loads(ev.read_text())
        by.setdefault(name, []).append({"seed": int(ev.parent.name.rsplit("seed", 1)[1]), "loss": r["loss"],
                                        "bits_per_byte": r.get("bits_per_byte"), "step": r["step"]})
    out: dict = {"runs": by}
    if all(len(by.get(k, [])) >= 2 for k in ("largest", "smallest")):
        lo = np.array([r["loss"] for r in by["largest"]])
        hi = np.array([r["loss"] for r in by["smallest"]])
        pooled = float(np.sqrt((lo.var(ddof=1) + hi.var(ddof=1)) / 2))
        gap = float(hi.mean() - lo.mean())
        out.update(gap=gap, pooled_seed_std=pooled, gap_over_std=gap / pooled if pooled > 0 else float("inf"),
                   seeds_per_arch=int(min(len(lo), len(hi))),
                   note="std from 2 seeds per arch (2 degrees of freedom when pooled): a rough scale")
    return out


def _front_rows(folder: Path):
    import pandas as pd
    return pd.read_csv(folder / "pareto.csv")


def search_front(folder: Path) -> dict:
    """Weight bit-widths of the archs on a search's Pareto front: every per-layer width used,
    and each arch's most common one (ties: the lower)."""
    from collections import Counter
    df = _front_rows(folder)
    per_arch = [sorted(float(x) for x in str(s).split()) for s in df["weight_bits"]]
    dominant = [min(Counter(b).most_common(), key=lambda kv: (-kv[1], kv[0]))[0] for b in per_arch]
    used = sorted({b for bits in per_arch for b in bits})
    trials = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
    return {"front_size": len(df), "bit_widths_used": used, "dominant_bit_widths": sorted(set(dominant)),
            "dominant_counts": {str(k): v for k, v in sorted(Counter(dominant).items())},
            "best_loss": float(df["quality"].min()) if "quality" in df else None,
            "summary": {k: trials[k] for k in ("trials", "feasible", "hypervolume") if k in trials}}


def plot_search_fronts(folders: dict[str, Path], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, axes = plt.subplots(1, len(folders), figsize=(5.5 * len(folders), 4.2), squeeze=False)
    for ax, (hw, folder) in zip(axes[0], folders.items()):
        df = _front_rows(folder)
        mean_bits = [np.mean([float(x) for x in str(s).split()]) for s in df["weight_bits"]]
        sc = ax.scatter(df["size"], df["quality"], c=np.log2(mean_bits), cmap="viridis", s=22)
        ax.set_xscale("log")
        ax.set_xlabel("weight size (MB)")
        ax.set_ylabel("validation loss (inherited weights)")
        ax.set_title(f"code_lm front on {hw} ({len(df)} archs)")
        cb = fig.colorbar(sc, ax=ax)
        cb.set_label("log2 mean weight bits")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the linux-c folder (train/valid/test .txt.xz)")
    ap.add_argument("--work", required=True, help="work folder (runs, caches, jobs)")
    ap.add_argument("--results", required=True, help="results folder (JSON, plots, samples)")
    ap.add_argument("--space", default="code_lm")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--budget-s", type=float, default=600.0, help="supernet training wall time (default 600)")
    ap.add_argument("--steps", type=int, default=None, help="supernet steps (default: calibrated to --budget-s)")
    ap.add_argument("--calib-steps", type=int, default=60)
    ap.add_argument("--max-tokens", type=int, default=32768, help="tokens per batch (64 blocks of 512)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-max-tokens", type=int, default=65536)
    ap.add_argument("--alone-fraction", type=float, default=0.2,
                    help="standalone runs train this fraction of the supernet's steps")
    ap.add_argument("--alone-time-limit", type=float, default=None, help="training time limit of a standalone job (s)")
    ap.add_argument("--search-trials", type=int, default=300)
    ap.add_argument("--parallel", type=int, default=None, help="jobs at once (default: all on a GPU, 1 on a CPU)")
    ap.add_argument("--ray-wait-s", type=float, default=0.0, help="wait this long for Ray to be installed")
    ap.add_argument("--parts", default="data,calibrate,supernet,jobs,report",
                    help="stages to run, in order: data, calibrate, supernet, jobs (all of stage 4 through "
                    "cosearch.jobs), job:NAME (one of them, in the foreground), report")
    a = ap.parse_args(argv)
    if a.budget_s is not None and a.budget_s <= 0:
        a.budget_s = None
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    Recipe(a).run(a.parts.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
