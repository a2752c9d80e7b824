"""``cosearch cost`` and the accelerator co-design space."""
import json

import pytest

from cosearch.cli import main
from cosearch.errors import UserError
from cosearch.hardware import accelerator_space, load_hardware
from cosearch.space import SearchSpace


def test_cost_json_asic(capsys):
    assert main(["cost", "--space", "multi30k", "--hw", "tpu_like", "--json"]) == 0
    t = json.loads(capsys.readouterr().out)
    assert {"latency_ms", "energy_mj", "size_bytes", "area_mm2"} <= set(t)
    space = SearchSpace.load("multi30k")
    assert t["size_bytes"] == pytest.approx(space.size(space.largest()).weight_bits / 8)


def test_cost_json_fpga_from_arch_file(tmp_path, capsys):
    space = SearchSpace.load("tiny_lm")
    arch = space.smallest()
    f = tmp_path / "arch.json"
    f.write_text(arch.to_json())
    assert main(["cost", "--space", "tiny_lm", "--hw", "zcu102", "--arch", str(f), "--scenario", "decode",
                 "--json"]) == 0
    t = json.loads(capsys.readouterr().out)
    assert t["scenario"] == "decode" and set(t["fpga"]) >= {"dsp", "bram36", "lut", "feasible"}
    assert "area_mm2" not in t


def test_cost_table(capsys):
    assert main(["cost", "--space", "tiny_lm", "--hw", "bitfusion", "--arch", "smallest"]) == 0
    out = capsys.readouterr().out
    assert "decoder.0.self_attn.q" in out and "latency" in out and "area" in out


@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON"),
    ('{"x": 1}', "not an architecture"),
    ('{"decoder_embed_dim": 999, "decoder": [{"ffn_dim": 128, "heads": 2}]}', "decoder_embed_dim = 999"),
])
def test_bad_arch_file_is_one_line_error(tmp_path, capsys, content, words):
    f = tmp_path / "a.json"
    f.write_text(content)
    assert main(["cost", "--space", "tiny_lm", "--hw", "zcu102", "--arch", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err


def test_missing_arch_file_and_bad_hw(capsys):
    assert main(["cost", "--space", "tiny_lm", "--hw", "zcu102", "--arch", "/nonexistent/a.json"]) == 2
    assert main(["cost", "--space", "tiny_lm", "--hw", "no_such_hw"]) == 2
    assert "no_such_hw" in capsys.readouterr().err


def test_accelerator_space():
    acc = accelerator_space("tpu_like")
    ch = acc.choices()
    assert set(ch) == {"rows", "cols", "weight_kb", "input_kb", "output_kb", "dataflow", "dram_gbps", "clock_mhz"}
    assert all(isinstance(v, list) and v for v in ch.values())
    assert acc.cardinality() == __import__("math").prod(len(v) for v in ch.values())
    p = acc.sample(0)
    hw = acc.make(p)
    assert acc.make(dict(p)) is hw and hw.array.rows == p["rows"] and hw.dataflow == p["dataflow"]
    assert not acc.feasible(acc.make({"rows": 256, "cols": 256, "input_kb": 24576}))
    assert acc.feasible(acc.base)
    z = accelerator_space(load_hardware("zcu102"))
    assert not z.feasible(z.make({"rows": 64, "cols": 64})) and z.area_budget_mm2 is None
    # defaults around the preset when the YAML has no codesign section
    d = load_hardware("eyeriss_like").model_dump()
    d.pop("codesign")
    from cosearch.hardware import hardware_from_dict
    e = accelerator_space(hardware_from_dict(d))
    assert e.choices()["rows"] == [6, 12, 24] and e.choices()["dataflow"] == ["os", "ws", "is"]
    with pytest.raises(UserError):
        acc.make({"bogus": 1})


def test_optuna_suggest():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    acc = accelerator_space("bitfusion")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    hw = acc.suggest(trial)
    assert hw.array.rows == trial.params["hw.rows"]


OS_8x128 = """name: os8x128
kind: asic
node_nm: 28
clock_mhz: 700
dataflow: {df}
array: {{rows: 8, cols: 128}}
pe: {{style: bit_parallel, bits: 8}}
memory: {{weight_kb: 256, input_kb: 1024, output_kb: 1024, dram_gbps: 34}}
vector: {{lanes: 64}}
energy: {{mac_int8_pj: 0.15, mac_fp16_pj: 0.75, vector_op_pj: 0.4, dram_pj_per_byte: 160}}
area: {{pe_um2: 200, sram_mm2_per_kb: 0.003}}
"""


@pytest.mark.parametrize("df, scalesim", [("os", 76799), ("ws", 8759), ("is", 12735)])
def test_cost_one_gemm(tmp_path, capsys, df, scalesim):
    """SCALE-Sim 3.0.0's compute cycles for 2048x16x256 on an 8x128 array."""
    f = tmp_path / "hw.yaml"
    f.write_text(OS_8x128.format(df=df))
    assert main(["cost", "--gemm", "2048x16x256", "--bits", "8,8", "--hw", str(f), "--json"]) == 0
    t = json.loads(capsys.readouterr().out)
    assert t["compute_cycles"] == scalesim and t["cycles"] >= t["compute_cycles"]
    assert {"latency_ms", "energy_mj", "dram_bytes", "power_w", "area_mm2"} <= set(t)
    assert 0 < t["pe_utilization"] <= 1


def test_cost_one_gemm_fpga_and_errors(capsys):
    assert main(["cost", "--gemm", "1x512x2048", "--bits", "1.58,8", "--hw", "zcu102", "--json"]) == 0
    t = json.loads(capsys.readouterr().out)
    assert t["fpga"]["feasible"] and t["bound"] == "memory" and t["w_bits"] == 1.58
    assert main(["cost", "--gemm", "1x512x2048", "--hw", "zcu102", "--power-max", "0.1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["feasible"] is False
    for argv, words in ((["--gemm", "1x512"], "MxKxN"), (["--gemm", "1x2x3", "--bits", "8"], "--bits"),
                        ([], "--space"), (["--gemm", "1x2x3", "--power-max", "-1"], "--power-max")):
        assert main(["cost", "--hw", "zcu102", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "\n" not in err
    assert main(["cost", "--gemm", "4x4x4", "--hw", "bitfusion"]) == 0
    assert "SCALE-Sim" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["--gemm", "1x512x512", "--power-max", "nan"], "--power-max"),
    (["--gemm", "1x512x512", "--power-max", "inf"], "--power-max"),
    (["--gemm", "1x512x512", "--power-max", "１０"], "--power-max"),
    (["--gemm", "１x512x512"], "--gemm"),  # fullwidth digit
    (["--gemm", "1e11x1e8x1e8"], "--gemm"),
    (["--gemm", "100000000000x100000000x100000000"], "--gemm"),
    (["--gemm", "100000x100000x1000000"], "2^40"),  # each size fine, the product past exact counts
    (["--gemm", "1x512x512", "--bits", "nan,8"], "--bits"),
    (["--space", "tiny_lm", "--seq-len", "1e11"], "--seq-len"),
    (["--space", "tiny_lm", "--seq-len", "100000000000"], "--seq-len"),
    (["--space", "tiny_lm", "--seq-len", "３０"], "--seq-len"),
    (["--space", "tiny_lm", "--decode-tokens", "0"], "--decode-tokens"),
    (["--space", "tiny_lm", "--batch", "-2"], "--batch"),
])
def test_bad_numbers_are_one_line_errors(capsys, argv, words):
    """NaN, infinities, fullwidth digits and sizes past exact integer range: exit 2, one line
    naming the flag (checked before any work)."""
    assert main(["cost", "--hw", "zcu102", *argv]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert words in err and "\n" not in err and cap.out == ""


@pytest.mark.parametrize("field, value", [
    ("memory.dram_gbps", ".nan"), ("clock_mhz", ".inf"), ("memory.weight_kb", ".nan"),
    ("energy.dram_pj_per_byte", "-.inf"), ("energy.mac_int8_pj", ".nan"), ("array.rows", "1e12"),
    ("array.rows", "1000000000000"), ("array.cols", "１２８"), ("memory.weight_kb", "1.0e15"),
    ("memory.dram_efficiency", "1.5"),
])
def test_bad_numbers_in_a_preset_are_one_line_errors(tmp_path, capsys, field, value):
    import yaml
    d = yaml.safe_load(load_hardware("tpu_like").model_dump_json())
    node, key = d, field.split(".")
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = "@@"
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(d).replace("'@@'", value))
    assert main(["cost", "--gemm", "1x64x64", "--hw", str(f), "--json"]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert "bad.yaml" in err and key[-1] in err and "\n" not in err and cap.out == ""


def test_json_is_standard(capsys):
    """--json never prints NaN or Infinity tokens (json.loads would take them; a strict
    parser does not)."""
    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON token {c}"))
    assert main(["cost", "--space", "tiny_lm", "--hw", "zcu102", "--scenario", "decode", "--json"]) == 0
    t = strict(capsys.readouterr().out)
    assert t["feasible"] is True and t["latency_ms"] > 0
    assert main(["cost", "--gemm", "1x64x64", "--hw", "eyeriss_like", "--json"]) == 0
    assert strict(capsys.readouterr().out)["cycles"] > 0
