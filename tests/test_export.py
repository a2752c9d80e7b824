"""Export folders: exact parity with the supernet, size, atomic writes, tampered files."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import cosearch
from cosearch.errors import UserError
from cosearch.export import export, open_exported, write_export
from cosearch.space import SearchSpace
from cosearch.model.supernet import Supernet

BITS = (1.58, 2, 3, 4, 8, 16)


def tiny_space(family="encoder_decoder", embed=(16, 24), ffn=(16, 32), vocab=50, embedding_bits=8,
               wbits=(1, 1.58, 2, 3, 4, 8, 16), abits=(4, 8, 16), mode="layer"):
    side = dict(embed_dim=list(embed), layers=[1, 2], ffn_dim=list(ffn), heads=[2, 4], head_dim=8)
    d = dict(name="t", family=family, vocab_size=vocab, max_positions=32, dropout=0.1,
             decoder=dict(side, **({"cross_layers": [1, 2]} if family == "encoder_decoder" else {})),
             quantization=dict(weight_bits=list(wbits), act_bits=list(abits), embedding_bits=embedding_bits),
             mos=dict(mode=mode, experts=2, router_hidden=8, sublayers=["ffn", "attention"]))
    if family == "encoder_decoder":
        d["encoder"] = dict(side, layers=[2, 3])
    return SearchSpace.from_dict(d)


def inputs(space, seed=0, batch=3):
    g = torch.Generator().manual_seed(seed)
    if space.is_encdec:
        src = torch.randint(4, space.vocab_size, (batch, 7), generator=g)
        src[0, -3:] = 0
        return src, torch.randint(4, space.vocab_size, (batch, 6), generator=g)
    return (torch.randint(4, space.vocab_size, (batch, 9), generator=g),)


def random_supernet(space, seed=0):
    torch.manual_seed(seed)
    net = Supernet(space)
    with torch.no_grad():  # learned scales away from their init, so they must travel
        for name, p in net.named_parameters():
            if "log_factor" in name or "log_clip" in name:
                p.uniform_(-0.3, 0.3)
    return net.eval()


@pytest.mark.parametrize("family", ["encoder_decoder", "decoder_only"])
@pytest.mark.parametrize("embedding_bits", [8, 16])
def test_loaded_model_equals_the_supernet_subnetwork(tmp_path, family, embedding_bits):
    space = tiny_space(family, embedding_bits=embedding_bits)
    net = random_supernet(space)
    x = inputs(space)
    for i, bits in enumerate(BITS + (1,)):
        arch = space.with_bits(space.sample(i), weight_bits=bits, act_bits=(4, 8, 16)[i % 3])
        out = export(tmp_path / f"e{i}", supernet=net, arch=arch)
        model = cosearch.load_exported(out)
        assert type(model).__name__ == "Transformer"
        assert not any("router" in n or "experts" in n for n, _ in model.named_parameters())
        with torch.no_grad():
            ref, got = net(*x, arch=arch), model(*x)
        assert torch.allclose(ref, got, atol=1e-5, rtol=0), (bits, (ref - got).abs().max())


def test_mixed_bits_per_layer(tmp_path):
    space = tiny_space()
    net = random_supernet(space, seed=3)
    arch = space.sample(7)
    layers = [replace(la, weight_bits=b) for la, b in zip(arch.decoder, (1.58, 3))]
    arch = replace(arch, decoder=tuple(layers))
    model = cosearch.load_exported(export(tmp_path / "e", supernet=net, arch=arch))
    x = inputs(space, seed=2)
    with torch.no_grad():
        assert torch.allclose(net(*x, arch=arch), model(*x), atol=1e-5, rtol=0)
    stored = {la["weight_bits"] for la in json.loads((tmp_path / "e/config.json").read_text())["arch"]["decoder"]}
    assert stored == {b.weight_bits for b in arch.decoder}


@pytest.mark.parametrize("bits", BITS + (1,))
def test_weight_file_size_is_within_10_percent_of_prediction(tmp_path, bits):
    space = tiny_space("decoder_only", embed=(192,), ffn=(384,), vocab=512, embedding_bits=8)
    net = random_supernet(space)
    arch = space.with_bits(space.largest(), weight_bits=bits)
    out = export(tmp_path / "e", supernet=net, arch=arch)
    predicted = space.size(arch).weight_bits / 8
    actual = os.path.getsize(out / "model.safetensors")
    assert abs(actual - predicted) <= 0.10 * predicted, (bits, actual, predicted)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["predicted"]["size_bytes"] == pytest.approx(predicted)


def test_codes_are_packed_at_their_bit_width(tmp_path):
    space = tiny_space("decoder_only")
    net = random_supernet(space)
    arch = space.with_bits(space.smallest(), weight_bits=3)
    out = export(tmp_path / "e", supernet=net, arch=arch)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        q = json.loads(f.metadata()["quantized"])
        name = "decoder_layers.0.ffn.fc1.weight"
        o, i = q[name]["shape"]
        assert q[name]["bits"] == 3
        assert f.get_tensor(name + ".codes").dtype == torch.uint8
        assert f.get_tensor(name + ".codes").numel() == -(-o * i * 3 // 8)
        assert f.get_tensor("decoder_layers.0.ffn.fc1.weight_scale").dtype == torch.float32
        assert f.get_tensor("decoder_layers.0.ffn.fc1.bias").dtype == torch.float32
        assert "embed.weight.codes" in f.keys()  # 8-bit embeddings


def test_16_bit_layers_are_fp16(tmp_path):
    space = tiny_space("decoder_only", embedding_bits=16)
    net = random_supernet(space)
    out = export(tmp_path / "e", supernet=net, arch=space.with_bits(space.smallest(), weight_bits=16))
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("decoder_layers.0.ffn.fc1.weight").dtype == torch.float16
        assert f.get_tensor("embed.weight").dtype == torch.float16
        assert "decoder_layers.0.ffn.fc1.weight_scale" not in f.keys()


def test_config_contents_and_hardware_schedule(tmp_path):
    space = tiny_space()
    net = random_supernet(space)
    arch = space.sample(1)
    out = export(tmp_path / "e", supernet=net, arch=arch, hardware="zcu102", task="translation",
                 metrics={"loss": 3.5})
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "cosearch-export" and cfg["format_version"] == 1
    assert cosearch.Arch.from_dict(cfg["arch"]) == arch
    assert SearchSpace.from_dict(cfg["space"]).to_dict() == space.to_dict()
    assert cfg["task"] == "translation" and cfg["search_metrics"] == {"loss": 3.5}
    assert cfg["hardware"]["name"] == "zcu102"
    assert cfg["predicted"]["latency_ms"] > 0 and cfg["predicted"]["energy_mj"] > 0
    assert cfg["bits"]["decoder"]["weight"] == [la.weight_bits for la in arch.decoder]
    import pandas as pd
    sched = pd.read_csv(out / "schedule.csv")
    assert len(sched) > 0 and {"op", "role"} <= set(sched.columns)


def test_export_is_atomic_and_refuses_to_overwrite(tmp_path, monkeypatch):
    space = tiny_space("decoder_only")
    net = random_supernet(space)
    arch = space.sample(0)
    out = export(tmp_path / "e", supernet=net, arch=arch)
    with pytest.raises(UserError, match="already exists"):
        export(out, supernet=net, arch=arch)
    export(out, supernet=net, arch=space.sample(1), force=True)
    assert cosearch.Arch.from_dict(json.loads((out / "config.json").read_text())["arch"]) == space.sample(1)

    import cosearch.export.folder as ex

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(ex, "save_weights", boom)
    with pytest.raises(RuntimeError):
        export(tmp_path / "f", supernet=net, arch=arch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]  # no OUT, no temp folder


def test_arch_outside_the_space_is_refused_at_export(tmp_path):
    space = tiny_space("decoder_only")
    net = random_supernet(space)
    bad = replace(space.smallest(), decoder_embed_dim=20)
    with pytest.raises(UserError, match="decoder_embed_dim"):
        export(tmp_path / "e", supernet=net, arch=bad)
    assert not (tmp_path / "e").exists()


# --------------------------------------------------------------------------- tampered files
@pytest.fixture(scope="module")
def good_export(tmp_path_factory):
    space = tiny_space()
    net = random_supernet(space)
    arch = space.with_bits(space.sample(4), weight_bits=3)
    return export(tmp_path_factory.mktemp("exp") / "good", supernet=net, arch=arch)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _rewrite(path: Path, change) -> None:
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    change(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def _expect_user_error(folder: Path, match: str):
    with pytest.raises(UserError) as e:
        cosearch.load_exported(folder)
    msg = str(e.value)
    assert "\n" not in msg and str(folder) in msg, msg
    assert match in msg, msg


def test_truncated_weights(tmp_path, good_export):
    d = _copy(good_export, tmp_path / "x")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    _expect_user_error(d, "model.safetensors")


def test_bad_header(tmp_path, good_export):
    d = _copy(good_export, tmp_path / "x")
    data = bytearray((d / "model.safetensors").read_bytes())
    data[8:20] = b"not json!!!!"
    (d / "model.safetensors").write_bytes(bytes(data))
    _expect_user_error(d, "model.safetensors")


def test_a_pickle_is_not_loaded(tmp_path, good_export):
    d = _copy(good_export, tmp_path / "x")
    torch.save({"a": torch.zeros(2)}, d / "model.safetensors")
    _expect_user_error(d, "model.safetensors")


def test_wrong_shape(tmp_path, good_export):
    d = _copy(good_export, tmp_path / "x")
    _rewrite(d / "model.safetensors",
             lambda t, m: t.update({"decoder_norm.weight": torch.zeros(t["decoder_norm.weight"].numel() + 1)}))
    _expect_user_error(d, "decoder_norm.weight")


def test_missing_tensor(tmp_path, good_export):
    d = _copy(good_export, tmp_path / "x")
    _rewrite(d / "model.safetensors", lambda t, m: t.pop("decoder_layers.0.ffn.fc2.bias"))
    _expect_user_error(d, "decoder_layers.0.ffn.fc2.bias")


def test_missing_codes(tmp_path, good_export):
    d = _copy(good_export, tmp_path / "x")
    _rewrite(d / "model.safetensors", lambda t, m: t.pop("decoder_layers.0.ffn.fc1.weight.codes"))
    _expect_user_error(d, "decoder_layers.0.ffn.fc1.weight")


def test_codes_length_mismatch(tmp_path, good_export):
    d = _copy(good_export, tmp_path / "x")
    name = "decoder_layers.0.ffn.fc1.weight.codes"
    _rewrite(d / "model.safetensors", lambda t, m: t.update({name: t[name][:-1].clone()}))
    _expect_user_error(d, "code bytes")


def test_extra_tensor(tmp_path, good_export):
    d = _copy(good_export, tmp_path / "x")
    _rewrite(d / "model.safetensors", lambda t, m: t.update({"evil": torch.zeros(3)}))
    _expect_user_error(d, "evil")


def test_bits_metadata_disagreeing_with_config(tmp_path, good_export):
    d = _copy(good_export, tmp_path / "x")

    def change(t, m):
        q = json.loads(m["quantized"])
        q["decoder_layers.0.ffn.fc1.weight"]["bits"] = 4
        m["quantized"] = json.dumps(q)
    _rewrite(d / "model.safetensors", change)
    _expect_user_error(d, "bits")


def test_config_arch_outside_the_space(tmp_path, good_export):
    d = _copy(good_export, tmp_path / "x")
    cfg = json.loads((d / "config.json").read_text())
    cfg["arch"]["decoder"][0]["ffn_dim"] = 17
    (d / "config.json").write_text(json.dumps(cfg))
    _expect_user_error(d, "ffn_dim")


@pytest.mark.parametrize("text", ["{not json", "[]", '{"format": "cosearch-export", "format_version": 99}'])
def test_broken_config(tmp_path, good_export, text):
    d = _copy(good_export, tmp_path / "x")
    (d / "config.json").write_text(text)
    _expect_user_error(d, "config.json")


def test_missing_folder_and_files(tmp_path, good_export):
    _expect_user_error(tmp_path / "nowhere", "nowhere")
    d = _copy(good_export, tmp_path / "x")
    (d / "model.safetensors").unlink()
    _expect_user_error(d, "model.safetensors")


def test_open_exported_keeps_config(good_export):
    e = open_exported(good_export)
    assert e.arch == cosearch.Arch.from_dict(e.config["arch"])
    assert not e.model.training
    with pytest.raises(UserError, match="no tokenizer"):
        e.tokenizer()


def test_write_export_of_an_extracted_model(tmp_path):
    space = tiny_space("decoder_only")
    net = random_supernet(space)
    arch = space.sample(3)
    model = net.extract(arch)
    out = write_export(tmp_path / "w", model, space, arch)
    x = inputs(space)
    with torch.no_grad():
        assert torch.equal(model.eval()(*x), cosearch.load_exported(out)(*x))
