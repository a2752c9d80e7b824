"""Run an exported model on text: translate lines (beam search) or continue a prompt.

Both decode with the model's KV cache, on PyTorch (``engine="torch"``) or on the export's
ONNX graphs under onnxruntime (``engine="onnx"``). Beam search and greedy decoding are the
training helper's (``cosearch.training.evaluate``), so evaluation and deployment translate
identically on either engine; sampling for language models lives here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..export.folder import Exported, open_exported
from ..inputs import MAX_BEAM, check_number

#: Sentences decoded together (source tokens per batch) when translating.
MAX_TOKENS = 2048
ENGINES = ("torch", "onnx")


def _as_exported(model) -> Exported:
    """An ``Exported`` from itself, an export folder, or a model ``load_exported`` returned."""
    if isinstance(model, Exported):
        return model
    if isinstance(model, (str, Path)):
        return open_exported(model)
    exported = getattr(model, "exported", None)
    if isinstance(exported, Exported):
        return exported
    raise UserError(f"expected an export folder, cosearch.load_exported(folder) or open_exported(folder), "
                    f"not a {type(model).__name__}; a model of your own has no tokenizer to decode with")


def network(exp: Exported, engine: str = "torch"):
    """The model to decode with: the PyTorch ``Transformer`` or the onnxruntime graphs."""
    if engine == "torch":
        return exp.model.eval()
    if engine == "onnx":
        return exp.onnx_model()
    raise UserError(f"engine {engine!r} is unknown; use one of {', '.join(ENGINES)}")


def _need(exp: Exported, family: str, command: str, other: str) -> None:
    if exp.space.family != family:
        raise UserError(f"{exp.path} holds a {exp.space.family} model; use `cosearch {other}` with it, "
                        f"not `cosearch {command}`")


@torch.no_grad()
def translate_lines(model, lines: Iterable[str], beam: int = 4,
                    len_penalty: float = 1.0, max_tokens: int = MAX_TOKENS,
                    progress: bool = False, engine: str = "torch") -> Iterator[str]:
    """Translations of ``lines``, in order, one per line (empty lines give empty lines).
    ``model``: an export folder, an ``Exported`` or what ``load_exported`` returns."""
    from ..data.batches import TranslationBatches
    from ..training.evaluate import beam_search, decode_max_len, greedy_decode

    check_number("--beam", beam, low=1, high=MAX_BEAM, integer=True)
    check_number("--len-penalty", len_penalty)
    exp = _as_exported(model)
    _need(exp, "encoder_decoder", "translate", "generate")
    tok = exp.tokenizer()
    limit = exp.space.spec.max_positions
    lines = [line.rstrip("\n") for line in lines]
    ids = [tok.encode(line) if line.strip() else [] for line in lines]
    for i, x in enumerate(ids):
        if len(x) + 1 > limit:  # the source reads its eos too
            raise UserError(f"line {i + 1} has {len(x)} tokens but this model reads at most max_positions "
                            f"{limit} (eos included); split the line")
    net = network(exp, engine)
    todo = [i for i, x in enumerate(ids) if x]
    out = [""] * len(lines)
    batches = TranslationBatches([(ids[i], []) for i in todo], max_tokens, shuffle=False, repeat=False)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, total=len(batches), desc="translate", unit="batch", leave=False)
    for batch in batches:
        src = batch["src"]
        ml = decode_max_len(src, tok.pad_id, limit)
        if beam == 1:
            hyp = greedy_decode(net, src, tok.bos_id, tok.eos_id, ml, tok.vocab_size)
        else:
            hyp = beam_search(net, src, beam, tok.bos_id, tok.eos_id, ml, tok.vocab_size, len_penalty)
        for k, h in zip(batch["index"].tolist(), hyp):
            out[todo[k]] = tok.decode(h)
    return iter(out)


def next_token(logits: torch.Tensor, temperature: float, top_k: int | None,
               generator: torch.Generator) -> torch.Tensor:
    """(B,) next tokens from logits (B, V): argmax at temperature 0, else sampled."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)[:, 0]


def next_tokens(logits: torch.Tensor, temperature: float, top_k: int | None,
                generators: list[torch.Generator]) -> list[int]:
    """One next token per row of ``logits`` (B, V), row i sampled with ``generators[i]``
    (so a row draws what it would draw alone)."""
    if temperature == 0:
        return logits.argmax(-1).tolist()
    return [int(next_token(logits[i:i + 1], temperature, top_k, g)[0]) for i, g in enumerate(generators)]


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), both (B, longest): sequences right-aligned after padding."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
    return ids, mask


def _map_cache(cache: dict, fn) -> dict:
    """The cache (nested dicts of (B, H, S, D) tensors, torch or ONNX) with ``fn`` applied."""
    return {k: (_map_cache(v, fn) if isinstance(v, dict) else fn(v)) for k, v in cache.items()}


def _splice_row(cache: dict, fresh: dict, row: int) -> dict:
    """``cache`` with row ``row`` replaced by the one-row cache ``fresh``, left-padded to
    the batch's length (the padding is masked)."""
    out = {}
    for k, v in cache.items():
        if isinstance(v, dict):
            out[k] = _splice_row(v, fresh[k], row)
            continue
        f = fresh[k][0]
        v = v.clone()
        v[row] = 0
        v[row, :, v.shape[2] - f.shape[1]:] = f
        out[k] = v
    return out


def _mask_or_none(mask: torch.Tensor) -> torch.Tensor | None:
    """No mask when nothing is padded: the model's fast causal path."""
    return None if bool(mask.all()) else mask


@torch.no_grad()
def sample_batch(model, prompts: list[list[int]], max_new_tokens: int, vocab: int, window: int,
                 temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
                 stop: int | None = None, pad_id: int = 0) -> list[list[int]]:
    """Continue every prompt (non-empty ids) by up to ``max_new_tokens``, all in one batch
    with one KV cache: prompts are left-padded, the padding masked and each row's
    positions counted from its first token, so every row gets the tokens it would get
    alone (``sample_tokens``); each row samples with its own generator seeded ``seed``.

    Positions past ``window`` (the model's max_positions) are never used: when a row
    reaches it, the row's last half window is re-read into a fresh cache of its own and
    spliced into the batch's (left-padded); finished rows leave the batch.
    """
    rows = len(prompts)
    new: list[list[int]] = [[] for _ in range(rows)]
    if rows == 0 or max_new_tokens <= 0:
        return new
    gens = [torch.Generator().manual_seed(int(seed)) for _ in range(rows)]
    seqs = [list(p)[-window:] for p in prompts]
    live = list(range(rows))  # rows still generating, in batch order
    ids, mask = left_pad(seqs, pad_id)
    cache: dict = {}
    logits = model.decode_step(ids, None, cache, 0, attention_mask=_mask_or_none(mask))[:, :vocab]
    nxt = [len(s) for s in seqs]  # each row's next position
    for step in range(max_new_tokens):
        keep = []
        for j, t in enumerate(next_tokens(logits, temperature, top_k, [gens[r] for r in live])):
            r = live[j]
            if stop is not None and t == stop:
                continue
            new[r].append(t)
            seqs[r].append(t)
            keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(live):  # finished rows leave the batch
            idx = torch.tensor(keep)
            cache, mask, live = _map_cache(cache, lambda t: t.index_select(0, idx)), mask[idx], [live[j] for j in keep]
        restart = [j for j, r in enumerate(live) if nxt[r] >= window]
        feed = torch.tensor([[seqs[r][-1]] for r in live])
        pos = torch.tensor([[0 if j in restart else nxt[r]] for j, r in enumerate(live)])
        col = torch.tensor([[0 if j in restart else 1] for j in range(len(live))])
        mask = torch.cat([mask, col], 1)
        logits = model.decode_step(feed, None, cache, mask.shape[1] - 1, attention_mask=_mask_or_none(mask),
                                   position_ids=pos)[:, :vocab]
        for j, r in enumerate(live):
            if j in restart:  # slide: restart this row from its recent context
                ctx = seqs[r][-(window // 2):]
                fresh: dict = {}
                logits[j] = model.decode_step(torch.tensor([ctx]), None, fresh, 0)[0, :vocab]
                cache = _splice_row(cache, fresh, j)
                mask[j] = 0
                mask[j, mask.shape[1] - len(ctx):] = 1
                nxt[r] = len(ctx)
            else:
                nxt[r] += 1
        first = int(mask.any(0).long().argmax())
        if first:  # columns no row reads any more
            cache, mask = _map_cache(cache, lambda t: t[:, :, first:].contiguous()), mask[:, first:]
    return new


def sample_tokens(model, prompt: list[int], max_new_tokens: int, vocab: int, window: int,
                  temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
                  stop: int | None = None) -> list[int]:
    """Continue ``prompt`` (non-empty ids) by up to ``max_new_tokens`` with the KV cache
    (``sample_batch`` of one prompt)."""
    return sample_batch(model, [prompt], max_new_tokens, vocab, window, temperature, top_k, seed, stop)[0]


def generate_text(model, prompt: str | Sequence[str] = "", max_new_tokens: int = 200,
                  temperature: float = 0.8, top_k: int | None = 50, seed: int = 0,
                  engine: str = "torch", batch_size: int = 8) -> str | list[str]:
    """The prompt's continuation (text only, without the prompt) from a decoder-only export;
    for a list of prompts, the list of their continuations, generated ``batch_size`` prompts
    at a time (each the same as alone: ``sample_batch``). ``model``: an export folder, an
    ``Exported`` or what ``load_exported`` returns."""
    check_number("--max-new-tokens", max_new_tokens, low=0, integer=True)
    check_number("--temperature", temperature, low=0)  # 0 = greedy; nan and inf are refused
    if top_k is not None:
        check_number("--top-k", top_k, low=1, integer=True)
    check_number("--batch-size", batch_size, low=1, integer=True)
    exp = _as_exported(model)
    _need(exp, "decoder_only", "generate", "translate")
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    tok, window = exp.tokenizer(), exp.space.spec.max_positions
    ids = []
    for i, text in enumerate(prompts):
        x = tok.encode(text) if text else []
        if not x:  # the LM was trained on running text: start as after a line end
            x = tok.encode("\n") if tok.keeps_whitespace else [tok.bos_id]
        if len(x) > window:
            which = "the prompt" if single else f"prompt {i + 1}"
            raise UserError(f"{which} has {len(x)} tokens but this model reads at most max_positions "
                            f"{window}; shorten it")
        ids.append(x)
    net = network(exp, engine)
    out = []
    for i in range(0, len(ids), batch_size):
        for new in sample_batch(net, ids[i:i + batch_size], max_new_tokens, tok.vocab_size, window,
                                temperature, top_k, seed, stop=tok.eos_id, pad_id=tok.pad_id):
            out.append(tok.decode(new))
    return out[0] if single else out
