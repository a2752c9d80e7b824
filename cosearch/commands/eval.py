"""``cosearch eval --run RUN --arch largest|smallest|FILE.json [--split valid|test] [--json]``."""
from __future__ import annotations

import json


def register(sub):
    p = sub.add_parser("eval", help="loss, perplexity (and BLEU, or bits per byte) of a sub-network of a trained run",
                       description="Evaluate any arch of a trained run with inherited weights; "
                       "everything is rebuilt from the run folder.")
    p.add_argument("--run", required=True, help="run folder written by `cosearch train`")
    p.add_argument("--arch", default=None, help="largest, smallest or an arch JSON file (default: the "
                   "largest; for a standalone run its own arch)")
    p.add_argument("--split", default="valid", choices=["valid", "test", "train"])
    p.add_argument("--beam", type=int, default=4, help="beam size for BLEU (1 = greedy)")
    p.add_argument("--max-len", type=int, default=None,
                   help="tokens to generate (default 1.5 x source length + 10)")
    p.add_argument("--len-penalty", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per evaluation batch")
    p.add_argument("--max-sentences", type=int, default=None, help="evaluate only the first N sentences")
    p.add_argument("--no-bleu", action="store_true", help="skip decoding (loss and perplexity only)")
    p.add_argument("--hypotheses", default=None, help="write the translations to this file")
    p.add_argument("--checkpoint", default=None, help="a checkpoint file of the run (default: its newest)")
    p.add_argument("--raw-weights", action="store_true", help="the trained weights, not the weight "
                   "average (for runs trained with --ema-start)")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while translating")
    p.add_argument("--json", action="store_true", help="print a JSON object with loss, ppl[, bleu | bits_per_byte]")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.evaluate import evaluate

    r = evaluate(args.run, args.arch, args.split, beam=args.beam, max_len=args.max_len,
                 max_tokens=args.max_tokens, len_penalty=args.len_penalty, bleu_score=not args.no_bleu,
                 max_sentences=args.max_sentences, gpu=args.gpu, hypotheses_out=args.hypotheses,
                 checkpoint=args.checkpoint, progress=not args.no_progress, raw_weights=args.raw_weights)
    if args.json:
        print(json.dumps(r))
        return 0
    line = f"{args.split}: loss {r['loss']:.4f}, ppl {r['ppl']:.2f}"
    if "bleu" in r:
        line += f", BLEU {r['bleu']:.2f}"
    if "bits_per_byte" in r:
        line += f", {r['bits_per_byte']:.4f} bits/byte"
    print(f"{line} ({r['tokens']} tokens, step {r['step']})")
    return 0
