"""Run an exported model on text: translate lines (beam search) or continue a prompt.

Both decode with the model's KV cache, on PyTorch (``engine="torch"``) or on the export's
ONNX graphs under onnxruntime (``engine="onnx"``). Beam search and greedy decoding are the
training helper's (``cosearch.training.evaluate``), so evaluation and deployment translate
identically on either engine; sampling for language models lives here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..export.folder import Exported, open_exported

#: Sentences decoded together (source tokens per batch) when translating.
MAX_TOKENS = 2048
ENGINES = ("torch", "onnx")


def _as_exported(model: Exported | str | Path) -> Exported:
    return model if isinstance(model, Exported) else open_exported(model)


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
def translate_lines(model: Exported | str | Path, lines: Iterable[str], beam: int = 4,
                    len_penalty: float = 1.0, max_tokens: int = MAX_TOKENS,
                    progress: bool = False, engine: str = "torch") -> Iterator[str]:
    """Translations of ``lines``, in order, one per line (empty lines give empty lines)."""
    from ..data.batches import TranslationBatches
    from ..training.evaluate import beam_search, decode_max_len, greedy_decode

    exp = _as_exported(model)
    _need(exp, "encoder_decoder", "translate", "generate")
    if beam < 1:
        raise UserError(f"--beam {beam} is invalid; use 1 (greedy) or more")
    tok, net = exp.tokenizer(), network(exp, engine)
    limit = exp.space.spec.max_positions
    lines = [line.rstrip("\n") for line in lines]
    ids = [tok.encode(line)[: limit - 1] if line.strip() else [] for line in lines]
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


@torch.no_grad()
def sample_tokens(model, prompt: list[int], max_new_tokens: int, vocab: int, window: int,
                  temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
                  stop: int | None = None) -> list[int]:
    """Continue ``prompt`` (non-empty ids) by up to ``max_new_tokens`` with the KV cache.

    Positions past ``window`` (the model's max_positions) are never used: when the cache
    is full, the last half window is re-read into a fresh cache and decoding goes on.
    """
    g = torch.Generator().manual_seed(int(seed))
    seq = list(prompt)[-window:]
    new: list[int] = []
    cache: dict = {}
    logits = model.decode_step(torch.tensor([seq]), None, cache, 0)[:, :vocab]
    pos = len(seq)
    for _ in range(max_new_tokens):
        t = int(next_token(logits, temperature, top_k, g)[0])
        if stop is not None and t == stop:
            break
        new.append(t)
        seq.append(t)
        if pos >= window:  # slide: restart the cache from the recent context
            ctx = seq[-(window // 2):]
            cache = {}
            logits = model.decode_step(torch.tensor([ctx]), None, cache, 0)[:, :vocab]
            pos = len(ctx)
        else:
            logits = model.decode_step(torch.tensor([[t]]), None, cache, pos)[:, :vocab]
            pos += 1
    return new


def generate_text(model: Exported | str | Path, prompt: str = "", max_new_tokens: int = 200,
                  temperature: float = 0.8, top_k: int | None = 50, seed: int = 0,
                  engine: str = "torch") -> str:
    """The prompt's continuation (text only, without the prompt) from a decoder-only export."""
    exp = _as_exported(model)
    _need(exp, "decoder_only", "generate", "translate")
    if max_new_tokens < 0:
        raise UserError(f"--max-new-tokens {max_new_tokens} is invalid; use 0 or more")
    if temperature < 0:
        raise UserError(f"--temperature {temperature} is invalid; use 0 (greedy) or more")
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k {top_k} is invalid; use 1 or more")
    tok = exp.tokenizer()
    ids = tok.encode(prompt) if prompt else []
    if not ids:  # the LM was trained on running text: start as after a line end
        ids = tok.encode("\n") if tok.keeps_whitespace else [tok.bos_id]
    new = sample_tokens(network(exp, engine), ids, max_new_tokens, tok.vocab_size,
                        exp.space.spec.max_positions, temperature, top_k, seed, stop=tok.eos_id)
    return tok.decode(new)
