"""``cosearch fidelity RUN [--out DIR] [--archs N] [--per-bin K] [--noise-archs K]
[--dropouts D,...] [--step-scales F,...] [--distilled-archs K] [--gpu] [--parallel N]``."""
from __future__ import annotations

import argparse
import json

from ..training.finetune_settings import LR_SCALE


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        values = ()
    if not values:  # "," or "" is a typo, not "no sweep" (leave the flag out for that)
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas (e.g. 0,0.1,0.2)")
    return values


def register(sub):
    p = sub.add_parser("fidelity", help="check that a supernet ranks sub-networks as standalone training does",
                       description="Pick archs stratified over size (or latency) and bit mixes, train each "
                       "standalone with the run's recipe (`cosearch train --arch`, as parallel jobs), and "
                       "report inherited vs standalone quality: Kendall tau and Spearman with bootstrap "
                       "intervals, the same for zero-cost proxies, tau within size bins, gaps and seed "
                       "noise. Re-running the same command resumes.")
    p.add_argument("run", metavar="RUN", help="a supernet run folder written by `cosearch train`")
    p.add_argument("--out", default=None, help="result folder (default RUN-fidelity, next to RUN)")
    p.add_argument("--jobs", default=None, metavar="DIR", help="standalone job folder (default OUT/jobs; "
                   "share one between checks of several supernets of one space, data and recipe, run one at a time)")
    p.add_argument("--standalone-from", default=None, action="append", metavar="CHECK", help="reuse the standalone "
                   "scores of an earlier check (its --out folder) instead of training: for another supernet of the "
                   "same space, data and recipe, checked with the same settings, where that check's runs are gone; "
                   "give it once per part of a reference trained with --shard")
    g = p.add_argument_group("which archs")
    g.add_argument("--archs", type=int, default=24, help="archs to check (default 24)")
    g.add_argument("--per-bin", type=int, default=None, help="archs per size bin, all within +-15%% of "
                   "each other (default 4, or --archs when fewer)")
    g.add_argument("--seed", type=int, default=0, help="seed of the arch picks (default 0)")
    g.add_argument("--stratify", choices=["size", "latency"], default="size",
                   help="spread the bins over weight MB or over --hw latency (default size)")
    g.add_argument("--hw", default="zcu102", help="accelerator preset for --stratify latency (default zcu102)")
    g.add_argument("--seq-len", type=int, default=30, help="tokens for latency and MACs (default 30)")
    g = p.add_argument_group("standalone baselines")
    g.add_argument("--steps", type=int, default=None, help="standalone steps (default: the supernet's)")
    g.add_argument("--dropouts", type=_floats, default=(), metavar="D,...",
                   help="dropout sweep, each arch keeps its best on the validation split (default: the "
                   "run's dropout only)")
    g.add_argument("--step-scales", type=_floats, default=(1.0,), metavar="F,...",
                   help="steps sweep as multiples of --steps (default 1)")
    g.add_argument("--standalone-seed", type=int, default=None, help="seed of the standalone runs (default: "
                   "the supernet run's; fix it to check several supernet seeds against the same runs)")
    g.add_argument("--noise-archs", type=int, default=None, help="archs trained again with seed+1: the "
                   "standalone seed noise, and from it the tau a perfect ranker would reach (default 4, or --archs "
                   "when fewer; "
                   "its interval narrows with more: 2.4x from low to high noise at 12, 6.6x at 4)")
    g.add_argument("--distilled-archs", type=int, default=0, help="archs also trained with the "
                   "supernet's largest as teacher (distilled-standalone control; default 0)")
    g.add_argument("--bleu", action="store_true", help="also test BLEU (translation, beam 4)")
    g = p.add_argument_group("the supernet's scores")
    g.add_argument("--finetune-steps", type=int, default=None, metavar="K", help="train each arch K steps of its "
                   "own from the supernet's weights (quantized at its bits, the same batches for every arch) before "
                   "scoring it: measured to rank closer to short standalone runs (1-3x the supernet's steps) and "
                   "further from long ones (9x on Multi30k) (default: none, the inherited weights as they are)")
    g.add_argument("--finetune-lr", type=float, default=None, metavar="LR", help="the finetune's constant learning "
                   f"rate (default {LR_SCALE:g} x the run's --lr)")
    g = p.add_argument_group("where it runs")
    g.add_argument("--gpu", action="store_true", help="train and measure on CUDA")
    g.add_argument("--gpu-share", type=float, default=0.125, help="each job's share of a GPU (default "
                   "0.125: eight small jobs per GPU)")
    g.add_argument("--parallel", type=int, default=None, help="jobs at once (default: 1 on the CPU, in "
                   "this process; with --gpu as many as Ray's GPU shares and CPUs allow)")
    g.add_argument("--address", default=None, help="an existing Ray cluster (auto or HOST:PORT)")
    g.add_argument("--shard", default=None, metavar="K/N", help="train only part K of N of the standalone runs "
                   "(N parts of about equal training cost, each holding one of the N costliest runs): a reference "
                   "too big for one machine or session is trained as N checks, each with its own --out; then check "
                   "a supernet against all N with --standalone-from (once per part)")
    g.add_argument("--max-tokens", type=int, default=4096, help="tokens per evaluation batch")
    g.add_argument("--eval-tokens", type=int, default=None, metavar="N", help="score every model's loss on about "
                   "the first N tokens of each split (whole batches of --max-tokens; default: all of it; --bleu "
                   "still translates the whole test split)")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from OUT/plan.json and "
                   "OUT/measured.json alone (e.g. copied from a machine without scipy); trains nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the report's summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import UserError
    from ..fidelity.plan import PLAN, FidelitySettings
    from ..fidelity.run import MEASURED, REPORT, default_out, fidelity, read_report, write_report
    from ..strict_json import finite_json

    if args.report_only:
        out = Path(args.out or default_out(Path(args.run)))
        try:  # built (nothing written yet) from the two files alone, the input here
            rep = finite_json(read_report(out))
            summary = json.dumps(rep["summary"], indent=1) if args.json else format_summary(rep)
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            # the files may be copied or edited by hand: a value a check never writes is one
            # line naming them, not a traceback
            raise UserError(f"{out}: {PLAN} or {MEASURED} holds what a fidelity check does not write "
                            f"({type(e).__name__}: {e}); copy both again from the check's --out, or rerun it") from None
        write_report(out, rep)
        print(summary)
        return 0
    per_bin = args.per_bin if args.per_bin is not None else min(4, args.archs)
    noise_archs = args.noise_archs if args.noise_archs is not None else min(4, args.archs)
    settings = FidelitySettings(archs=args.archs, per_bin=per_bin, seed=args.seed, stratify=args.stratify,
                                hw=args.hw, seq_len=args.seq_len, noise_archs=noise_archs,
                                distilled_archs=args.distilled_archs, dropouts=args.dropouts,
                                step_scales=args.step_scales, steps=args.steps, bleu=args.bleu, gpu=args.gpu,
                                standalone_seed=args.standalone_seed, eval_tokens=args.eval_tokens,
                                shard=_canonical_shard(args.shard), finetune_steps=args.finetune_steps,
                                finetune_lr=args.finetune_lr)
    parallel = args.parallel if args.parallel is not None else (None if args.gpu else 1)
    rep = fidelity(args.run, args.out, settings, jobs_dir=args.jobs, parallel=parallel, gpu_share=args.gpu_share,
                   max_tokens=args.max_tokens, progress=not args.no_progress, address=args.address,
                   standalone_from=args.standalone_from)
    if args.json:  # with what the summary lines say besides: a part (--shard), models left out
        print(json.dumps({"headline": rep["headline"], "goals": rep["goals"], "summary": rep["summary"],
                          "jobs": rep.get("jobs"), "diverged": rep.get("diverged")}, indent=1))
        return 0
    print(format_summary(rep))
    print(f"report: {REPORT} and fidelity.png in the --out folder")
    return 0


def _canonical_shard(text: str | None) -> str | None:
    """``--shard`` as the plan records it ("K/N"); left as given when it is not one, for
    the settings' check to name."""
    from ..fidelity.plan import parse_shard
    parsed = None if text is None else parse_shard(text)
    return text if parsed is None else f"{parsed[0]}/{parsed[1]}"


def _axis_line(axes: list[dict]) -> str:
    """The arch axis the supernet weighs most unlike training alone, if any clearly."""
    from ..fidelity.axes import clear_disagreements
    clear = clear_disagreements(axes)
    n = f"{len(axes)} arch ax{'is' if len(axes) == 1 else 'es'}"
    if not clear:
        return f"no arch axis apart from standalone ({n}, 95% each)"
    a = clear[0]
    lo, hi = a["difference_ci"]
    return (f"most apart from standalone: {a['axis']} (tau with loss: inherited {a['inherited']:+.2f}, standalone "
            f"{a['standalone']:+.2f}, difference {a['difference']:+.2f} [{lo:+.2f}, {hi:+.2f}]; "
            f"{len(clear)} of {n} apart at 95% each, not adjusted for {len(axes)} looks)")


def format_summary(rep: dict) -> str:
    """A few lines: inherited and best-proxy tau, within-bin tau, gap, seed noise and the ceiling it
    sets, the arch axis the supernet weighs most unlike standalone, longer budgets."""
    def f(v):
        return "-" if v is None else f"{v:.3f}"

    def ci(c):
        return "" if not c or c[0] is None else f" [{c[0]:.2f}, {c[1]:.2f}]"
    lines = []
    settings = rep.get("settings") or {}
    if settings.get("finetune_steps"):
        lr = settings.get("finetune_lr")
        rate = f"{LR_SCALE:g} x the run's lr" if lr is None else f"lr {lr:g}"
        lines.append(f"inherited: each arch scored after {settings['finetune_steps']} steps of its own training from "
                     f"the supernet's weights ({rate})")
    for m, s in rep["summary"].items():
        inh, best = s["inherited"], s.get("best_proxy")
        line = (f"{m}: n={inh['n']} tau {f(inh['kendall_tau'])}{ci(inh['kendall_ci'])}, spearman "
                f"{f(inh['spearman'])}, within-bin tau {f(inh.get('within_bin_tau'))}"
                f"{ci(inh.get('within_bin_ci'))} ({_pairs(inh.get('within_bin_pairs', 0))}); mean |gap| "
                f"{f(s['gap']['mean_abs'])}")
        if best:
            p = s["proxies"][best]
            line += f"; best proxy {best}: tau {f(p['kendall_tau'])}{ci(p['kendall_ci'])}, within-bin " \
                    f"{f(p.get('within_bin_tau'))}"
        if "seed_noise" in s:
            sn = s["seed_noise"]
            line += f"; seed noise: tau {f(sn['kendall_tau'])}, mean |diff| {f(sn['gap']['mean_abs'])}"
            sm = sn.get("seed_mean")
            if sm and sm["n"] == inh["n"]:  # every arch has two seeds: the two-seed reference
                i = sm["inherited"]
                line += (f"; against the mean of both seeds: tau {f(i['kendall_tau'])}{ci(i['kendall_ci'])}, "
                         f"within-bin {f(i.get('within_bin_tau'))}{ci(i.get('within_bin_ci'))}")
        c = s.get("reference_ceiling")
        if c and c.get("kendall_tau") is not None:
            line += (f"; a perfect ranker against this one-seed reference: tau {f(c['kendall_tau'])}"
                     f"{ci(c['kendall_range'])}, within-bin {f(c.get('within_bin_tau'))}")
        if s.get("axes"):
            line += "; " + _axis_line(s["axes"])
        for steps, b in s.get("reference_budgets", {}).items():
            line += (f"; standalone at {steps} steps vs the run's: tau {f(b['reference']['kendall_tau'])}"
                     f"{ci(b['reference']['kendall_ci'])}, inherited vs it: tau {f(b['inherited']['kendall_tau'])}")
            d = b.get("inherited_minus_reference") or {}
            if d.get("kendall_diff") is not None:
                line += f" ({d['kendall_diff']:+.3f}{ci(d.get('kendall_diff_ci'))} over the run's-steps runs)"
        lines.append(line)
    gone = rep.get("diverged") or []
    if gone:
        lines.append(f"left out, no finite loss (diverged): {len(gone)} model{'s' if len(gone) > 1 else ''} "
                     f"({'; '.join(gone[:3])}{'; ...' if len(gone) > 3 else ''}); see the report's per_arch")
    jobs = rep.get("jobs") or {}
    src = jobs.get("from")
    if src:
        src = [src] if isinstance(src, str) else src
        lines.append(f"standalone scores: from the earlier check{'s' if len(src) > 1 else ''} {', '.join(src)} "
                     "(not trained here)")
    if jobs.get("shard") and jobs.get("measured", 0) < jobs.get("planned", 0):
        lines.append(f"part {jobs['shard']} of the standalone runs: {jobs.get('measured')} of {jobs.get('planned')} "
                     "scored, so the figures above are partial; check a supernet against every part with "
                     "--standalone-from (once each)")
    return "\n".join(lines)


def _pairs(n: int) -> str:
    return f"{n} pair" if n == 1 else f"{n} pairs"
