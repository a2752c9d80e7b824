"""One test per kind of mistake in a search-space YAML file: each is a one-line UserError
naming the file and the field."""
from __future__ import annotations

import copy

import pytest
import yaml

from cosearch.errors import UserError
from cosearch.space import SearchSpace

BASE = {
    "name": "mini", "family": "encoder_decoder", "vocab_size": 100,
    "encoder": {"embed_dim": [16, 32], "layers": [2, 3], "ffn_dim": [32, 64], "heads": [2, 4], "head_dim": 8},
    "decoder": {"embed_dim": [16, 32], "layers": [1, 2], "ffn_dim": [32, 64], "heads": [2, 4], "head_dim": 8,
                "cross_layers": [1, 2]},
    "quantization": {"weight_bits": [2, 16], "act_bits": [8, 16]},
    "mos": {"mode": "layer", "experts": 2, "router_hidden": 8, "sublayers": ["ffn"]},
}
DECODER_ONLY = {k: v for k, v in BASE.items() if k != "encoder"} | {
    "family": "decoder_only", "decoder": {k: v for k, v in BASE["decoder"].items() if k != "cross_layers"}}


def _set(d: dict, dotted: str, value):
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[p]
    if value is _DELETE:
        del d[last]
    else:
        d[last] = value


_DELETE = object()


def load_error(tmp_path, text: str) -> tuple[str, str]:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        SearchSpace.load(path)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    return msg, str(path)


def test_base_files_are_valid(tmp_path):
    for i, d in enumerate((BASE, DECODER_ONLY)):
        p = tmp_path / f"ok{i}.yaml"
        p.write_text(yaml.safe_dump(d))
        assert SearchSpace.load(p).cardinality() > 1


# (test id, base, {dotted field: new value or _DELETE}, words the message must contain)
CASES = [
    ("unknown_top_level_key", BASE, {"colour": "red"}, ["colour", "unknown field"]),
    ("unknown_nested_key", BASE, {"decoder.embed_dims": [16]}, ["decoder.embed_dims", "unknown field"]),
    ("unknown_mos_key", BASE, {"mos.expert": 2}, ["mos.expert"]),
    ("missing_decoder", BASE, {"decoder": _DELETE}, ["decoder", "missing"]),
    ("missing_nested_field", BASE, {"encoder.ffn_dim": _DELETE}, ["encoder.ffn_dim", "missing"]),
    ("wrong_type_scalar", BASE, {"vocab_size": "many"}, ["vocab_size"]),
    ("wrong_type_list", BASE, {"decoder.ffn_dim": 64}, ["decoder.ffn_dim"]),
    ("wrong_type_element", BASE, {"encoder.heads": [2, "four"]}, ["encoder.heads"]),
    ("empty_choice_list", BASE, {"decoder.ffn_dim": []}, ["decoder.ffn_dim", "non-empty"]),
    ("negative_choice", BASE, {"encoder.embed_dim": [-16, 32]}, ["encoder.embed_dim", "positive"]),
    ("zero_choice", BASE, {"decoder.layers": [0, 1]}, ["decoder.layers", "positive"]),
    ("repeated_choice", BASE, {"decoder.heads": [2, 2]}, ["decoder.heads", "repeat"]),
    ("bad_weight_bit", BASE, {"quantization.weight_bits": [5, 16]}, ["quantization.weight_bits", "5", "1.58"]),
    ("bad_act_bit", BASE, {"quantization.act_bits": [2, 8]}, ["quantization.act_bits", "2"]),
    ("bad_embedding_bits", BASE, {"quantization.embedding_bits": 4}, ["quantization.embedding_bits"]),
    ("head_dim_and_qkv_dim", BASE, {"decoder.qkv_dim": 32}, ["decoder", "head_dim", "qkv_dim"]),
    ("neither_head_dim_nor_qkv_dim", BASE, {"encoder.head_dim": _DELETE}, ["encoder", "head_dim", "qkv_dim"]),
    ("qkv_dim_not_divisible", BASE, {"encoder.head_dim": _DELETE, "encoder.qkv_dim": 30},
     ["encoder", "qkv_dim", "divisible", "4"]),
    ("encoder_missing_for_encdec", BASE, {"encoder": _DELETE}, ["encoder", "encoder_decoder"]),
    ("encoder_given_for_decoder_only", DECODER_ONLY, {"encoder": BASE["encoder"]}, ["encoder", "decoder_only"]),
    ("cross_layers_missing", BASE, {"decoder.cross_layers": _DELETE}, ["decoder.cross_layers", "required"]),
    ("cross_layers_exceed_fewest_encoder_layers", BASE, {"decoder.cross_layers": [1, 3]},
     ["decoder.cross_layers", "3", "fewest encoder layers 2"]),
    ("cross_layers_in_encoder", BASE, {"encoder.cross_layers": [1]}, ["encoder.cross_layers"]),
    ("cross_layers_for_decoder_only", DECODER_ONLY, {"decoder.cross_layers": [1]},
     ["decoder.cross_layers", "encoder_decoder"]),
    ("mos_none_with_experts", BASE, {"mos.mode": "none"}, ["mos", "experts", "none"]),
    ("mos_unknown_mode", BASE, {"mos.mode": "token"}, ["mos.mode"]),
    ("experts_zero", BASE, {"mos.experts": 0}, ["mos", "experts", ">= 1"]),
    ("sublayers_without_ffn", BASE, {"mos.sublayers": ["attention"]}, ["mos", "sublayers", "ffn"]),
    ("unknown_sublayer", BASE, {"mos.sublayers": ["ffn", "norm"]}, ["mos.sublayers"]),
    ("dropout_out_of_range", BASE, {"dropout": 1.5}, ["dropout", "[0, 1)"]),
    ("negative_dropout", BASE, {"dropout": -0.1}, ["dropout"]),
    ("bad_family", BASE, {"family": "encoder_only"}, ["family"]),
    ("vocab_too_small", BASE, {"vocab_size": 1}, ["vocab_size"]),
]


@pytest.mark.parametrize("base, changes, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_yaml_mistake(tmp_path, base, changes, words):
    d = copy.deepcopy(base)
    for field, value in changes.items():
        _set(d, field, value)
    msg, _ = load_error(tmp_path, yaml.safe_dump(d))
    for w in words:
        assert w in msg, (w, msg)


def test_not_yaml(tmp_path):
    msg, _ = load_error(tmp_path, "name: mini\ndecoder: [unclosed\n  family: x\n")
    assert "not valid YAML" in msg and "line" in msg


def test_not_a_mapping(tmp_path):
    msg, _ = load_error(tmp_path, "- name\n- decoder\n")
    assert "mapping" in msg


def test_empty_file(tmp_path):
    msg, _ = load_error(tmp_path, "")
    assert "mapping" in msg


def test_numeric_key(tmp_path):
    msg, _ = load_error(tmp_path, yaml.safe_dump(BASE) + "1: 2\n")
    assert ": 1: " in msg and "string" in msg


def test_binary_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81 binary")
    with pytest.raises(UserError) as e:
        SearchSpace.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_unreadable_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.mkdir()  # a directory where a file should be: cannot be read as a file
    with pytest.raises(UserError) as e:
        SearchSpace.load(path)
    msg = str(e.value)
    assert str(path) in msg and "is a folder" in msg and "tiny_lm" in msg and "\n" not in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(UserError) as e:
        SearchSpace.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_unknown_preset_name():
    with pytest.raises(UserError) as e:
        SearchSpace.load("no_such_space")
    msg = str(e.value)
    assert "no_such_space" in msg and "preset" in msg and "\n" not in msg
    for name in ("hat_wmt14", "multi30k", "tiny_lm"):
        assert name in msg  # the message lists what exists


def test_from_dict_names_its_source():
    d = copy.deepcopy(BASE)
    d["decoder"]["heads"] = []
    with pytest.raises(UserError, match=r"^my_space: decoder\.heads: "):
        SearchSpace.from_dict(d, source="my_space")
