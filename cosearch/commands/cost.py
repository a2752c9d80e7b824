"""``cosearch cost --space S --hw H [--arch largest|smallest|FILE.json] [--scenario ...] [--json]``
and ``cosearch cost --gemm MxKxN [--bits W,A] --hw H [--json]`` (one GEMM)."""
from __future__ import annotations

import math
import re

from .. import strict_json
from ..errors import UserError
from ..hardware import cost, cost_gemm, load_hardware
from ..hardware.arch_cost import MAX_GEMM_DIM, MAX_GEMM_MACS
from ..hardware.report import format_gemm, format_report, load_arch
from ..hardware.workload import MAX_BATCH, MAX_TOKENS
from ..space import ACT_BITS, WEIGHT_BITS, SearchSpace, canonical_bits

#: Plain ASCII numbers only: Python's int()/float() also take fullwidth digits, "nan", "inf".
_INT = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?")


def _count(flag: str, hi: int):
    """argparse type: a whole number from 1 to ``hi`` in ASCII digits."""
    def parse(text: str) -> int:
        t = text.strip()
        if not _INT.fullmatch(t) or not 1 <= int(t) <= hi:
            raise UserError(f"{flag} {text!r}: give a whole number from 1 to {hi} in digits 0-9")
        return int(t)
    return parse


def _power(text: str) -> float:
    """argparse type: a positive, finite power in W."""
    t = text.strip()
    v = float(t) if _FLOAT.fullmatch(t) else math.nan
    if not (math.isfinite(v) and 0 < v <= 1e9):
        raise UserError(f"--power-max {text!r}: give a positive power in W (a plain number, at most 1e9)")
    return v


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
    p.add_argument("--seq-len", default="30", help="source/prompt tokens (default 30)")
    p.add_argument("--decode-tokens", default="30", help="tokens generated in decode (default 30)")
    p.add_argument("--batch", default="1", help="sequences at once (default 1)")
    p.add_argument("--power-max", help="power bound in W: designs drawing more are infeasible")
    p.add_argument("--json", action="store_true", help="print the totals as JSON")
    p.set_defaults(func=run)


def _gemm_shape(text: str) -> tuple[int, int, int]:
    parts = [p.strip() for p in text.lower().split("x")]
    if len(parts) != 3 or not all(_INT.fullmatch(p) and 1 <= int(p) <= MAX_GEMM_DIM for p in parts):
        raise UserError(f"--gemm {text!r}: give three whole numbers MxKxN from 1 to {MAX_GEMM_DIM} in digits 0-9 "
                        "(e.g. 1x512x2048)")
    M, K, N = (int(p) for p in parts)
    if M * K * N > MAX_GEMM_MACS:
        raise UserError(f"--gemm {text!r}: {M * K * N:,} MACs is past the {MAX_GEMM_MACS:,} (2^40) the engine counts "
                        "exactly; split it into smaller GEMMs")
    return M, K, N


def _bits(text: str) -> tuple[float, int]:
    """``W,A`` as the space's bit-widths (``UserError`` for anything else)."""
    fix = (f"--bits {text!r}: give weight,activation bits, weights one of {', '.join(map(str, WEIGHT_BITS))} "
           f"and activations one of {', '.join(map(str, ACT_BITS))} (e.g. 4,8; ternary 1.58,8)")
    try:
        w, a = (x.strip() for x in text.split(","))
        if not (_FLOAT.fullmatch(w) and _FLOAT.fullmatch(a)):
            raise ValueError
        wb, ab = canonical_bits(float(w)), float(a)
    except ValueError:
        raise UserError(fix) from None
    if ab not in ACT_BITS:
        raise UserError(fix)
    return wb, int(ab)


def run(args):
    # every flag is checked before any file is read or any work is done
    power = _power(args.power_max) if args.power_max is not None else None
    shape = _gemm_shape(args.gemm) if args.gemm else None
    bits = _bits(args.bits) if args.gemm else None
    seq_len = _count("--seq-len", MAX_TOKENS)(args.seq_len)
    decode_tokens = _count("--decode-tokens", MAX_TOKENS)(args.decode_tokens)
    batch = _count("--batch", MAX_BATCH)(args.batch)
    if not args.gemm and not args.space:
        raise UserError("cosearch cost: give --space (a sub-network) or --gemm MxKxN (one GEMM)")
    hw = load_hardware(args.hw)
    if power is not None:
        hw = hw.with_params(power_max_w=power)
    if shape:
        out = cost_gemm(*shape, hw, *bits)
        print(strict_json.dumps(out, indent=2) if args.json else format_gemm(out))
        return 0
    space = SearchSpace.load(args.space)
    arch = load_arch(space, args.arch)
    rep = cost(space, arch, hw, args.scenario, seq_len=seq_len, decode_tokens=decode_tokens, batch=batch)
    print(strict_json.dumps(rep.totals(), indent=2) if args.json else format_report(rep))
    return 0
