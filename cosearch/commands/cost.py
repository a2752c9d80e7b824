"""``cosearch cost --space S --hw H [--arch largest|smallest|FILE.json] [--scenario ...] [--json]``
and ``cosearch cost --gemm MxKxN [--bits W,A] --hw H [--json]`` (one GEMM)."""
from __future__ import annotations

import json

from ..errors import UserError
from ..hardware import cost, cost_gemm, load_hardware
from ..hardware.report import format_gemm, format_report, load_arch
from ..space import ACT_BITS, WEIGHT_BITS, SearchSpace, canonical_bits


def register(sub):
    p = sub.add_parser("cost", help="latency, energy, size and area/resources of a sub-network (or one GEMM) "
                                    "on an accelerator")
    p.add_argument("--space", help="search space: preset name (spaces/NAME.yaml) or YAML path")
    p.add_argument("--hw", required=True, help="accelerator: preset name (hw_models/NAME.yaml) or YAML path")
    p.add_argument("--arch", default="largest", help="largest, smallest or an Arch JSON file (default largest)")
    p.add_argument("--gemm", help="cost one GEMM Y[M,N] = X[M,K] W[K,N] instead of a sub-network: MxKxN")
    p.add_argument("--bits", default="8,8", help="with --gemm: weight,activation bits (default 8,8)")
    p.add_argument("--scenario", choices=["prefill", "decode"], default="prefill",
                   help="prefill: whole sequence; decode: token-by-token with a KV cache (HAT-style)")
    p.add_argument("--seq-len", type=int, default=30, help="source/prompt tokens (default 30)")
    p.add_argument("--decode-tokens", type=int, default=30, help="tokens generated in decode (default 30)")
    p.add_argument("--batch", type=int, default=1, help="sequences at once (default 1)")
    p.add_argument("--power-max", type=float, help="power bound in W: designs drawing more are infeasible")
    p.add_argument("--json", action="store_true", help="print the totals as JSON")
    p.set_defaults(func=run)


def _gemm_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--gemm {text!r}: give three positive integers MxKxN (e.g. 1x512x2048)")
    return tuple(int(p) for p in parts)


def _bits(text: str) -> tuple[float, int]:
    """``W,A`` as the space's bit-widths (``UserError`` for anything else)."""
    fix = (f"--bits {text!r}: give weight,activation bits, weights one of {', '.join(map(str, WEIGHT_BITS))} "
           f"and activations one of {', '.join(map(str, ACT_BITS))} (e.g. 4,8; ternary 1.58,8)")
    try:
        w, a = (x.strip() for x in text.split(","))
        wb, ab = canonical_bits(float(w)), float(a)
    except ValueError:
        raise UserError(fix) from None
    if ab not in ACT_BITS:
        raise UserError(fix)
    return wb, int(ab)


def run(args):
    hw = load_hardware(args.hw)
    if args.power_max is not None:
        if args.power_max <= 0:
            raise UserError(f"--power-max {args.power_max}: give a positive power in W")
        hw = hw.with_params(power_max_w=args.power_max)
    if args.gemm:
        M, K, N = _gemm_shape(args.gemm)
        wb, ab = _bits(args.bits)
        out = cost_gemm(M, K, N, hw, wb, ab)
        print(json.dumps(out, indent=2) if args.json else format_gemm(out))
        return 0
    if not args.space:
        raise UserError("cosearch cost: give --space (a sub-network) or --gemm MxKxN (one GEMM)")
    space = SearchSpace.load(args.space)
    arch = load_arch(space, args.arch)
    rep = cost(space, arch, hw, args.scenario, seq_len=args.seq_len, decode_tokens=args.decode_tokens,
               batch=args.batch)
    print(json.dumps(rep.totals(), indent=2) if args.json else format_report(rep))
    return 0
