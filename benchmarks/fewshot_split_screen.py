"""Screen of a lever before building it: few-shot splitting of a trained supernet by decoder
depth (issue 21's "few-shot splitting of the supernet by depth").

For each decoder depth d of the space, a copy of the trained supernet trains ``--steps`` more
sandwich steps whose members are drawn only from depth d (largest, smallest and random
members of that depth, every bit-width enabled); each checked arch is then scored with its
depth's copy. The control trains the whole supernet (every depth) for as many extra steps as
the splits together (``--steps`` x depths): the same number of steps and batches (not the
same FLOPs: its members average other depths). Both use a constant rate, ``--rate`` x the
run's lr, as ``--finetune-steps`` does.

It reads checks that ``cosearch fidelity`` wrote (their archs, standalone and inherited
validation and, where the data has one, test losses) and their supernet runs, and reports per
supernet and pooled over seeds (paired bootstrap over archs,
``cosearch.fidelity.stats.tau_difference``): split minus inherited, split minus the control,
control minus inherited; with ``--finetuned-checks``, split minus the per-arch finetune. Not a
cosearch feature: it is how the lever was measured before deciding whether to build it.

    python3 benchmarks/fewshot_split_screen.py --runs /tmp/fid48_sh/supernets \\
        --checks /tmp/fid48_sh/fidelity --variants deep1 --seeds ,_seed1,_seed2 \\
        --finetuned-checks /tmp/ft_sh --out benchmarks/results/fewshot_split_screen_tiny_lm_deep1_cpu.json
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cosearch.fidelity.measure import score, task_data  # noqa: E402
from cosearch.fidelity.stats import kendall, tau_difference, within_bin_tau  # noqa: E402
from cosearch.space import Arch, SearchSpace  # noqa: E402
from cosearch.training.evaluate import load_run  # noqa: E402
from cosearch.training.finetune import recipe  # noqa: E402
from cosearch.training.sandwich import sandwich  # noqa: E402
from cosearch.training.train import DistInfo, make_batches, make_optimizer, model_inputs, sandwich_step  # noqa: E402
from fidelity import machine  # noqa: E402

DEVICE = torch.device("cpu")


def trained_on(run, td, cfg, space: SearchSpace, steps: int, rate: float, seed: int) -> torch.nn.Module:
    """A copy of ``run``'s supernet after ``steps`` sandwich steps drawn from ``space``."""
    work = copy.deepcopy(run.net)
    work.train()
    opt = make_optimizer(work, cfg)
    for g in opt.param_groups:
        g["lr"] = rate * cfg.lr
    batches = make_batches(td, cfg, seed, DistInfo(device=DEVICE))
    with torch.random.fork_rng(), torch.enable_grad():
        torch.manual_seed(seed)
        for s in range(1, steps + 1):
            # every bit-width enabled (stages None): the supernet finished its staged QAT
            members = sandwich(space, seed, s, steps, cfg.n_random, None, cfg.deep_random, cfg.shallow_random)
            inputs, target = model_inputs(next(batches))
            sandwich_step(work, work, opt, members, inputs, target, cfg, td.tokenizer.pad_id, td.tokenizer.vocab_size)
    return work.eval()


def screen_one(run_dir: Path, check: dict, steps: int, rate: float) -> dict:
    run = load_run(run_dir, DEVICE)
    td = task_data(run_dir, run.config)
    cfg = recipe(run.config)
    rows = check["per_arch"]
    archs = [Arch.from_dict(r["arch"]) for r in rows]

    def scored(net, a):  # valid_loss, and test_loss where the data has a test split
        return score(net.extract(a), td, run.config["train"], DEVICE, check["max_tokens"], False, 0,
                     check["settings"].get("eval_tokens"))

    # the check's inherited scores are what this scoring gives (same checkpoint, same batches)
    for i in (0, len(archs) // 2, len(archs) - 1):
        for metric, value in scored(run.net, archs[i]).items():
            if abs(value - rows[i]["inherited"][metric]) > 1e-4:
                raise SystemExit(f"{run_dir}: {rows[i]['label']}'s inherited {metric} is {value}, the check says "
                                 f"{rows[i]['inherited'][metric]}: not the check's supernet or scoring")
    base = run.space.to_dict()
    depths = list(base["decoder"]["layers"])
    t0 = time.time()
    split = [None] * len(archs)
    for d in depths:
        sub = copy.deepcopy(base)
        sub["decoder"]["layers"] = [d]
        net = trained_on(run, td, cfg, SearchSpace.from_dict(sub), steps, rate, 1000 + d)
        for i, a in enumerate(archs):
            if len(a.decoder) == d:
                split[i] = scored(net, a)
    t_split = time.time() - t0
    net = trained_on(run, td, cfg, run.space, steps * len(depths), rate, 1000)
    control = [scored(net, a) for a in archs]
    out = {"run": str(run_dir), "depths": depths, "labels": [r["label"] for r in rows],
           "decoder_layers": [len(a.decoder) for a in archs], "weight_mb": [r["weight_mb"] for r in rows],
           "seconds": {"split": round(t_split), "control": round(time.time() - t0 - t_split)}}
    for metric in split[0]:
        out[metric] = {"split": [e[metric] for e in split], "control": [e[metric] for e in control],
                       "inherited": [r["inherited"][metric] for r in rows],
                       "standalone": [r["standalone"][metric] for r in rows]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, required=True, help="folder of supernet runs, one per variant and seed")
    p.add_argument("--checks", type=Path, required=True, help="folder of their `cosearch fidelity` checks")
    p.add_argument("--variants", default="deep1,uniform")
    p.add_argument("--seeds", default=",_seed1,_seed2", help="name suffixes of the supernet seeds")
    p.add_argument("--steps", type=int, default=100, help="extra steps per depth (the control: x depths)")
    p.add_argument("--rate", type=float, default=0.3, help="constant lr, times the run's")
    p.add_argument("--finetuned-checks", type=Path, default=None,
                   help="checks of the same supernets and archs with --finetune-steps: also split minus them")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    result = {"benchmark": "fewshot_split_screen", "command": " ".join(sys.argv), "machine": machine(),
              "steps_per_depth": a.steps, "rate": a.rate, "split_seeds": "1000 + depth; control 1000",
              "runs": {}, "pooled": {}}
    for v in a.variants.split(","):
        names = [v + s for s in a.seeds.split(",")]
        for n in names:
            r = screen_one(a.runs / n, json.loads((a.checks / n / "fidelity.json").read_text()), a.steps, a.rate)
            for metric in (m for m in ("valid_loss", "test_loss") if m in r):
                c = r[metric]
                for k in ("split", "control", "inherited"):
                    c[f"tau_{k}"] = kendall(c[k], c["standalone"])
                    c[f"within_bin_{k}"] = within_bin_tau(c[k], c["standalone"], r["weight_mb"])[0]
                # how much each ranking rewards depth (the standalone runs' own is the target)
                for k in ("split", "control", "inherited", "standalone"):
                    c[f"depth_tau_{k}"] = kendall(r["decoder_layers"], c[k])
                print(n, metric, {k: round(c[k], 3) for k in c if k.startswith(("tau_", "within_bin_", "depth_"))},
                      flush=True)
            result["runs"][n] = r
        runs = [result["runs"][n] for n in names]
        for r in runs[1:]:  # the seeds' checks pick the same archs and share the standalone runs
            if (r["labels"], r["weight_mb"]) != (runs[0]["labels"], runs[0]["weight_mb"]) or any(
                    r[m]["standalone"] != runs[0][m]["standalone"] for m in ("valid_loss", "test_loss") if m in r):
                raise SystemExit(f"{r['run']}: its check has other archs or standalone runs than {runs[0]['run']}'s")
        finetuned = {}
        if a.finetuned_checks is not None:  # the per-arch finetune's scores, as other columns of the same rows
            for n, r in zip(names, runs):
                rows = json.loads((a.finetuned_checks / n / "fidelity.json").read_text())["per_arch"]
                if [x["label"] for x in rows] != r["labels"]:
                    raise SystemExit(f"{a.finetuned_checks / n}: other archs than {a.checks / n}")
                finetuned[n] = {m: [x["inherited"][m] for x in rows] for m in ("valid_loss", "test_loss") if m in r}
            result["finetuned_checks"] = str(a.finetuned_checks)
        for metric in (m for m in ("valid_loss", "test_loss") if m in runs[0]):
            ref, size = runs[0][metric]["standalone"], runs[0]["weight_mb"]
            for r, n in zip(runs, names):
                if finetuned:
                    r[metric]["finetuned"] = finetuned[n][metric]
            pairs = [("split - inherited", "split", "inherited"), ("split - control", "split", "control"),
                     ("control - inherited", "control", "inherited")]
            for label, x, y in pairs + ([("split - finetuned", "split", "finetuned")] if finetuned else []):
                d = tau_difference([r[metric][x] for r in runs], [r[metric][y] for r in runs], ref, size)
                result["pooled"][f"{v}, {metric}: {label}"] = d
                print(v, metric, label, round(d["kendall_diff"], 3), d["kendall_diff_ci"], "within bins",
                      round(d["within_bin_diff"], 3), d["within_bin_diff_ci"], flush=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
