"""Hardware presets: every shipped preset loads; mistakes are one-line UserErrors."""
import pytest
import yaml

from cosearch.errors import UserError
from cosearch.hardware import accelerator_space, hardware_from_dict, load_hardware
from cosearch.presets import list_presets

PRESETS = list_presets("hw_models")


def test_required_presets_exist():
    assert {"tpu_like", "bitfusion", "eyeriss_like", "zcu102", "alveo_u250"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_is_consistent(name):
    hw = load_hardware(name)
    assert hw.name == name
    if hw.kind == "fpga":
        assert hw.fpga_resources(False)["feasible"], "a shipped FPGA preset must fit its device"
    else:
        assert hw.area_mm2() > 0
        assert accelerator_space(hw).feasible(hw), "a shipped ASIC preset must be within its own budget"


def test_zcu102_device_figures():
    z = load_hardware("zcu102")
    f = z.fpga
    assert (f.dsp, f.bram36, f.lut, f.uram) == (2520, 912, 274080, 0)
    # the PS DDR4 (64 bit x 2400 MT/s) through the HP ports; the PL DDR4 (one x16 part, 4.8
    # GB/s) is the co-design's other choice; both sustain 87% of their peak (UG585)
    assert z.memory.dram_gbps == 19.2 and z.memory.dram_efficiency == 0.87
    assert accelerator_space(z).choices()["dram_gbps"] == [4.8, 19.2]
    assert z.derived.bytes_per_cycle == pytest.approx(19.2e9 * 0.87 / 200e6, rel=1e-12)


def test_alveo_u250_keeps_weights_in_ultraram():
    u = load_hardware("alveo_u250")
    assert (u.fpga.bram36, u.fpga.uram) == (2688, 1280) and u.memory.weight_kb == 32768
    r = u.fpga_resources(u.pe_features(8, 8))
    # 128 column banks of 256 KB: 8 URAM288 (36 KB) each; BRAM holds the input/output buffers
    assert r["uram"] == 128 * 8 and r["feasible"]
    assert r["bram36"] == (64 * 8 + 128 * 4) // 2  # 64 x 16 KB and 128 x 8 KB banks of BRAM18 (2.25 KB)
    assert not u.with_params(weight_kb=65536).fpga_resources(u.pe_features(8, 8))["feasible"]
    # one access touches one block: the URAM and BRAM energies per byte do not grow with size
    assert u.derived.e_wbuf == u.energy.uram_access_pj / 8 == u.with_params(weight_kb=2048).derived.e_wbuf
    assert u.derived.e_ibuf == u.energy.bram_access_pj / 8 == u.with_params(input_kb=8192).derived.e_ibuf
    asic = load_hardware("tpu_like")
    assert asic.with_params(weight_kb=1024).derived.e_wbuf == pytest.approx(2 * asic.derived.e_wbuf)


def _data(name="tpu_like"):
    return yaml.safe_load(load_hardware(name).model_dump_json())


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d.pop("clock_mhz"), ["clock_mhz", "required"]),
    (lambda d: d.update(colour="red"), ["colour", "unknown field"]),
    (lambda d: d["array"].update(rows=0), ["array.rows", "between 1 and"]),
    (lambda d: d.update(dataflow="rs"), ["dataflow"]),
    (lambda d: d.pop("area"), ["area"]),
    (lambda d: d["memory"].update(dram_gbps=-1), ["dram_gbps", "positive"]),
    (lambda d: d["pe"].update(style="dsp"), ["pe", "dsp_packing"]),
])
def test_bad_asic_preset_names_the_field(mutate, words):
    d = _data()
    mutate(d)
    with pytest.raises(UserError) as e:
        hardware_from_dict(d, source="my.yaml")
    msg = str(e.value)
    assert msg.startswith("my.yaml:") and "\n" not in msg
    for w in words:
        assert w in msg


def test_bad_fpga_packing_is_rejected():
    d = _data("zcu102")
    d["pe"]["dsp_packing"] = [{"max_bits": 8, "macs": 2}]
    with pytest.raises(UserError, match="16-bit"):
        hardware_from_dict(d, source="f.yaml")


def test_bad_yaml_file_and_unknown_name(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="broken.yaml"):
        load_hardware(p)
    with pytest.raises(UserError, match="zcu102"):  # lists the presets
        load_hardware("no_such_accelerator")
    q = tmp_path / "list.yaml"
    q.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_hardware(q)


def test_with_params_validates():
    hw = load_hardware("tpu_like")
    v = hw.with_params(rows=64, dataflow="os", dram_gbps=68)
    assert (v.array.rows, v.dataflow, v.memory.dram_gbps) == (64, "os", 68)
    assert hw.array.rows == 128  # the original is untouched
    assert v.key != hw.key
    with pytest.raises(UserError, match="unknown accelerator parameter"):
        hw.with_params(pes=4)
    with pytest.raises(UserError, match="rows"):
        hw.with_params(rows=0)


def test_precision_mapping():
    bf = load_hardware("bitfusion")
    assert bf.cycles_per_mac(8, 8) == 1 and bf.cycles_per_mac(4, 4) == 0.25
    assert bf.cycles_per_mac(2, 4) == 0.125 and bf.cycles_per_mac(1.58, 8) == bf.cycles_per_mac(2, 8)
    assert bf.cycles_per_mac(16, 16) == 4
    tpu = load_hardware("tpu_like")
    assert tpu.cycles_per_mac(4, 8) == 1 and tpu.cycles_per_mac(16, 8) == 2 and tpu.cycles_per_mac(16, 16) == 4
    z = load_hardware("zcu102")
    assert z.cycles_per_mac(4, 4) == 0.25 and z.cycles_per_mac(8, 8) == 0.5 and z.cycles_per_mac(16, 8) == 1
    assert z.uses_lut(1.58) and not z.uses_lut(2) and z.cycles_per_mac(1.58, 8) == 0.5
    # int4 packs 2 weights x 2 activations (WP521), int8 2 weights x 1 activation (WP486)
    assert z.pack(4, 4) == (2, 2, 1, 1) and z.pack(8, 8) == (2, 1, 1, 1) and z.pack(4, 8) == (2, 1, 1, 1)
    assert bf.pack(2, 8) == (1, 1, 4, 1) and bf.pack(16, 8) == (1, 1, 1, 2) and tpu.pack(16, 16) == (1, 1, 1, 4)
    # energy per MAC never falls as bits grow
    for hw in (bf, tpu, z, load_hardware("eyeriss_like")):
        bits = [1, 1.58, 2, 3, 4, 8, 16]
        for a in (4, 8, 16):
            e = [hw.mac_energy_pj(w, a) for w in bits]
            assert e == sorted(e), hw.name


def test_fpga_luts_follow_precision_and_pe_style():
    z = load_hardware("zcu102")
    feat = z.pe_features
    # packing correction: int4 packing needs more logic than int8; 16-bit fixed point none
    assert z.lut_per_pe(feat(16, 8)) == z.fpga.lut_per_pe < z.lut_per_pe(feat(8, 8)) < z.lut_per_pe(feat(4, 4))
    assert feat(2, 8) == feat(8, 8)  # same packed DSP mode: 2-bit weights x 8-bit activations pack as int8
    # ternary weights add LUT MACs, wider with 16-bit activations; modes add up
    assert z.lut_per_pe(feat(1.58, 16)) > z.lut_per_pe(feat(1.58, 8)) > z.fpga.lut_per_pe
    assert z.lut_per_pe(feat(8, 8) | feat(4, 4)) == pytest.approx(
        z.lut_per_pe(feat(8, 8)) + z.lut_per_pe(feat(4, 4)) - z.fpga.lut_per_pe)
    r8, r4 = z.fpga_resources(feat(8, 8)), z.fpga_resources(feat(4, 4))
    assert r4["lut"] - r8["lut"] == 32 * 64 * 4 + 64 * (120 - 40)
    # an fp16 float array (float logic around every DSP) does not fit this part at 32x64
    d = _data("zcu102")
    d["pe"]["dsp_packing"][2]["lut_per_pe"] = 200
    f = hardware_from_dict(d)
    assert f.fpga_resources(feat(8, 8))["feasible"] and not f.fpga_resources(f.pe_features(16, 16))["feasible"]
    assert f.with_params(rows=16, cols=32).fpga_resources(f.pe_features(16, 16))["feasible"]


def test_dsp_mac_energy_follows_the_packed_operation():
    z = load_hardware("zcu102")
    op = z.energy.dsp_op_pj
    assert z.mac_energy_pj(2, 8) == z.mac_energy_pj(8, 8) == op / 2
    assert z.mac_energy_pj(4, 4) == z.mac_energy_pj(2, 2) == op / 4
    assert z.mac_energy_pj(1.58, 8) == z.energy.lut_mac_pj
    # 16-bit is fixed point on the DSP (one operation, not an fp16 MAC); a ternary LUT MAC's
    # adder doubles at 16-bit activations
    assert z.mac_energy_pj(16, 16) == z.mac_energy_pj(16, 8) == op
    assert z.mac_energy_pj(1.58, 16) == 2 * z.energy.lut_mac_pj
    # ASIC 16-bit fixed point: the 8-bit multiplier's 4 passes
    t = load_hardware("tpu_like")
    assert t.mac_energy_pj(16, 16) == 4 * t.energy.mac_int8_pj


def test_ternary_decodes_no_slower_than_two_bit():
    """alveo_u250: ternary weights (1.6 stored bits, 4 LUT MACs per PE) against W2 (2 bits,
    int8 DSP packing): fewer bytes and more MACs per cycle, so never slower."""
    from cosearch.hardware import cost
    from cosearch.space import SearchSpace
    space = SearchSpace.load("multi30k")
    u = load_hardware("alveo_u250")
    for which in ("smallest", "largest"):
        for kb in (1024, 32768):
            a = getattr(space, which)()
            t = cost(space, space.with_bits(a, weight_bits=1.58, act_bits=8), u.with_params(weight_kb=kb), "decode")
            w2 = cost(space, space.with_bits(a, weight_bits=2, act_bits=8), u.with_params(weight_kb=kb), "decode")
            assert t.latency_ms <= w2.latency_ms and t.dram_bytes <= w2.dram_bytes, (which, kb)


def test_clock_and_dram_bandwidth_are_bounded_by_part_and_board():
    z = load_hardware("zcu102")
    assert z.fpga.clock_max_mhz == 300 and z.memory.dram_gbps_max == 19.2
    assert z.fpga_resources()["feasible"]
    assert not z.with_params(clock_mhz=350).fpga_resources()["feasible"]
    assert not z.with_params(dram_gbps=38.4).fpga_resources()["feasible"]
    assert accelerator_space(z).feasible(z.with_params(clock_mhz=300))
    d = _data("tpu_like")
    d["memory"]["dram_gbps_max"] = 34
    t = hardware_from_dict(d)
    assert accelerator_space(t).feasible(t) and not accelerator_space(t).feasible(t.with_params(dram_gbps=68))
