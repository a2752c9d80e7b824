"""``cosearch export DIR (--trial N | --pick best-quality | --arch FILE.json) --out OUT``."""
from __future__ import annotations

import sys
from pathlib import Path


def register(sub):
    p = sub.add_parser("export", help="export a sub-network as a self-contained deployable folder",
                       description="Write OUT/config.json, model.safetensors (packed integer codes), "
                       "the tokenizer, schedule.csv and, with --onnx, the low-bit ONNX graphs (dynamic batch and "
                       "length, KV cache; encoder + decoder-with-past for translation models).")
    p.add_argument("dir", help="a search folder (cosearch search --out) or a training run folder "
                   "(cosearch train --out; then --arch is needed)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="the search trial number N")
    which.add_argument("--pick", choices=["best-quality"], help="the best feasible trial")
    which.add_argument("--arch", metavar="FILE.json", help="an arch as JSON (a file, or the JSON itself)")
    p.add_argument("--latency-max", type=float, metavar="MS", help="with --pick: only trials this fast")
    p.add_argument("--out", required=True, help="the export folder to create")
    p.add_argument("--onnx", action="store_true", help="also write the low-bit ONNX graphs and measure their "
                   "parity with the PyTorch model under onnxruntime")
    p.add_argument("--integer", action="store_true", help="with --onnx: run every linear whose activations and "
                   "weights are quantized as an integer kernel (MatMulInteger on int8 codes, exact int32 sums) "
                   "instead of float arithmetic on rounded values")
    p.add_argument("--qonnx", action="store_true", help="also write model_qonnx.onnx: the sub-network with its "
                   "weight and activation quantizers as QONNX Quant/BipolarQuant nodes (what FINN and hls4ml "
                   "read), checked with qonnx's cleanup and executor; needs pip install 'cosearch[fpga]'")
    p.add_argument("--run", help="with a search folder: the training run it measured (default: the one "
                   "search.json names)")
    p.add_argument("--checkpoint", help="a checkpoint file of the run (default: its newest)")
    p.add_argument("--hardware", help="accelerator preset or YAML for the predicted cost and schedule.csv "
                   "(default: the search's)")
    p.add_argument("--scenario", choices=["prefill", "decode"], help="cost scenario (default: the search's, else prefill)")
    p.add_argument("--force", action="store_true", help="replace OUT when it is an export cosearch made "
                   "(never a run, a search or another folder)")
    p.set_defaults(func=run)


def onnx_summary(check: dict, mode: str = "float") -> str:
    """One line on the ONNX graphs: size and the parity measured (or why not)."""
    kind = " (integer kernels)" if mode == "integer" else ""
    line = f"ONNX{kind}: {', '.join(check['files'])} ({check['bytes'] / 1e6:.3f} MB)"
    if not check.get("runtime"):
        return f"{line}; {check.get('note', 'not run')}"
    line += (f"; {check['runtime']} vs PyTorch on {check['batches']} batches of {check['batch']}: "
             f"argmax agreement {check['argmax_agreement']:.4f}, max logit diff {check['max_abs_diff']:.2g} "
             f"(99th pct {check['p99_abs_diff']:.2g}), KV-cache steps max diff {check['kv_cache_max_abs_diff']:.2g}")
    if check.get("positions_over_atol"):
        line += f"; {check['positions_over_atol']} of {check['positions']} positions moved by activation rounding flips"
    if not check.get("ok"):
        line += (f"; WARNING: {check['positions_over_tolerance']} positions beyond the tolerance "
                 f"({check['tolerance']}) or argmax differs")
    return line


def run(args) -> int:
    from ..errors import UserError
    from ..export import export
    from ..export.pick import TRIALS

    d = Path(args.dir)
    if args.latency_max is not None and args.pick is None:
        raise UserError("--latency-max goes with --pick best-quality")
    is_search = (d / TRIALS).is_file() or (d / "search.json").is_file()
    if not is_search and args.arch is None:
        raise UserError(f"{d} is not a search folder (no {TRIALS}); with a training run folder give --arch FILE.json")
    kw = dict(search=d, run=args.run) if is_search else dict(run=d)
    if args.run and not is_search:
        raise UserError("--run goes with a search folder; here DIR is already the run")
    out = export(args.out, arch=args.arch, trial=args.trial, pick=args.pick, latency_max=args.latency_max,
                 checkpoint=args.checkpoint, hardware=args.hardware, scenario=args.scenario,
                 onnx=args.onnx, onnx_integer=args.integer, qonnx=args.qonnx, force=args.force,
                 progress=sys.stderr.isatty(), **kw)
    from ..export import read_config
    cfg, _, _ = read_config(out)
    pred = cfg["predicted"]
    line = f"exported to {out}: {pred['params']:,} parameters, {pred['size_bytes'] / 1e6:.3f} MB predicted"
    if "latency_ms" in pred:
        line += f", {pred['latency_ms']:.3f} ms and {pred['energy_mj']:.4g} mJ on {cfg['hardware']['name']}"
    print(line)
    check = cfg.get("onnx_check")
    if check:
        print(onnx_summary(check, cfg.get("onnx_mode") or "float"))
    if cfg.get("qonnx_check"):
        print(qonnx_summary(cfg["qonnx_check"]))
    return 0


def qonnx_summary(check: dict) -> str:
    """One line on the QONNX graph: its quantizers and the executor's agreement with PyTorch."""
    ops = ", ".join(f"{n} {op}" for op, n in sorted(check["quantizers"].items()))
    return (f"QONNX: {check['file']} ({ops}); qonnx {check['qonnx']} cleanup and executor vs PyTorch on "
            f"{check['inputs']} inputs: max logit diff {check['max_abs_diff']:.2g}, argmax agreement "
            f"{check['argmax_agreement']:.4f}")
