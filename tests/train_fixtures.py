"""Tiny spaces and corpora for the training, evaluation and Ray tests (fast on 2 CPU cores)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

SRC_WORDS = "red blue green cat dog bird house tree car sun moon star".split()
TGT_WORDS = "rot blau gruen katze hund vogel haus baum auto sonne mond stern".split()


def lm_space(**mos) -> dict:
    return dict(name="tiny_test_lm", family="decoder_only", vocab_size=128, max_positions=32, dropout=0.1,
                decoder=dict(embed_dim=[16, 32], layers=[1, 2], ffn_dim=[32, 64], heads=[2, 4], head_dim=8),
                quantization=dict(weight_bits=[2, 4, 8, 16], act_bits=[8, 16]),
                mos=mos or dict(mode="layer", experts=2, router_hidden=8))


def mt_space(dropout: float = 0.0) -> dict:
    side = dict(embed_dim=[32, 48], layers=[1, 2], ffn_dim=[32, 64], heads=[2, 4], head_dim=8)
    return dict(name="tiny_test_mt", family="encoder_decoder", vocab_size=64, max_positions=32, dropout=dropout,
                encoder=side, decoder=dict(side, cross_layers=[1]),
                quantization=dict(weight_bits=[4, 8, 16], act_bits=[8, 16]),
                mos=dict(mode="layer", experts=2, router_hidden=8))


def write_lm_text(path: Path, lines: int = 300, seed: int = 0) -> Path:
    """Word salad over a small vocabulary: learnable unigram statistics."""
    rng = random.Random(seed)
    words = SRC_WORDS + "the a of and on in".split()
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(10)) for _ in range(lines)) + "\n")
    return path


def write_word_translation(folder: Path, n_train: int = 1500, n_eval: int = 30, seed: int = 0) -> Path:
    """A parallel corpus where each English word maps to one German word (in order)."""
    rng = random.Random(seed)
    table = dict(zip(SRC_WORDS, TGT_WORDS))
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_eval), ("test", n_eval)):
        sents = [[rng.choice(SRC_WORDS) for _ in range(rng.randint(2, 6))] for _ in range(n)]
        (folder / f"{split}.en").write_text("".join(" ".join(s) + "\n" for s in sents))
        (folder / f"{split}.de").write_text("".join(" ".join(table[w] for w in s) + "\n" for s in sents))
    return folder


@pytest.fixture
def one_thread():
    """One intra-op thread: the tests run two per 2-core machine (pytest -n 2)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
