"""``cosearch finetune OUT --data D [--steps N] [--out OUT2]``: keep training an export alone."""
from __future__ import annotations


def register(sub):
    p = sub.add_parser("finetune", help="fine-tune an exported model on its own (quantization-aware, "
                       "stored scales fixed) and write a new export")
    p.add_argument("model", help="an export folder (cosearch export --out)")
    p.add_argument("--data", required=True, help="translation: folder with train.SRC/train.TGT; lm: text file or folder")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    p.add_argument("--out", help="the new export folder (default: MODEL-ft)")
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (default 2e-4)")
    p.add_argument("--max-tokens", type=int, default=2048, help="tokens per batch (default 2048)")
    p.add_argument("--src", help="source language suffix (default: the export's, else en)")
    p.add_argument("--tgt", help="target language suffix (default: the export's, else de)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--ckpt-every", type=int, default=50, help="checkpoint every N steps; rerunning a killed "
                   "command resumes from the last one (default 50)")
    p.add_argument("--force", action="store_true", help="replace --out when it is an export cosearch made")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..deploy.finetune import finetune

    out = finetune(args.model, args.data, steps=args.steps, out=args.out, lr=args.lr,
                   max_tokens=args.max_tokens, seed=args.seed, src=args.src, tgt=args.tgt,
                   force=args.force, progress=not args.no_progress, ckpt_every=args.ckpt_every)
    from ..export.folder import read_config
    history = read_config(out)[0]["finetuned"][-1]
    print(f"fine-tuned export written to {out} (held out from training: {history['held_out']})")
    return 0
