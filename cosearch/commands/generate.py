"""``cosearch generate OUT [--prompt TEXT ...] [--input FILE] [--max-new-tokens N] [--temperature T]``."""
from __future__ import annotations

import json
import sys


def register(sub):
    p = sub.add_parser("generate", help="continue prompts with an exported language model",
                       description="One prompt: prints the prompt and its continuation. Several prompts "
                       "(--prompt repeated, or --input FILE with one prompt a line): generates them in batches "
                       "(each exactly as alone) and prints one JSON line {\"prompt\", \"text\"} per prompt.")
    p.add_argument("model", help="an export folder (cosearch export --out)")
    p.add_argument("--prompt", action="append", help="text to continue; repeat for several prompts "
                   "(default: stdin when piped, else empty)")
    p.add_argument("--input", metavar="FILE", help="prompts, one per line")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature; 0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest tokens (default 50)")
    p.add_argument("--seed", type=int, default=0, help="random seed, the same for every prompt (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts generated together (default 8)")
    p.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                   help="run the PyTorch model or the export's ONNX graphs with onnxruntime (default torch)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..deploy.generate import generate_text
    from ..errors import UserError

    if args.input and args.prompt:
        raise UserError("give prompts with --prompt or --input FILE, not both")
    if args.input:
        from ..data.readers import read_lines
        prompts = read_lines(args.input)
    elif args.prompt:
        prompts = args.prompt
    else:
        prompts = ["" if sys.stdin.isatty() else sys.stdin.read()]
    kw = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
              seed=args.seed, engine=args.engine, batch_size=args.batch_size)
    if len(prompts) == 1 and not args.input:
        print(prompts[0] + generate_text(args.model, prompts[0], **kw))
        return 0
    for prompt, text in zip(prompts, generate_text(args.model, prompts, **kw)):
        print(json.dumps({"prompt": prompt, "text": text}, ensure_ascii=False))
    return 0
