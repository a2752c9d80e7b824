"""``cosearch cost --space S --hw H [--arch largest|smallest|FILE.json] [--scenario ...] [--json]``."""
from __future__ import annotations

import json

from ..hardware import cost, load_hardware
from ..hardware.report import format_report, load_arch
from ..space import SearchSpace


def register(sub):
    p = sub.add_parser("cost", help="latency, energy, size and area/resources of a sub-network on an accelerator")
    p.add_argument("--space", required=True, help="search space: preset name (spaces/NAME.yaml) or YAML path")
    p.add_argument("--hw", required=True, help="accelerator: preset name (hw_models/NAME.yaml) or YAML path")
    p.add_argument("--arch", default="largest", help="largest, smallest or an Arch JSON file (default largest)")
    p.add_argument("--scenario", choices=["prefill", "decode"], default="prefill",
                   help="prefill: whole sequence; decode: token-by-token with a KV cache (HAT-style)")
    p.add_argument("--seq-len", type=int, default=30, help="source/prompt tokens (default 30)")
    p.add_argument("--decode-tokens", type=int, default=30, help="tokens generated in decode (default 30)")
    p.add_argument("--batch", type=int, default=1, help="sequences at once (default 1)")
    p.add_argument("--json", action="store_true", help="print the totals as JSON")
    p.set_defaults(func=run)


def run(args):
    space = SearchSpace.load(args.space)
    hw = load_hardware(args.hw)
    arch = load_arch(space, args.arch)
    rep = cost(space, arch, hw, args.scenario, seq_len=args.seq_len, decode_tokens=args.decode_tokens,
               batch=args.batch)
    print(json.dumps(rep.totals(), indent=2) if args.json else format_report(rep))
    return 0
