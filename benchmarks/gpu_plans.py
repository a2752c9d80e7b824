"""Plans for ``gpu_runner.py``: functions returning the jobs of one GPU session.

Every job is a command line a user could run (a ``cosearch`` command or a benchmark
script) with its share of one GPU (Ray packs fractional shares onto a GPU) and the jobs it
runs after. Settings come as strings from ``--set KEY=VALUE``.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from cosearch.jobs import Job

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _cosearch(*args: str) -> tuple[str, ...]:
    """``cosearch ARGS`` run through this interpreter (the GPU machine has no entry point)."""
    return (PY, "-m", "cosearch.cli", *args)


def _to_file(argv: tuple[str, ...], path: str) -> tuple[str, ...]:
    """``argv`` with its standard output saved to ``path`` only when it succeeds."""
    cmd = shlex.join(argv)
    return ("sh", "-c", f"{cmd} > {shlex.quote(path)}.tmp && mv {shlex.quote(path)}.tmp {shlex.quote(path)}")


def _optional(job: Job) -> Job:
    """``job`` as a measurement the plan goes on without: it always exits 0 and is done once
    attempted (its own result file says whether it worked), so a failure or time-out never
    skips the jobs placed after it."""
    marker = f"{job.done}.attempted"
    folder = shlex.quote(str(Path(marker).parent))
    return replace(job, argv=("sh", "-c", f"mkdir -p {folder}; {shlex.join(job.argv)}; touch {shlex.quote(marker)}"),
                   done=marker)


def smoke(out: str = "/tmp/gpu-smoke", steps: str = "3") -> list[Job]:
    """A CPU check of the runner: train the tiny LM for a few steps, then evaluate it."""
    run = f"{out}/run"
    return [
        Job("train_tiny", _cosearch("train", "--space", "tiny_lm", "--task", "lm", "--out", run,
                                    "--steps", steps, "--max-tokens", "256", "--no-progress"),
            done=f"{run}/summary.json"),
        Job("eval_tiny", _to_file(_cosearch("eval", "--run", run, "--arch", "smallest", "--json"),
                                  f"{out}/eval_smallest.json"),
            done=f"{out}/eval_smallest.json", after=("train_tiny",)),
    ]


def code_lm(data: str = "", work: str = "/tmp/gpu/code_lm", budget_s: str = "600", steps: str = "",
            space: str = "code_lm", device: str = "cuda", extra: str = "") -> list[Job]:
    """Issue 22 on one GPU (``benchmarks/code_lm_recipe.py``, one stage or job per task): the
    token cache, the calibration and the supernet (each with the GPU alone), then the
    evaluations, export and samples, bits front, searches and standalone runs sharing the
    GPU, then the report (WORK/results/code_lm_recipe.json). ``steps`` skips the calibration;
    ``extra``: more code_lm_recipe.py flags (e.g. "--search-trials 200")."""

    import code_lm_recipe
    if not data:
        raise SystemExit("the code_lm plan needs --set data=PATH (the linux-c folder)")
    base = (PY, str(ROOT / "benchmarks" / "code_lm_recipe.py"), "--data", data, "--work", work,
            "--results", f"{work}/results", "--space", space, "--device", device, "--budget-s", budget_s,
            *(("--steps", steps) if steps else ()), *shlex.split(extra))
    recipe = code_lm_recipe.Recipe(code_lm_recipe.parse_args(list(base[2:])))
    alone = 1.0 if device == "cuda" else 0.0  # timed stages have the GPU to themselves

    def stage(name: str, part: str, after: tuple[str, ...], gpu: float = 0.0, done: str | None = None) -> Job:
        return Job(f"code_lm_{name}", (*base, "--parts", part), done=done or f"{work}/results/stages/{name}.json",
                   gpu=gpu, after=after)

    # tokenizing is CPU work: every core, not the one thread Ray gives a task by default
    # ($OMP_NUM_THREADS=1 there, which the encoder follows: 94 s instead of 27 s on 16 cores)
    cores = str(os.cpu_count() or 1)
    jobs = [replace(stage("data", "data", ()), env=(("OMP_NUM_THREADS", cores),))]
    if not steps:
        jobs.append(stage("calibrate", "calibrate", ("code_lm_data",), alone))
    jobs.append(stage("supernet", "supernet", (jobs[-1].name,), alone))
    names = []
    for name, spec in recipe.job_table().items():
        jobs.append(stage(name, f"job:{name}", ("code_lm_supernet",), spec.gpu, done=str(spec.done)))
        names.append(jobs[-1].name)
    jobs.append(stage("report", "report", tuple(names), done=f"{work}/results/code_lm_recipe.json"))
    return jobs


def session(data: str = "", work: str = "/tmp/gpu", budget_s: str = "360", search_workers: str = "1,2,6",
            search_trials: str = "300", extra: str = "") -> list[Job]:
    """One H200 session: the ``code_lm`` plan with three measurements that need the GPU alone
    placed where it is idle -- the quantized-member overhead of the three training paths
    (bucketed, reference, fused; beside the CPU-only token cache), the MFU of the plain largest ``code_lm`` model (after the token
    cache, before the calibration) and the search throughput of ``cosearch search --gpu
    --workers K`` on the trained supernet (before the shared jobs) -- then ``cosearch
    fidelity`` on the same supernet (24 archs, 4 seed-noise runs), sharing the GPU with the
    code_lm jobs. Its report needs scipy: where the GPU machine lacks it, the job ends after
    writing ``measured.json`` and ``cosearch fidelity RUN --out COPY --report-only`` rebuilds it."""
    lm_work = f"{work}/code_lm"
    res = f"{work}/results"
    jobs = code_lm(data=data, work=lm_work, budget_s=budget_s, extra=extra)
    cache = (("COSEARCH_DATA_CACHE", f"{lm_work}/cache"),)
    mfu = Job("mfu_code_lm", (PY, str(ROOT / "benchmarks" / "train_gpu.py"), "throughput", "--space", "code_lm",
                              "--data", data, "--max-tokens", "32768", "--path", "reference",
                              "--compile-plain", "default", "--warmup", "60", "--repeats", "15",
                              "--out", f"{res}/train_gpu_throughput_code_lm.json"),
              done=f"{res}/train_gpu_throughput_code_lm.json", gpu=1.0, env=cache, after=("code_lm_data", "supernet_overhead"))
    overhead = Job("supernet_overhead", ("timeout", "170", PY, str(ROOT / "benchmarks" / "supernet_overhead.py"),
                                         "--device", "cuda", "--space", "multi30k", "--path", "all", "--batch", "1024",
                                         "--len", "32", "--repeats", "5", "--configs", "largest_w4a8",
                                         "--out", f"{res}/supernet_overhead_all.json"),
                   done=f"{res}/supernet_overhead_all.json", gpu=1.0)
    search_tp = Job("search_throughput", (PY, str(ROOT / "benchmarks" / "search_throughput.py"),
                                          "--run", f"{lm_work}/supernet", "--gpu", "--workers", search_workers,
                                          "--trials", search_trials, "--max-batches", "8", "--timeout", "150",
                                          "--out", f"{res}/search_throughput_code_lm.json"),
                    done=f"{res}/search_throughput_code_lm.json", gpu=1.0, env=cache, after=("code_lm_supernet",))
    run = f"{lm_work}/supernet"
    # search quality (a hypervolume, not a speed): random vs the command's default (NSGA-II,
    # front candidates measured up to 5 times: the valid split has the blocks), 3 seeds, fronts
    # scored on the test split; it may share the GPU
    search_hv = _optional(Job("search_hv", (PY, str(ROOT / "benchmarks" / "search_hv_real.py"), "--run", run, "--gpu",
                                            "--workers", "2", "--trials", "300", "--checkpoints", "100,300",
                                            "--settings", "random,default", "--seeds", "3", "--max-batches", "8",
                                            "--heldout-split", "test", "--heldout-batches", "20",
                                            "--goal", "default,random", "--timeout", "500",
                                            "--out", f"{res}/search_hv_real_code_lm.json"),
                              done=f"{res}/search_hv_real_code_lm.json", gpu=0.05, env=cache,
                              after=("code_lm_supernet", "search_throughput")))
    # standalone steps: ~40 s of the supernet's own step rate each (1/15 of its steps at 600 s);
    # its own Ray instance (RAY_ADDRESS=local) packs 8 jobs at once on the GPU this job sees
    fid_out = f"{lm_work}/fidelity"
    fid = _cosearch("fidelity", run, "--out", fid_out, "--gpu", "--archs", "24", "--per-bin", "4",
                    "--noise-archs", "4", "--gpu-share", "0.125", "--max-tokens", "65536",
                    "--eval-tokens", "131072", "--no-progress")
    steps_py = (f"import json; s=json.load(open('{run}/summary.json')); "
                "print(max(100, round(40*s['steps_per_s'])))")
    script = f'STEPS=$({shlex.quote(PY)} -c {shlex.quote(steps_py)}) && {shlex.join(fid)} --steps "$STEPS"'
    fidelity_job = Job("fidelity_code_lm", ("bash", "-c", script), done=f"{fid_out}/measured.json", gpu=0.01,
                       env=(*cache, ("RAY_ADDRESS", "local")), after=("code_lm_supernet", "search_throughput"))
    overhead, mfu, search_tp = _optional(overhead), _optional(mfu), _optional(search_tp)
    # the first timed training stage (the calibration, or the supernet when steps are given)
    first_timed = "code_lm_calibrate" if any(j.name == "code_lm_calibrate" for j in jobs) else "code_lm_supernet"
    out = [overhead]
    for j in jobs:
        if j.name == first_timed:
            j = replace(j, after=(*j.after, "mfu_code_lm"))
        elif "code_lm_supernet" in j.after:
            j = replace(j, after=(*j.after, "search_throughput"))
        out.append(j)
        if j.name == "code_lm_data":
            out.append(mfu)
        if j.name == "code_lm_supernet":
            out.append(search_tp)
    return out + [fidelity_job, search_hv]


def fidelity(out: str = "/tmp/fid", data: str = ".data/multi30k", space: str = "multi30k",
             task: str = "translation", steps: str = "300", max_tokens: str = "8192", max_len: str = "",
             archs: str = "48", per_bin: str = "6", noise_archs: str = "6", distilled_archs: str = "0",
             dropouts: str = "", variants: str = "none:mode=none;layer:mode=layer",
             supernet_share: str = "0.25", gpu_share: str = "0.0625", gpu: str = "1") -> list[Job]:
    """``cosearch fidelity`` of supernet variants against shared standalone runs
    (benchmarks/fidelity.py, which runs its own jobs on a Ray instance of its own). Its
    results are OUT/run_info.json and OUT/fidelity/VARIANT/{plan,measured,fidelity}.json;
    where scipy is missing, rebuild the reports with ``benchmarks/fidelity.py --out OUT
    --report-only``."""
    argv = [PY, str(ROOT / "benchmarks" / "fidelity.py"), "--space", space, "--task", task, "--data", data,
            "--out", out, "--steps", steps, "--max-tokens", max_tokens, "--archs", archs, "--per-bin", per_bin,
            "--noise-archs", noise_archs, "--distilled-archs", distilled_archs, "--variants", variants,
            "--gpu", "--supernet-share", supernet_share, "--gpu-share", gpu_share]
    if max_len:
        argv += ["--max-len", max_len]
    if dropouts:
        argv += ["--dropouts", dropouts]
    return [Job("fidelity", tuple(argv), done=f"{out}/run_info.json", gpu=float(gpu))]


def multi30k(data: str = "", work: str = "/tmp/gpu/m30k", steps: str = "600", max_tokens: str = "8192",
             search_workers: str = "1,2,6", search_trials: str = "1000", hv_trials: str = "1000",
             hv_settings: str = "random,default", fid_steps: str = "300", fid_seeds: str = "3",
             archs: str = "48", per_bin: str = "6", noise_archs: str = "6", hv_batches: str = "20",
             fid_variants: str = "none:mode=none;layer:mode=layer", fid_max_tokens: str = "",
             fid_gpu_share: str = "0.0625", parts: str = "search,fidelity", tp_forward: str = "",
             code_lm_data: str = "", code_lm_steps: str = "600", code_lm_hv_trials: str = "1000",
             code_lm_hv_batches: str = "2", fid_step_scales: str = "1", fid_compare: str = "",
             fid_standalone_steps: str = "") -> list[Job]:
    """Issues 21 and 23 on Multi30k, one H200: a ``cosearch train --gpu`` supernet; the CLI
    search throughput for K = 1, 2, 6 with the GPU alone (20 validation batches per arch);
    then, sharing the GPU, the hypervolume of random vs the command's default sampler as a
    user runs it (3 seeds, fronts after 300 and 1,000 trials scored on the test split; seeds
    outermost, the JSON rewritten after each run; ``hv_batches`` validation batches per
    measurement: 20 is the whole valid split of 6 batches of 4,096 tokens, so the default
    measures once; ``--set hv_batches=1 --set hv_settings=random,nsga2:r5:m2`` leaves room
    for 5 repeats of noisier measurements; the goal compares the last setting with the
    first) and ``benchmarks/fidelity.py``: 48 archs checked against the
    supernets ``none`` and ``layer`` with ``fid_seeds`` seeds each (own Ray instance).
    ``parts``: any of ``host`` (host vs GPU cost of one measurement), ``throughput``, ``hv``
    (each after the supernet) and ``fidelity``; ``search`` is the first three (e.g. a
    longer-budget check alone: ``--set parts=fidelity --set fid_steps=1200 --set archs=24``;
    the hypervolume and then the check: ``--set parts=hv,fidelity``, the check after the
    hypervolume so that the two never share GPU memory);
    ``fid_max_tokens``: the fidelity runs' batch size (default ``max_tokens``), so a
    longer-budget check can share a session with the search's supernet; ``fid_gpu_share``:
    each standalone run's share of the GPU (0.0625: 16 at once, which at 32,768-token batches
    ran the H200 out of memory: ~10 GB each; give 0.125 there).
    ``fid_step_scales``: the check's standalone steps sweep (``1,3``: each arch also 3x as long,
    reported as ``reference_budgets``: is the short reference settled?); ``fid_standalone_steps``:
    the standalone runs' steps when they differ from the supernets' ``fid_steps`` (a longer
    reference for the same supernets); ``fid_compare``: the variant pairs to compare
    (``benchmarks/fidelity.py --compare``).
    ``tp_forward=TOKENS:COST``: the host-cost part adds that merge (``--forward-tokens``,
    ``--forward-cost``) and the throughput part measures with it (``$COSEARCH_FORWARD_TOKENS``,
    ``$COSEARCH_FORWARD_COST``; the command records both in search.json).
    ``code_lm_data=PATH`` (the linux-c folder) adds the hypervolume on a ``code_lm`` supernet
    (``code_lm_recipe.py`` with ``code_lm_steps`` steps, trained beside the multi30k supernet,
    each with half the GPU; its search beside the multi30k one, ``code_lm_hv_batches``
    validation batches per measurement, fronts after 300 and ``code_lm_hv_trials``; the
    timed parts wait for both supernets)."""
    if not data:
        raise SystemExit("the multi30k plan needs --set data=PATH (the multi30k folder)")
    wanted = set(parts.split(","))
    if not wanted or not wanted <= {"search", "host", "throughput", "hv", "fidelity"}:
        raise SystemExit(f"--set parts={parts}: give any of search (= host,throughput,hv), host, throughput, hv, "
                         "fidelity")
    if "search" in wanted:
        wanted |= {"host", "throughput", "hv"}
    res = f"{work}/results"
    run = f"{work}/supernet"
    sup = Job("m30k_supernet", _cosearch("train", "--space", "multi30k", "--task", "translation", "--data", data,
                                         "--out", run, "--steps", steps, "--max-tokens", max_tokens, "--gpu",
                                         "--no-progress"),
              done=f"{run}/summary.json", gpu=1.0)
    if tp_forward:
        try:
            fwd_tokens, fwd_cost = (int(v) for v in tp_forward.split(":"))
        except ValueError:
            fwd_tokens = fwd_cost = 0
        if min(fwd_tokens, fwd_cost) < 1:
            raise SystemExit(f"--set tp_forward={tp_forward}: give TOKENS:COST, two positive whole numbers, "
                             "e.g. 65536:16384")
        fwd_tokens, fwd_cost = str(fwd_tokens), str(fwd_cost)
    # the code_lm supernet only serves its hypervolume
    with_code_lm = bool(code_lm_data) and "hv" in wanted
    if with_code_lm:  # the two supernets share the GPU; nothing timed runs beside them
        sup = replace(sup, gpu=0.5)
    tp = _optional(Job("search_throughput_m30k", (PY, str(ROOT / "benchmarks" / "search_throughput.py"), "--run", run,
                                                  "--gpu", "--workers", search_workers, "--trials", search_trials,
                                                  "--max-batches", "20", "--timeout", "240",
                                                  "--out", f"{res}/search_throughput_m30k.json"),
                       done=f"{res}/search_throughput_m30k.json", gpu=1.0,
                       env=(("COSEARCH_FORWARD_TOKENS", fwd_tokens), ("COSEARCH_FORWARD_COST", fwd_cost))
                       if tp_forward else ()))
    # host vs GPU cost of one measurement, one lever at a time: each batch its own forward in
    # fp32, then TF32 (losses within 1e-4 of fp32), then TF32 with merged forwards (the search's
    # default; losses and per-batch standard errors within 1e-4 of TF32 alone); each step runs
    # even when a check before it failed; the GPU alone, before the throughput runs
    hc = [PY, str(ROOT / "benchmarks" / "measure_host_cost.py"), run, "--gpu", "--archs", "40",
          "--out", f"{res}/measure_host_cost_m30k.json"]
    host_steps = [hc + ["--no-tf32", "--forward-tokens", "4096", "--label", "fp32"],
                  hc + ["--forward-tokens", "4096", "--label", "tf32", "--compare", "fp32", "--rtol", "1e-4"],
                  hc + ["--label", "tf32_merged", "--compare", "tf32", "--rtol", "1e-4", "--compare-se"]]
    if tp_forward:
        host_steps.append(hc + ["--forward-tokens", fwd_tokens, "--forward-cost", fwd_cost,
                                "--label", f"tf32_t{fwd_tokens}_c{fwd_cost}", "--compare", "tf32", "--rtol", "1e-4",
                                "--compare-se"])
    host = _optional(Job("host_cost_m30k", ("sh", "-c", "; ".join(shlex.join(c) for c in host_steps)),
                         done=f"{res}/measure_host_cost_m30k.json", gpu=1.0))
    hv_list = hv_settings.split(",")

    def hv_job(name: str, run_dir: str, trials: str, batches: str, heldout_batches: str, env=()) -> Job:
        """The hypervolume of ``hv_settings`` on ``run_dir`` as a user runs the search (3 seeds,
        3 searches of 2 workers at once, fronts after 300 and ``trials`` scored on the test split)."""
        checkpoints = ",".join(dict.fromkeys(c for c in ("300", trials) if int(c) <= int(trials)))
        out = f"{res}/search_hv_real_{name}.json"
        return _optional(Job(f"search_hv_{name}", (PY, str(ROOT / "benchmarks" / "search_hv_real.py"), "--run", run_dir,
                                                   "--gpu", "--workers", "2", "--trials", trials,
                                                   "--checkpoints", checkpoints, "--settings", hv_settings,
                                                   "--seeds", "3", "--max-batches", batches, "--heldout-split", "test",
                                                   "--heldout-batches", heldout_batches,
                                                   "--goal", f"{hv_list[-1]},{hv_list[0]}", "--timeout", "1200",
                                                   "--parallel", "3", "--out", out),
                             done=out, gpu=0.05, env=env))

    hv = hv_job("m30k", run, hv_trials, hv_batches, "100")
    fid = Job("fidelity_m30k", (PY, str(ROOT / "benchmarks" / "fidelity.py"), "--space", "multi30k",
                                "--task", "translation", "--data", data, "--out", f"{work}/fid", "--steps", fid_steps,
                                "--max-tokens", fid_max_tokens or max_tokens, "--archs", archs, "--per-bin", per_bin,
                                "--noise-archs", noise_archs, "--variants", fid_variants,
                                "--supernet-seeds", fid_seeds, "--gpu", "--supernet-share", "0.125",
                                "--gpu-share", fid_gpu_share, "--step-scales", fid_step_scales,
                                *(("--compare", fid_compare) if fid_compare else ()),
                                *(("--standalone-steps", fid_standalone_steps) if fid_standalone_steps else ()),
                                "--result", f"{res}/fidelity_multi30k.json"),
              done=f"{work}/fid/run_info.json", gpu=0.9, env=(("RAY_ADDRESS", "local"),))
    # one after the other, each timed job with the GPU alone; the check last (its 32k-token
    # runs once filled the H200 beside the hypervolume's workers)
    lm_jobs, supernets = [], (sup.name,)
    if with_code_lm:
        lm_work = f"{work}/code_lm"
        # optional: a failed code_lm stage must not skip the multi30k measurements after it
        lm_jobs = [_optional(replace(j, gpu=0.5 if j.gpu else 0.0))
                   for j in code_lm(data=code_lm_data, work=lm_work, steps=code_lm_steps)
                   if j.name in ("code_lm_data", "code_lm_supernet")]
        supernets = (sup.name, "code_lm_supernet")
        lm_hv = hv_job("code_lm", f"{lm_work}/supernet", code_lm_hv_trials, code_lm_hv_batches, "20",
                       env=(("COSEARCH_DATA_CACHE", f"{lm_work}/cache"),))
    jobs, last = [], ()
    for part, job in (("host", host), ("throughput", tp), ("hv", hv)):
        if part in wanted:
            if part == "hv" and with_code_lm:  # the two searches share the GPU (neither is timed)
                jobs.append(replace(lm_hv, after=(*supernets, *last)))
                jobs.append(replace(job, after=(*supernets, *last)))
                last = (lm_hv.name, job.name)
                continue
            jobs.append(replace(job, after=(*supernets, *last)))
            last = (job.name,)
    if "fidelity" in wanted:
        jobs.append(replace(fid, after=last))
    return ([sup, *lm_jobs] if len(jobs) > ("fidelity" in wanted) else []) + jobs
