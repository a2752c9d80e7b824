"""Deterministic, resumable batch iterators for translation and language modelling.

Every batch is a pure function of ``(seed, epoch, position)``, so ``state()`` is a tiny
dict and a run resumed with ``load_state`` sees exactly the batches an uninterrupted
run would. ``num_shards``/``shard_index`` give each data-parallel worker its own equal
share of every epoch (equal, so no worker waits for a batch that never comes).

Iteration: with ``repeat=True`` (the default when shuffling, i.e. training) ``next()``
never stops and rolls over epochs; with ``repeat=False`` a ``for`` loop runs to the end
of the current epoch and the next loop starts the following epoch.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import UserError
from .tokenizer import BOS_ID, EOS_ID, PAD_ID


class _ResumableBatches:
    """Epoch/position bookkeeping shared by both iterators; subclasses plan epochs."""

    kind = ""

    def __init__(self, seed: int, shuffle: bool, repeat: bool | None,
                 num_shards: int, shard_index: int):
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index {shard_index} not in [0, {num_shards})")
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.repeat = self.shuffle if repeat is None else bool(repeat)
        self.num_shards, self.shard_index = int(num_shards), int(shard_index)
        self.epoch, self.position = 0, 0
        self._plan_epoch: int | None = None
        self._plan: list = []

    # -- subclass hooks
    def _global_plan(self, epoch: int) -> list:
        """Every batch of ``epoch`` (all shards), each in a form ``_make`` accepts."""
        raise NotImplementedError

    def _make(self, item) -> dict[str, Any]:
        raise NotImplementedError

    def _fingerprint(self) -> dict:
        """Settings a resumed run must share with the one that saved the state."""
        raise NotImplementedError

    # -- planning
    def _shard(self, plan: list) -> list:
        per_shard = len(plan) // self.num_shards
        return plan[self.shard_index::self.num_shards][:per_shard]

    def epoch_plan(self, epoch: int) -> list:
        """This shard's batches of ``epoch`` (cached for the current epoch)."""
        if self._plan_epoch != epoch:
            self._plan, self._plan_epoch = self._shard(self._global_plan(epoch)), epoch
        return self._plan

    def __len__(self) -> int:
        """Batches per epoch for this shard."""
        return len(self.epoch_plan(self.epoch))

    # -- iteration
    def __iter__(self):
        return self

    def __next__(self) -> dict[str, Any]:
        plan = self.epoch_plan(self.epoch)
        if not plan:
            raise UserError("the data is too small for a single batch on each worker; "
                            "use more data, fewer workers or smaller batches")
        if self.position >= len(plan):
            self.epoch, self.position = self.epoch + 1, 0
            if not self.repeat:
                raise StopIteration
            plan = self.epoch_plan(self.epoch)
        item = plan[self.position]
        self.position += 1
        return self._make(item)

    # -- resuming
    def state(self) -> dict:
        """A JSON-able dict: where the iterator is, plus settings checked on resume."""
        return {"kind": self.kind, "epoch": self.epoch, "position": self.position,
                **self._fingerprint()}

    def load_state(self, state: dict) -> None:
        """Continue from ``state``; the data and settings must be those that made it."""
        mine = {"kind": self.kind, **self._fingerprint()}
        diff = [k for k in mine if state.get(k) != mine[k]]
        if diff:
            k = diff[0]
            raise UserError(f"cannot resume the data iterator: saved {k}={state.get(k)!r} but "
                            f"this run has {k}={mine[k]!r}; resume with the same data and settings")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def _pad(rows: Sequence[Sequence[int]], width: int) -> torch.Tensor:
    out = np.full((len(rows), width), PAD_ID, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


class TranslationBatches(_ResumableBatches):
    """Token-count batches of sentence pairs.

    ``pairs_ids`` holds ``(src_ids, tgt_ids)`` without bos/eos. A batch is
    ``dict(src=(B,S), tgt_in=(B,T), tgt_out=(B,T), ntokens, src_ntokens, index)``:
    ``src`` = source + eos, ``tgt_in`` = bos + target, ``tgt_out`` = target + eos,
    right-padded with ``pad_id`` 0 (LongTensors); ``ntokens`` counts non-pad ``tgt_out``
    tokens, ``index`` (LongTensor (B,)) the pairs' positions in ``pairs_ids``.
    ``B * max(S, T) <= max_tokens`` for every batch, except that a single pair longer
    than ``max_tokens`` forms a batch of its own.

    Shuffled (training): pairs are sorted by length with a random tie-break, cut into
    batches, and the batch order is shuffled, all from ``(seed, epoch)``. Not shuffled
    (evaluation): sorted by length, shortest first; use ``index`` to restore order.
    """

    kind = "translation"

    def __init__(self, pairs_ids: Sequence[tuple[Sequence[int], Sequence[int]]], max_tokens: int,
                 seed: int = 0, shuffle: bool = True, repeat: bool | None = None,
                 num_shards: int = 1, shard_index: int = 0):
        super().__init__(seed, shuffle, repeat, num_shards, shard_index)
        if max_tokens < 2:
            raise UserError(f"max_tokens={max_tokens} is too small; use e.g. 4096")
        self.pairs = list(pairs_ids)
        self.max_tokens = int(max_tokens)
        self.src_len = np.array([len(s) + 1 for s, _ in self.pairs], dtype=np.int64)
        self.tgt_len = np.array([len(t) + 1 for _, t in self.pairs], dtype=np.int64)
        self.size = np.maximum(self.src_len, self.tgt_len)

    def _fingerprint(self) -> dict:
        return {"seed": self.seed, "shuffle": self.shuffle, "max_tokens": self.max_tokens,
                "n": len(self.pairs), "tokens": int(self.src_len.sum() + self.tgt_len.sum()),
                "num_shards": self.num_shards, "shard_index": self.shard_index}

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        batches, start, widest = [], 0, 0
        for i, k in enumerate(order):
            w = max(widest, int(self.size[k]))
            if i > start and (i - start + 1) * w > self.max_tokens:
                batches.append(order[start:i])
                start, w = i, int(self.size[k])
            widest = w
        if len(order) > start:
            batches.append(order[start:])
        return batches

    def _global_plan(self, epoch: int) -> list[np.ndarray]:
        if not self.shuffle:
            return self._cut(np.argsort(self.size, kind="stable"))
        rng = np.random.default_rng([self.seed, epoch])
        order = np.lexsort((rng.permutation(len(self.pairs)), self.size))
        batches = self._cut(order)
        return [batches[j] for j in rng.permutation(len(batches))]

    def _make(self, idx: np.ndarray) -> dict[str, Any]:
        src = [list(self.pairs[k][0]) + [EOS_ID] for k in idx]
        tgt = [list(self.pairs[k][1]) for k in idx]
        width = int(self.tgt_len[idx].max())
        return {
            "src": _pad(src, int(self.src_len[idx].max())),
            "tgt_in": _pad([[BOS_ID] + t for t in tgt], width),
            "tgt_out": _pad([t + [EOS_ID] for t in tgt], width),
            "ntokens": int(self.tgt_len[idx].sum()),
            "src_ntokens": int(self.src_len[idx].sum()),
            "index": torch.as_tensor(np.asarray(idx, dtype=np.int64)),
        }


class LMBatches(_ResumableBatches):
    """Contiguous blocks of a token stream for next-token prediction.

    ``ids`` may be a memory-mapped array (the token cache): only the rows of a batch are
    read and widened to int64. A batch is ``dict(input=(B,T), target=(B,T), ntokens=B*T)`` (LongTensors) with
    ``target`` = ``input`` shifted by one token. Shuffled (training): blocks start at
    random offsets drawn from ``(seed, epoch, batch)``; an epoch is as many batches as
    cover the stream about once. Not shuffled (evaluation): consecutive non-overlapping
    blocks from the start, so every token after the first is predicted once (the tail
    shorter than a block is left out); the last batch may be smaller.
    """

    kind = "lm"

    def __init__(self, ids: Sequence[int] | np.ndarray, block: int, batch_size: int,
                 seed: int = 0, shuffle: bool = True, repeat: bool | None = None,
                 num_shards: int = 1, shard_index: int = 0):
        super().__init__(seed, shuffle, repeat, num_shards, shard_index)
        self.ids = ids if isinstance(ids, np.ndarray) else np.asarray(ids, dtype=np.int64)
        if self.ids.ndim != 1 or self.ids.dtype.kind not in "iu":
            raise ValueError(f"ids must be a 1-D integer array, not {self.ids.dtype} of shape {self.ids.shape}")
        self.block, self.batch_size = int(block), int(batch_size)
        if self.block < 1 or self.batch_size < 1:
            raise UserError(f"block={block} and batch_size={batch_size} must be positive")
        if len(self.ids) < self.block + 1:
            raise UserError(f"the text has {len(self.ids)} tokens, fewer than one block of "
                            f"{self.block}+1; use more text or a shorter block (max_len)")

    def _fingerprint(self) -> dict:
        return {"seed": self.seed, "shuffle": self.shuffle, "block": self.block,
                "batch_size": self.batch_size, "n": int(len(self.ids)),
                "num_shards": self.num_shards, "shard_index": self.shard_index}

    def _global_plan(self, epoch: int) -> list:
        n, t, b = len(self.ids), self.block, self.batch_size
        if self.shuffle:
            # Starts are drawn lazily in _make from (seed, epoch, g): plans stay tiny.
            return [(epoch, g) for g in range(max(1, (n - 1) // (t * b)))]
        starts = np.arange(0, n - t, t)
        return [starts[i:i + b] for i in range(0, len(starts), b)]

    def _make(self, item) -> dict[str, Any]:
        if self.shuffle:
            epoch, g = item
            rng = np.random.default_rng([self.seed, epoch, g])
            starts = rng.integers(0, len(self.ids) - self.block, size=self.batch_size)
        else:
            starts = item
        rows = self.ids[starts[:, None] + np.arange(self.block + 1)]
        x = torch.from_numpy(rows.astype(np.int64))
        return {"input": x[:, :-1].contiguous(), "target": x[:, 1:].contiguous(), "ntokens": int(x.shape[0] * self.block)}


class MergedBatch:
    """Consecutive evaluation batches as one: rows concatenated, right-padded to the widest;
    ``owner[i]`` is the position (in the list merged) of the batch row ``i`` came from."""

    __slots__ = ("batch", "owner")

    def __init__(self, batch: dict[str, Any], owner: torch.Tensor):
        self.batch, self.owner = batch, owner


def _rows(batch: dict[str, Any]) -> int:
    return next(v.shape[0] for v in batch.values() if torch.is_tensor(v) and v.dim() == 2)


#: the fixed cost of one forward pass, in token positions: what a merge may add as padding
#: and still pay (a forward is ~1,700 ATen ops whatever its size; the figure is a judgement,
#: to be checked by the GPU plan's host-cost job, not a measurement)
FORWARD_COST_POSITIONS = 4096


def merge_batches(batches: Sequence[dict[str, Any]], max_tokens: int, pad_id: int = PAD_ID,
                  forward_cost: int = FORWARD_COST_POSITIONS) -> list[MergedBatch]:
    """Runs of consecutive ``batches`` merged into one (rows x widest <= ``max_tokens``; a
    batch past it stays alone): the same rows in fewer, larger forward passes. Merging
    sentences of other lengths adds padding, so the runs are chosen (exactly, by dynamic
    programming) to minimise padded positions + ``forward_cost`` per forward. Evaluation
    batches are sorted by length: neighbours have similar widths. Every added position is
    padding (pad_id; 0 in an ``attention_mask``), which the models mask or never attend to
    from a real position, so each row's outputs are unchanged."""
    n = len(batches)
    rows = [_rows(b) for b in batches]
    widths = [{k: v.shape[1] for k, v in b.items() if torch.is_tensor(v) and v.dim() == 2} for b in batches]
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)  # best[j]: cost of the first j batches
    for j in range(1, n + 1):
        r, wide = 0, {}
        for i in range(j - 1, -1, -1):  # the last run is batches i .. j-1
            r += rows[i]
            wide = {k: max(w, wide.get(k, 0)) for k, w in widths[i].items()}
            if i < j - 1 and r * max(wide.values()) > max_tokens:
                break
            cost = best[i] + forward_cost + r * sum(wide.values())
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j:
        groups.append(list(range(cut[j], j)))
        j = cut[j]
    groups.reverse()
    out = []
    for g in groups:
        parts = [batches[i] for i in g]
        device = next(v.device for v in parts[0].values() if torch.is_tensor(v))
        owner = torch.cat([torch.full((rows[i],), i, dtype=torch.long, device=device) for i in g])
        if len(g) == 1:  # nothing to merge: the batch itself, not a copy
            out.append(MergedBatch(parts[0], owner))
            continue
        merged: dict[str, Any] = {}
        for k, v in parts[0].items():
            if torch.is_tensor(v) and v.dim() == 2:  # each key to its own widest (source, target ...)
                fill, wide = 0 if k == "attention_mask" else pad_id, max(p[k].shape[1] for p in parts)
                merged[k] = torch.cat([torch.nn.functional.pad(p[k], (0, wide - p[k].shape[1]), value=fill)
                                       for p in parts])
            elif torch.is_tensor(v):
                merged[k] = torch.cat([p[k] for p in parts])
            elif isinstance(v, int):
                merged[k] = sum(p[k] for p in parts)
            else:
                merged[k] = v
        out.append(MergedBatch(merged, owner))
    return out
