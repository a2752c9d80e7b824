"""The search space: presets, analytic sizes, cardinality, and property tests of Arch values."""
from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cosearch.errors import UserError
from cosearch.presets import list_presets
from cosearch.space import Arch, LayerArch, SearchSpace

SPACES_DIR = Path(__file__).resolve().parent.parent / "spaces"
PRESETS = ["hat_wmt14", "multi30k", "tiny_lm"]
SPACES = {name: SearchSpace.load(name) for name in PRESETS}
RAW = {name: yaml.safe_load((SPACES_DIR / f"{name}.yaml").read_text()) for name in PRESETS}
PROPS = settings(max_examples=40, deadline=None)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
presets = st.sampled_from(PRESETS)


# --------------------------------------------------------------------------- presets
def test_every_preset_is_listed_and_loads():
    assert set(PRESETS) <= set(list_presets("spaces"))
    for name in list_presets("spaces"):
        space = SearchSpace.load(name)
        assert space.name == name
        assert space.cardinality() >= 1


def test_every_preset_trains_plain_weight_sharing_by_default():
    """#21: MoS never ranked sub-networks measurably better than plain sharing (3 tasks, 3
    seeds each; benchmarks/README.md section 3), so no preset turns it on."""
    for name in list_presets("spaces"):
        mos = SearchSpace.load(name).to_dict()["mos"]
        assert (mos["mode"], mos["experts"]) == ("none", 1), name


def test_load_by_path_equals_load_by_name():
    by_path = SearchSpace.load(SPACES_DIR / "tiny_lm.yaml")
    assert by_path.spec == SPACES["tiny_lm"].spec
    assert by_path.largest() == SPACES["tiny_lm"].largest()


def test_tiny_lm_largest_and_smallest_values():
    s = SPACES["tiny_lm"]
    assert s.largest() == Arch(decoder_embed_dim=128, decoder=(LayerArch(512, 4, 16, 16),) * 4)
    assert s.smallest() == Arch(decoder_embed_dim=64, decoder=(LayerArch(128, 2, 1.58, 8),))
    # By hand: embedding 1024*128; per layer q/k/v/out 4*(128*128+128), FFN
    # 128*512+512 + 512*128+128, two norms 2*2*128; one final norm 2*128.
    per_layer = 4 * (128 * 128 + 128) + (128 * 512 + 512) + (512 * 128 + 128) + 2 * 2 * 128
    assert s.size(s.largest()).params == 1024 * 128 + 4 * per_layer + 2 * 128 == 924_416
    assert s.size(s.largest()).params < 2_000_000  # trains on 2 CPU cores in minutes


def test_multi30k_largest_is_30_to_50_million_parameters():
    s = SPACES["multi30k"]
    big = s.largest()
    assert big.encoder_embed_dim == big.decoder_embed_dim == 512
    assert len(big.encoder) == len(big.decoder) == 6
    assert all(la.ffn_dim == 2048 and la.heads == 8 and la.weight_bits == 16 for la in big.encoder + big.decoder)
    assert all(la.cross_layers == 2 for la in big.decoder)
    assert 30e6 <= s.size(big).params <= 50e6
    small = s.smallest()
    assert (len(small.encoder), len(small.decoder), small.decoder[0].weight_bits) == (2, 1, 1.58)
    assert s.size(small).params < s.size(big).params


def test_hat_preset_matches_hats_wmt14_space():
    s = SPACES["hat_wmt14"]
    assert s.family == "encoder_decoder" and s.spec.mos.mode == "none"
    enc, dec = s.spec.encoder, s.spec.decoder
    for side in (enc, dec):
        assert side.embed_dim == [512, 640]
        assert side.ffn_dim == [1024, 2048, 3072]
        assert side.heads == [4, 8]
        assert side.qkv_dim == 512  # HAT fixes the q/k/v width; heads split it
    assert enc.layers == [6]
    assert dec.layers == [1, 2, 3, 4, 5, 6]
    assert dec.cross_layers == [1, 2, 3]
    assert s.spec.quantization.weight_bits == [16] and s.spec.quantization.act_bits == [16]
    assert s.attn_dim("encoder", 4) == s.attn_dim("encoder", 8) == 512
    assert s.head_dim("decoder", 4) == 128 and s.head_dim("decoder", 8) == 64
    big, small = s.largest(), s.smallest()
    assert (big.encoder_embed_dim, len(big.encoder), len(big.decoder)) == (640, 6, 6)
    assert {la.cross_layers for la in big.decoder} == {3}
    assert (small.decoder_embed_dim, len(small.encoder), len(small.decoder)) == (512, 6, 1)


# --------------------------------------------------------------------------- param counts
def hand_params(raw: dict, arch: Arch) -> int:
    """Parameter count from first principles, reading only the raw YAML dict."""
    V, encdec = raw["vocab_size"], raw["family"] == "encoder_decoder"
    Ee, Ed = arch.encoder_embed_dim, arch.decoder_embed_dim

    def attn_width(side, heads):
        d = raw[side]
        return d["qkv_dim"] if d.get("qkv_dim") else heads * d["head_dim"]

    def linear(i, o):
        return i * o + o  # weight + bias

    if not encdec:
        n = V * Ed  # output projection tied to the embedding
    elif raw.get("share_embeddings", True):
        n = V * max(Ee, Ed)  # one table as wide as the widest side
    else:
        n = V * Ee + V * Ed
    for side, E, layers in (("encoder", Ee, arch.encoder), ("decoder", Ed, arch.decoder)):
        if not layers:
            continue
        for la in layers:
            a = attn_width(side, la.heads)
            n += 3 * linear(E, a) + linear(a, E)  # q, k, v, out
            norms = 2
            if side == "decoder" and encdec:
                n += linear(E, a) + 2 * linear(Ee, a) + linear(a, E)  # cross q, k/v read the encoder
                norms = 3
            n += linear(E, la.ffn_dim) + linear(la.ffn_dim, E)
            n += norms * 2 * E  # layer norm weight and bias
        n += 2 * E  # final norm
    return n


@pytest.mark.parametrize("name", PRESETS)
def test_param_count_matches_hand_count_on_random_archs(name):
    s, raw = SPACES[name], RAW[name]
    for seed in range(25):
        arch = s.sample(seed)
        assert s.size(arch).params == s.param_count(arch) == hand_params(raw, arch), (name, seed)
    for arch in (s.largest(), s.smallest()):
        assert s.size(arch).params == hand_params(raw, arch)


def test_param_count_without_shared_embeddings():
    raw = dict(RAW["multi30k"], share_embeddings=False)
    s = SearchSpace.from_dict(raw)
    for seed in range(10):
        arch = s.sample(seed)
        assert s.size(arch).params == hand_params(raw, arch)
    assert [n for n, _, _ in s.embedding_shapes(s.largest())] == ["encoder_embed", "decoder_embed"]


def test_linears_cross_attention_reads_encoder_width():
    s = SPACES["multi30k"]
    arch = replace(s.largest(), encoder_embed_dim=256)
    by_role = {lin.role: lin for lin in s.linears(arch) if lin.side == "decoder" and lin.layer == 0}
    assert by_role["cross_k"].in_features == by_role["cross_v"].in_features == 256
    assert by_role["cross_q"].in_features == by_role["q"].in_features == 512
    assert by_role["cross_out"].out_features == 512


# --------------------------------------------------------------------------- weight bits
TINY_BITS = {
    "name": "bits", "family": "decoder_only", "vocab_size": 10, "dropout": 0.0,
    "decoder": {"embed_dim": [4], "layers": [1, 2, 3], "ffn_dim": [6], "heads": [2], "head_dim": 2},
    "quantization": {"weight_bits": [1.58, 4, 16], "act_bits": [8, 16], "embedding_bits": 16},
}


def test_weight_bits_hand_example_mixed_precision():
    s = SearchSpace.from_dict(TINY_BITS)
    arch = Arch(decoder_embed_dim=4, decoder=(LayerArch(6, 2, 1.58, 8), LayerArch(6, 2, 4, 16),
                                              LayerArch(6, 2, 16, 16)))
    # E=4, attention width 2*2=4, FFN 6. Per layer: weights q,k,v 3*4*4 + out 4*4 + fc1 4*6
    # + fc2 6*4 = 112; output channels (= biases = scales) 4+4+4 + 4 + 6 + 4 = 26.
    ternary = 112 * 1.6 + 26 * 32 + 26 * 32  # 5 trits per byte; float32 biases and scales
    four = 112 * 4 + 26 * 32 + 26 * 32
    fp16 = 112 * 16 + 26 * 32  # float layers have no scales
    norms = (3 * 2 + 1) * 2 * 4 * 32  # 2 norms per layer + final, weight+bias, float32
    embed = 10 * 4 * 16
    rep = s.size(arch)
    assert rep.weight_bits == pytest.approx(ternary + four + fp16 + norms + embed)
    assert rep.weight_bits == pytest.approx(1843.2 + 2112 + 2624 + 1792 + 640)
    assert rep.params == 10 * 4 + 3 * (112 + 26) + 7 * 8 == 510
    assert s.weight_size_bits(arch) == rep.weight_bits


def test_weight_bits_with_8_bit_embeddings_adds_per_row_scales():
    s16 = SearchSpace.from_dict(TINY_BITS)
    s8 = SearchSpace.from_dict({**TINY_BITS, "quantization": {**TINY_BITS["quantization"], "embedding_bits": 8}})
    arch = Arch(decoder_embed_dim=4, decoder=(LayerArch(6, 2, 4, 8),))
    # Embedding 10x4: 16 bits each -> 8 bits each plus one float32 scale per row.
    assert s16.size(arch).weight_bits - s8.size(arch).weight_bits == pytest.approx(10 * 4 * 16 - (10 * 4 * 8 + 10 * 32))
    assert s8.size(arch).params == s16.size(arch).params


def test_with_bits_sets_every_layer_and_shrinks_size():
    s = SPACES["multi30k"]
    big = s.largest()
    tern = s.with_bits(big, weight_bits=1.58, act_bits=8)
    assert all(la.weight_bits == 1.58 and la.act_bits == 8 for la in tern.encoder + tern.decoder)
    assert s.size(tern).params == s.size(big).params
    assert s.size(tern).weight_bits < s.size(big).weight_bits / 4
    assert s.with_bits(big) == big


# --------------------------------------------------------------------------- cardinality
TINY_ENCDEC = {
    "name": "tiny_encdec", "family": "encoder_decoder", "vocab_size": 16,
    "encoder": {"embed_dim": [4, 8], "layers": [2, 3], "ffn_dim": [8], "heads": [2], "head_dim": 4},
    "decoder": {"embed_dim": [4], "layers": [1, 2], "ffn_dim": [8, 16], "heads": [2], "head_dim": 4,
                "cross_layers": [1, 2]},
    "quantization": {"weight_bits": [4, 16], "act_bits": [16]},
}
TINY_DEC = {
    "name": "tiny_dec", "family": "decoder_only", "vocab_size": 16,
    "decoder": {"embed_dim": [4, 8], "layers": [1, 2, 3], "ffn_dim": [8, 16], "heads": [1, 2], "head_dim": 4},
    "quantization": {"weight_bits": [1, 1.58], "act_bits": [4, 16]},
}


def enumerate_archs(space: SearchSpace) -> set[Arch]:
    """Every gene combination, turned into an Arch here (not by the space's own code)."""
    genes = space.genes()
    keys = [k for k, _ in genes]
    out = set()
    for values in itertools.product(*(opts for _, opts in genes)):
        v = dict(zip(keys, values))
        sides = {}
        for side in space.sides():
            fields = [f for f in ("ffn_dim", "heads", "weight_bits", "act_bits", "cross_layers")
                      if (side, f, 0) in v]
            sides[side] = tuple(LayerArch(**{f: v[(side, f, i)] for f in fields})
                                for i in range(v[(side, "layers")]))
        out.add(Arch(decoder_embed_dim=v[("decoder", "embed_dim")], decoder=sides["decoder"],
                     encoder_embed_dim=v.get(("encoder", "embed_dim"), 0), encoder=sides.get("encoder", ())))
    return out


@pytest.mark.parametrize("raw, expected", [
    # encoder: 2 widths * (2^2 + 2^3) layer stacks (2 weight bits per layer);
    # decoder: 1 width * (8^1 + 8^2) (2 ffn * 2 bits * 2 cross spans per layer)
    (TINY_ENCDEC, 2 * (2**2 + 2**3) * (8 + 8**2)),
    # 2 widths * sum over depth 1..3 of (2 ffn * 2 heads * 2 wbits * 2 abits)^depth
    (TINY_DEC, 2 * (16 + 16**2 + 16**3)),
])
def test_cardinality_equals_brute_force(raw, expected):
    s = SearchSpace.from_dict(raw)
    archs = enumerate_archs(s)
    assert len(archs) == s.cardinality() == expected
    assert s.cardinality_log10() == pytest.approx(math.log10(expected))
    for a in list(archs)[:200]:
        s.validate_arch(a)
    # sampling stays inside the enumerated set
    assert {s.sample(i) for i in range(50)} <= archs


@pytest.mark.parametrize("name", PRESETS)
def test_cardinality_log10_consistent(name):
    s = SPACES[name]
    assert s.cardinality_log10() == pytest.approx(math.log10(s.cardinality()))


def test_cardinality_log10_of_a_huge_space_is_exact():
    raw = {"name": "huge", "family": "decoder_only", "vocab_size": 16,
           "decoder": {"embed_dim": [4], "layers": [400], "ffn_dim": list(range(1, 31)), "heads": [1],
                       "head_dim": 4}}
    s = SearchSpace.from_dict(raw)
    assert s.cardinality() == 30**400
    assert s.cardinality_log10() == pytest.approx(400 * math.log10(30))


# --------------------------------------------------------------------------- property tests
@PROPS
@given(name=presets, seed=seeds)
def test_json_round_trip_hash_and_digest(name, seed):
    a = SPACES[name].sample(seed)
    b = Arch.from_json(a.to_json())
    assert b == a and hash(b) == hash(a) and b.digest() == a.digest()
    assert b.to_json() == a.to_json()
    assert Arch.from_dict(a.to_dict()) == a


@PROPS
@given(name=presets, seed=seeds)
def test_sample_is_valid_and_reproducible(name, seed):
    s = SPACES[name]
    a = s.sample(seed)
    assert s.validate_arch(a) == a
    assert s.sample(seed) == a
    assert s.sample(np.random.default_rng(seed)) == a


@PROPS
@given(name=presets, seed=seeds)
def test_encode_shape_range_dtype(name, seed):
    s = SPACES[name]
    x = s.encode(s.sample(seed))
    assert x.shape == (s.encoding_size(),)
    assert x.dtype == np.float32
    assert np.all(x >= 0) and np.all(x <= 1)


@PROPS
@given(name=presets, seeds_=st.lists(seeds, min_size=2, max_size=20, unique=True))
def test_encode_is_injective_on_samples(name, seeds_):
    s = SPACES[name]
    archs = {s.sample(x) for x in seeds_}
    codes = {s.encode(a).tobytes() for a in archs}
    assert len(codes) == len(archs)


@pytest.mark.parametrize("name", PRESETS)
def test_encode_extremes(name):
    s = SPACES[name]
    big, small = s.encode(s.largest()), s.encode(s.smallest())
    assert np.all(big >= small) and big.max() == 1
    assert np.all(small[:2] == 0)  # narrowest embedding, shallowest stack
    assert big[0] == 1  # widest embedding
    assert s.encode_many([]).shape == (0, s.encoding_size())
    assert s.encode_many([s.smallest(), s.largest()]).shape == (2, s.encoding_size())


@PROPS
@given(name=presets, seed=seeds, rseed=seeds)
def test_mutate(name, seed, rseed):
    s = SPACES[name]
    a = s.sample(seed)
    assert s.mutate(a, 0.0, rseed) == a
    m = s.mutate(a, 1.0, rseed)
    assert s.validate_arch(m) == m
    assert s.mutate(a, 0.3, rseed) == s.mutate(a, 0.3, rseed)


def _genes_of(arch: Arch) -> dict:
    g = {("encoder", "embed_dim"): arch.encoder_embed_dim, ("decoder", "embed_dim"): arch.decoder_embed_dim,
         ("encoder", "layers"): len(arch.encoder), ("decoder", "layers"): len(arch.decoder)}
    for side, layers in (("encoder", arch.encoder), ("decoder", arch.decoder)):
        for i, la in enumerate(layers):
            g.update({(side, k, i): v for k, v in la.__dict__.items()})
    return g


@PROPS
@given(name=presets, sa=seeds, sb=seeds, rseed=seeds)
def test_crossover(name, sa, sb, rseed):
    s = SPACES[name]
    a, b = s.sample(sa), s.sample(sb)
    assert s.crossover(a, a, rseed) == a
    c = s.crossover(a, b, rseed)
    assert s.validate_arch(c) == c
    ga, gb = _genes_of(a), _genes_of(b)
    for key, val in _genes_of(c).items():
        # every gene of the child comes from a parent that has it
        assert val in [g[key] for g in (ga, gb) if key in g], (key, val)
    assert s.crossover(a, b, rseed) == c


def test_crossover_mixes_both_parents():
    s = SPACES["multi30k"]
    a, b = s.largest(), s.smallest()
    kids = [s.crossover(a, b, i) for i in range(20)]
    assert len(set(kids)) > 10
    assert any(k.encoder_embed_dim == 512 for k in kids) and any(k.encoder_embed_dim == 256 for k in kids)


# --------------------------------------------------------------------------- Arch values
def test_equal_archs_have_equal_json_and_digest():
    a = Arch(decoder_embed_dim=64, decoder=(LayerArch(128, 2, 16, 16),))
    b = Arch(decoder_embed_dim=np.int64(64), decoder=[LayerArch(np.int64(128), 2, 16.0, np.int64(16))])
    assert a == b and hash(a) == hash(b)
    assert a.to_json() == b.to_json() and a.digest() == b.digest()
    c = Arch(decoder_embed_dim=64, decoder=(LayerArch(128, 2, 1.5800000001, 16),))
    assert c.decoder[0].weight_bits == 1.58


def test_digest_is_stable_across_versions():
    # A cache key: this literal must only change on purpose.
    a = Arch(decoder_embed_dim=64, decoder=(LayerArch(128, 2, 1.58, 8),))
    assert a.to_json() == ('{"decoder":[{"act_bits":8,"cross_layers":0,"ffn_dim":128,"heads":2,'
                           '"weight_bits":1.58}],"decoder_embed_dim":64,"encoder":[],"encoder_embed_dim":0}')
    assert a.digest() == SPACES["tiny_lm"].smallest().digest()


# --------------------------------------------------------------------------- validate_arch
def test_validate_arch_names_the_bad_field():
    s = SPACES["multi30k"]
    a = s.largest()
    cases = {
        "decoder[0].ffn_dim": replace(a, decoder=(replace(a.decoder[0], ffn_dim=999),) + a.decoder[1:]),
        "encoder[2].heads": replace(a, encoder=a.encoder[:2] + (replace(a.encoder[2], heads=3),) + a.encoder[3:]),
        "decoder[1].weight_bits": replace(a, decoder=a.decoder[:1] + (replace(a.decoder[1], weight_bits=1),)
                                          + a.decoder[2:]),
        "encoder_embed_dim": replace(a, encoder_embed_dim=300),
        "decoder layer count": replace(a, decoder=a.decoder * 2),
        "decoder[0].cross_layers": replace(a, decoder=(replace(a.decoder[0], cross_layers=3),) + a.decoder[1:]),
        "encoder[0].cross_layers": replace(a, encoder=(replace(a.encoder[0], cross_layers=1),) + a.encoder[1:]),
    }
    for field, bad in cases.items():
        with pytest.raises(UserError) as e:
            s.validate_arch(bad, source="my_arch.json")
        msg = str(e.value)
        assert field in msg and "my_arch.json" in msg and "\n" not in msg, msg


def test_validate_arch_decoder_only_rejects_encoder_and_cross_layers():
    s = SPACES["tiny_lm"]
    a = s.largest()
    with pytest.raises(UserError, match="ffn_dim = 100"):
        s.validate_arch(replace(a, decoder=(replace(a.decoder[0], ffn_dim=100),) + a.decoder[1:]))
    with pytest.raises(UserError, match="encoder"):
        s.validate_arch(replace(a, encoder_embed_dim=64, encoder=a.decoder[:1]))
    with pytest.raises(UserError, match=r"decoder\[3\].cross_layers"):
        s.validate_arch(replace(a, decoder=a.decoder[:3] + (replace(a.decoder[3], cross_layers=2),)))
