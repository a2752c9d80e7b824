"""Evaluate any sub-network of a trained run with inherited weights.

``evaluate(run_dir, arch, split)`` rebuilds everything from the run folder (space,
tokenizer, data, newest checkpoint), extracts the arch as a plain model (exactly the
supernet's function, see ``Supernet.extract``) and returns the token-level loss and
perplexity; for translation also BLEU (sacrebleu on detokenised text) of beam-search
translations decoded with a KV cache; for a language model also bits per byte of the raw
text (the loss in bits over the UTF-8 bytes the predicted tokens stand for), which compares
models across tokenizers and vocabulary sizes.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoint import latest_checkpoint, load_checkpoint
from ..data import TaskData
from ..data.tokenizer import Tokenizer
from ..errors import UserError
from ..inputs import MAX_BEAM, check_number, path_arg, read_json, resolved
from ..model.modules import Transformer
from .rundir import TOKENIZER, read_config, space_of
from ..space import Arch, SearchSpace
from ..model.supernet import Supernet
from .train import averaged_state, check_tokenizer, load_task_data, model_inputs, run_arch, to_device


# --------------------------------------------------------------------------- loading
@dataclass
class LoadedRun:
    """A run folder read back: its config, space, tokenizer and supernet (eval mode)."""

    run_dir: Path
    config: dict
    space: SearchSpace
    tokenizer: Tokenizer
    net: Supernet
    step: int
    checkpoint: str = ""  # the checkpoint file the weights came from
    arch: Arch | None = None  # a standalone run's arch (None: a supernet run)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu",
             checkpoint: str | Path | None = None, raw_weights: bool = False) -> LoadedRun:
    """The supernet of the newest checkpoint of ``run_dir`` (or of ``checkpoint``), with
    its config and tokenizer: the weight average where the run keeps one, unless
    ``raw_weights`` (then the trained weights)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    space = space_of(config)
    tok_path = run_dir / TOKENIZER
    if not tok_path.is_file():
        raise UserError(f"{run_dir} has no {TOKENIZER}; the run folder is incomplete, train again")
    tok = Tokenizer.load(tok_path)
    ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if ckpt is None:
        raise UserError(f"{run_dir} has no checkpoint yet; train longer (checkpoints come every "
                        "--ckpt-every steps and at the end)")
    state = load_checkpoint(ckpt, map_location=device)
    arch = run_arch(config)
    net = Supernet(space, pad_id=tok.pad_id, arch=arch).to(device)
    try:
        net.load_state_dict(state["model"] if raw_weights else averaged_state(state))
    except RuntimeError as e:
        raise UserError(f"{ckpt} does not fit the space in {run_dir}/config.json "
                        f"({str(e).splitlines()[0]})") from None
    return LoadedRun(run_dir, config, space, tok, net.eval(), int(state["step"]), str(ckpt), arch)


def resolve_arch(space: SearchSpace, spec: str | Arch) -> Arch:
    """``largest``, ``smallest``, an ``Arch``, or a JSON file holding an arch (or a dict
    with an ``arch`` key, as search results store it)."""
    if isinstance(spec, Arch):
        return space.validate_arch(spec)
    if spec == "largest":
        return space.largest()
    if spec == "smallest":
        return space.smallest()
    path = path_arg(spec, "--arch")
    if not os.path.lexists(path):
        raise UserError(f"--arch {spec!r}: give largest, smallest or an existing arch JSON file")
    try:
        d = read_json(path, "--arch file")
    except UserError as e:
        raise UserError(f"{e}: not an arch JSON file; write one with Arch.to_json() or take it from a "
                        "search result") from None
    try:
        if isinstance(d, dict) and isinstance(d.get("arch"), dict):
            d = d["arch"]
        arch = Arch.from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: not an arch JSON file ({type(e).__name__}: {e}); write one with "
                        "Arch.to_json() or take it from a search result") from None
    return space.validate_arch(arch, source=str(path))


# --------------------------------------------------------------------------- loss
def _token_losses(model: torch.nn.Module, batch: dict, pad_id: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy without smoothing of every target position, shaped like the targets;
    the targets) of one batch on its device (0 at padding)."""
    inputs, target = model_inputs(batch)
    logits = model(*inputs)[..., :vocab].float()
    ce = F.cross_entropy(logits.reshape(-1, vocab), target.reshape(-1), ignore_index=pad_id, reduction="none")
    return ce.view(target.shape), target


@torch.no_grad()
def batch_losses(model: torch.nn.Module, batches, pad_id: int, vocab: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per batch, the summed token cross-entropy (no smoothing) and the target tokens, left
    on the device: no host sync between batches, so a GPU is fed without waiting."""
    sums, counts = [], []
    for batch in batches:
        ce, target = _token_losses(model, to_device(batch, device), pad_id, vocab)
        # summed as loss_sums sums (per token, then the batch): the same float32 numbers as eval_loss
        sums.append(ce.sum())
        counts.append((target != pad_id).sum())
    return torch.stack(sums), torch.stack(counts)


@torch.no_grad()
def merged_batch_losses(model: torch.nn.Module, merged, n: int, pad_id: int, vocab: int,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_losses`` of ``n`` batches evaluated as ``merge_batches`` groups: each row's
    summed cross-entropy and target count go back to the batch it came from (``owner``), so
    the per-batch numbers (and the standard error built on them) are those of the batches,
    summed in another order. The row sums are float32 and gathered in float64, where their
    sum is exact, so the order of CUDA's atomic adds cannot change a bit between runs."""
    sums = torch.zeros(n, dtype=torch.float64, device=device)
    counts = torch.zeros(n, dtype=torch.long, device=device)
    for m in merged:
        owner = m.owner.to(device)
        ce, target = _token_losses(model, to_device(m.batch, device), pad_id, vocab)
        sums.index_add_(0, owner, ce.sum(1).double())
        counts.index_add_(0, owner, (target != pad_id).sum(1))
    return sums, counts


@dataclass
class LossSums:
    """Summed cross-entropy (nats) over the target tokens of some batches, their count, and
    the UTF-8 bytes of text they stand for (0 when not counted)."""

    nats: float
    tokens: int
    bytes: int = 0
    #: per sequence (batch row, in batch order) when asked: nats and bytes (for bootstraps)
    row_nats: list[float] | None = None
    row_bytes: list[int] | None = None


@torch.no_grad()
def loss_sums(model: torch.nn.Module, batches, pad_id: int, vocab: int, device: torch.device,
              token_bytes: torch.Tensor | None = None, rows: bool = False) -> LossSums:
    """Cross-entropy without smoothing summed over the non-pad targets of ``batches``;
    ``token_bytes`` (bytes per id, ``Tokenizer.token_bytes``) also sums their bytes, and
    ``rows`` keeps the sums of every sequence too."""
    total, ntok, nbytes = 0.0, 0, 0
    row_nats: list[float] | None = [] if rows else None
    row_bytes: list[int] | None = [] if rows and token_bytes is not None else None
    table = None if token_bytes is None else torch.as_tensor(token_bytes, device=device)
    for batch in batches:
        ce, target = _token_losses(model, to_device(batch, device), pad_id, vocab)
        total += float(ce.sum())
        keep = target != pad_id
        ntok += int(keep.sum())
        if row_nats is not None:
            row_nats += ce.sum(1).tolist()
        if table is not None:
            b = table[target] * keep
            nbytes += int(b.sum())
            if row_bytes is not None:
                row_bytes += b.sum(1).tolist()
    if ntok == 0:
        raise UserError("the evaluation split has no tokens")
    return LossSums(total, ntok, nbytes, row_nats, row_bytes)


def eval_loss(model: torch.nn.Module, batches, pad_id: int, vocab: int,
              device: torch.device) -> tuple[float, int]:
    """(mean token cross-entropy without smoothing, target tokens) over ``batches``."""
    s = loss_sums(model, batches, pad_id, vocab, device)
    return s.nats / s.tokens, s.tokens


def bits_per_byte(nats: float, nbytes: int) -> float:
    """Summed cross-entropy in nats as bits per byte of the text it predicted."""
    if nbytes <= 0:
        raise UserError("the evaluated tokens stand for no bytes of text; bits per byte is undefined")
    return nats / (math.log(2) * nbytes)


# --------------------------------------------------------------------------- decoding
def _strip(seq: list[int], eos: int) -> list[int]:
    return seq[: seq.index(eos)] if eos in seq else seq


@torch.no_grad()
def greedy_decode(model: Transformer, src: torch.Tensor, bos: int, eos: int, max_len: int,
                  vocab: int) -> list[list[int]]:
    """Greedy translations of ``src`` (B, S) with the KV cache; eos is not included."""
    memory = model.encode(src)
    B = src.shape[0]
    tokens = torch.full((B, 1), bos, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    out, cache = [], {}
    for t in range(max_len):
        logits = model.decode_step(tokens, memory, cache, t)[:, :vocab]
        nxt = logits.argmax(-1).masked_fill(done, eos)
        out.append(nxt)
        done |= nxt == eos
        if bool(done.all()):
            break
        tokens = nxt[:, None]
    seqs = torch.stack(out, 1).tolist()
    return [_strip(s, eos) for s in seqs]


@torch.no_grad()
def beam_search(model: Transformer, src: torch.Tensor, beam: int, bos: int, eos: int, max_len: int,
                vocab: int, len_penalty: float = 1.0) -> list[list[int]]:
    """Beam-search translations of ``src`` (B, S) with the KV cache (reordered per step).

    Finished beams carry on with eos at no cost, so they compete with open ones on their
    final score; at the end the best beam by ``score / length ** len_penalty`` wins.
    With ``beam=1`` this is exactly greedy decoding.
    """
    B, K, dev = src.shape[0], beam, src.device
    memory = model.encode(src)
    flat = torch.arange(B, device=dev).repeat_interleave(K)
    memory = memory.index_select(flat)
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    tokens = torch.full((B * K, 1), bos, dtype=torch.long, device=dev)
    done = torch.zeros(B * K, dtype=torch.bool, device=dev)
    length = torch.zeros(B * K, device=dev)
    hist = torch.zeros(B * K, 0, dtype=torch.long, device=dev)
    cache: dict = {}
    for t in range(max_len):
        logp = F.log_softmax(model.decode_step(tokens, memory, cache, t)[:, :vocab].float(), dim=-1)
        # a finished beam may only repeat eos, at no cost
        logp[done] = float("-inf")
        logp[done, eos] = 0.0
        cand = (scores.reshape(B * K, 1) + logp).reshape(B, K * vocab)
        scores, idx = cand.topk(K, dim=-1)
        src_beam = (idx // vocab + torch.arange(B, device=dev)[:, None] * K).reshape(-1)
        tok = (idx % vocab).reshape(-1)
        done, length, hist = done[src_beam], length[src_beam], hist[src_beam]
        length = length + (~done).float()
        hist = torch.cat([hist, tok[:, None]], 1)
        done = done | (tok == eos)
        if bool(done.all()):
            break
        cache = Transformer.reorder_cache(cache, src_beam)
        tokens = tok[:, None]
    final = scores.reshape(-1) / length.clamp_min(1) ** len_penalty
    best = final.reshape(B, K).argmax(-1) + torch.arange(B, device=dev) * K
    return [_strip(s, eos) for s in hist[best].tolist()]


def decode_max_len(src: torch.Tensor, pad_id: int, limit: int) -> int:
    """How many tokens to generate for a batch: 1.5 x its longest source + 10, capped."""
    return int(min(limit, int((src != pad_id).sum(1).max()) * 1.5 + 10))


@torch.no_grad()
def translate(model: Transformer, td: TaskData, split: str, device: torch.device, beam: int = 4,
              max_len: int | None = None, max_tokens: int = 4096, len_penalty: float = 1.0,
              limit: int = 256, progress: bool = False) -> list[str]:
    """Detokenised translations of every sentence of ``split``, in the split's order
    (``progress``: a bar over sentences with rate and ETA)."""
    tok = td.tokenizer
    n = len(td.split(split))
    hyps: list[str] = [""] * n
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, desc=f"translate {split}", unit="sent", leave=False)
    for batch in td.batches(split, max_tokens=max_tokens, shuffle=False, repeat=False):
        src = batch["src"].to(device)
        ml = max_len or decode_max_len(src, tok.pad_id, limit)
        if beam == 1:
            out = greedy_decode(model, src, tok.bos_id, tok.eos_id, ml, tok.vocab_size)
        else:
            out = beam_search(model, src, beam, tok.bos_id, tok.eos_id, ml, tok.vocab_size, len_penalty)
        for i, ids in zip(batch["index"].tolist(), out):
            hyps[i] = tok.decode(ids)
        if bar is not None:
            bar.update(len(out))
    if bar is not None:
        bar.close()
    return hyps


def bleu(hyps: list[str], refs: list[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, exp smoothing) of detokenised text."""
    import sacrebleu
    return float(sacrebleu.corpus_bleu(hyps, [refs]).score)


# --------------------------------------------------------------------------- entry point
def evaluate(run_dir: str | Path, arch: str | Arch | None = None, split: str = "valid", *,
             beam: int = 4, max_len: int | None = None, max_tokens: int = 4096,
             len_penalty: float = 1.0, bleu_score: bool = True, max_sentences: int | None = None,
             gpu: bool = False, hypotheses_out: str | Path | None = None,
             checkpoint: str | Path | None = None, progress: bool = False, raw_weights: bool = False) -> dict:
    """Loss and perplexity of ``arch`` (``largest``, ``smallest``, an Arch or a JSON file;
    None: the largest, or a standalone run's own arch) on ``split`` of the run's data;
    translation adds ``bleu`` (beam search, KV cache), lm ``bits_per_byte`` and ``bytes``.

    ``max_sentences`` evaluates only the first sentences (quick checks);
    ``hypotheses_out`` writes the translations, one per line; ``checkpoint`` evaluates
    another checkpoint of the run than the newest.
    """
    check_number("--beam", beam, low=1, high=MAX_BEAM, integer=True)
    check_number("--max-tokens", max_tokens, low=1, integer=True)
    check_number("--len-penalty", len_penalty)
    for flag, value in (("--max-len", max_len), ("--max-sentences", max_sentences)):
        if value is not None:
            check_number(flag, value, low=1, integer=True)
    if hypotheses_out is not None:
        hypotheses_out = check_hypotheses_file(hypotheses_out, run_dir)
    if gpu and not torch.cuda.is_available():
        raise UserError("--gpu was given but torch sees no CUDA device; drop --gpu")
    device = torch.device("cuda" if gpu else "cpu")
    run = load_run(run_dir, device, checkpoint, raw_weights)
    if max_len is not None:
        check_number("--max-len", max_len, low=1, high=run.space.spec.max_positions, integer=True)
    a = run.arch if arch is None and run.arch is not None else resolve_arch(run.space, arch or "largest")
    td = load_task_data(run.config, run.run_dir)
    check_tokenizer(run.run_dir, td.tokenizer, run.space)
    if max_sentences is not None:
        td = _head(td, split, max_sentences)
    model = run.net.extract(a).to(device).eval()
    tok, t = td.tokenizer, run.config["train"]
    if td.task == "translation":
        batches = td.batches(split, max_tokens=max_tokens, shuffle=False, repeat=False)
    else:
        block = t["max_len"]
        batches = td.batches(split, batch_size=max(1, max_tokens // block), block=block, shuffle=False, repeat=False)
    lm = td.task == "lm"
    sums = loss_sums(model, batches, tok.pad_id, tok.vocab_size, device,
                     token_bytes=torch.from_numpy(tok.token_bytes()) if lm else None)
    loss = sums.nats / sums.tokens
    result = {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": sums.tokens, "split": split,
              "step": run.step, "arch": a.to_dict()}
    if lm:
        result.update(bits_per_byte=bits_per_byte(sums.nats, sums.bytes), bytes=sums.bytes)
    if td.task == "translation" and bleu_score:
        hyps = translate(model, td, split, device, beam=beam, max_len=max_len, max_tokens=max_tokens,
                         len_penalty=len_penalty, limit=run.space.spec.max_positions, progress=progress)
        refs = [tgt for _, tgt in td.text[_canon_split(split)]]
        result["bleu"] = bleu(hyps, refs)
        if hypotheses_out is not None:
            from ..atomic import atomic_write_text
            atomic_write_text(hypotheses_out, "".join(h + "\n" for h in hyps))
    return result


def check_hypotheses_file(path: str | Path, run_dir: str | Path) -> Path:
    """The --hypotheses file, checked before any translating: a file (not a folder)
    outside the run folder, in a folder that can be written."""
    from ..atomic import check_writable_dir
    path = path_arg(path, "--hypotheses")
    real = resolved(path, "--hypotheses")
    if real.is_dir():
        raise UserError(f"--hypotheses {path} is a folder; give a file name to write the translations to")
    if resolved(run_dir, "--run") in real.parents:
        raise UserError(f"--hypotheses {path} is inside the run folder {run_dir}; write it elsewhere "
                        "(the run folder holds only what training wrote)")
    check_writable_dir(real.parent)
    return path


def _canon_split(split: str) -> str:
    return {"val": "valid", "dev": "valid"}.get(split, split)


def _head(td: TaskData, split: str, n: int, start: int = 0) -> TaskData:
    """``td`` with only the sentences ``start .. start+n-1`` (translation) of ``split``."""
    from dataclasses import replace
    if td.task != "translation":
        return td
    s = _canon_split(split)
    data = td.split(s)[start:start + n]
    text = dict(td.text)
    if s in text:
        text[s] = text[s][start:start + n]
    return replace(td, **{s: data}, text=text)
