"""``cosearch generate OUT [--prompt TEXT] [--max-new-tokens N] [--temperature T] [--seed S]``."""
from __future__ import annotations

import sys


def register(sub):
    p = sub.add_parser("generate", help="continue a prompt with an exported language model")
    p.add_argument("model", help="an export folder (cosearch export --out)")
    p.add_argument("--prompt", help="text to continue (default: stdin when piped, else empty)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest tokens (default 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                   help="run the PyTorch model or the export's ONNX graphs with onnxruntime (default torch)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..deploy.generate import generate_text

    prompt = args.prompt
    if prompt is None:
        prompt = "" if sys.stdin.isatty() else sys.stdin.read()
    text = generate_text(args.model, prompt, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_k=args.top_k, seed=args.seed,
                         engine=args.engine)
    print(prompt + text)
    return 0
