"""``cosearch translate OUT [--input FILE] [--beam N]``: one translation per input line."""
from __future__ import annotations

import sys


def register(sub):
    p = sub.add_parser("translate", help="translate lines with an exported model (beam search)")
    p.add_argument("model", help="an export folder (cosearch export --out)")
    p.add_argument("--input", metavar="FILE", help="source sentences, one per line (default: stdin)")
    p.add_argument("--beam", type=int, default=4, help="beam width; 1 = greedy (default 4)")
    p.add_argument("--len-penalty", type=float, default=1.0, help="length penalty exponent (default 1)")
    p.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                   help="run the PyTorch model or the export's ONNX graphs with onnxruntime (default torch)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data.readers import read_lines
    from ..deploy.generate import translate_lines

    if args.input:
        lines = read_lines(args.input)
    else:  # only \n separates lines, as in read_lines
        lines = sys.stdin.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
    for line in translate_lines(args.model, lines, beam=args.beam, len_penalty=args.len_penalty,
                                progress=sys.stderr.isatty() and not args.no_progress, engine=args.engine):
        print(line)
    return 0
