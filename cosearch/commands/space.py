"""``cosearch space show SPACE [--json]``."""
from __future__ import annotations

import json

from ..space import SearchSpace


def register(sub):
    p = sub.add_parser("space", help="inspect search spaces")
    s = p.add_subparsers(dest="space_cmd", metavar="ACTION", required=True)
    show = s.add_parser("show", help="print a space's choices, cardinality and parameter range")
    show.add_argument("space", help="preset name (spaces/NAME.yaml) or path to a YAML file")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=run_show)


def run_show(args):
    space = SearchSpace.load(args.space)
    info = space.summary()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    c = info["choices"]
    print(f"space {info['name']} ({info['family']}) from {info['source']}")
    print(f"  vocab {c['vocab_size']}, max positions {c['max_positions']}, dropout {c['dropout']}")
    for side in space.sides():
        sd = c[side]
        attn = f"qkv_dim {sd['qkv_dim']}" if sd.get("qkv_dim") else f"head_dim {sd['head_dim']}"
        print(f"  {side}: embed {sd['embed_dim']}, layers {sd['layers']}, ffn {sd['ffn_dim']}, "
              f"heads {sd['heads']} ({attn})" + (f", cross-attends last {sd['cross_layers']} encoder layers"
                                                  if sd.get("cross_layers") else ""))
    q, m = c["quantization"], c["mos"]
    print(f"  bits: weights {q['weight_bits']}, activations {q['act_bits']}, embeddings {q['embedding_bits']}")
    print(f"  MoS: {m['mode']}, {m['experts']} expert(s), router width {m['router_hidden']}, on {m['sublayers']}")
    print(f"  sub-networks: 10^{info['cardinality_log10']:.2f}")
    print(f"  parameters: {info['params_min']:,} (smallest) .. {info['params_max']:,} (largest)")
    print(f"  weight size: {info['weight_mb_min']:.2f} MB .. {info['weight_mb_max']:.2f} MB")
    return 0
