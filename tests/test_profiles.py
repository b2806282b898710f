"""Hardware profiles: the strict loader, shipped profiles, aliases and the ``profiles`` CLI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

import edgeopt
from edgeopt.cli import main
from edgeopt.errors import ConfigError
from edgeopt.profiles import (
    HardwareProfile,
    TargetKind,
    Targets,
    list_profiles,
    load_profile,
    merge_profiles,
    shipped_profile_dir,
    validate_profile_file,
)

DATA = Path(__file__).parent / "data" / "profiles"
ARITH = DATA / "arith.toml"


def _write(tmp_path: Path, text: str, old: str, new: str) -> Path:
    assert old in text, old
    p = tmp_path / "x.toml"
    p.write_text(text.replace(old, new, 1))
    return p


def test_every_shipped_profile_loads_with_sources() -> None:
    profiles = list_profiles()
    assert len(profiles) >= 8
    for p in profiles:
        assert isinstance(p, HardwareProfile)
        assert p.source_path is not None and p.source_path.suffix == ".toml"
        assert p.units, p.name
        assert p.sources, f"{p.name}: no [sources]"
        # Every number is either sourced or explicitly an assumption.
        assert p.unstated == [], f"{p.name}: numbers without a source: {p.unstated}"
        if p.quantization.int8_only:
            assert p.quantization.modes == ("int8_static",)
    measured = [p.name for p in profiles if p.measured]
    # all on this host, each on its runtime
    assert measured == ["host-cpu", "litert-host", "openvino-host"]


@pytest.mark.parametrize(
    ("alias", "name", "kind"),
    [
        ("cpu", "host-cpu", TargetKind.CPU),
        ("server", "server-x86-zen5-2vcpu", TargetKind.CPU),
        ("mobile", "mobile-sd8gen2", TargetKind.MOBILE),
        ("mobile-mid", "mobile-sd855", TargetKind.MOBILE),
        ("gpu", "jetson-orin-nano-8gb", TargetKind.GPU),
        ("fpga", "fpga-zcu104-dpu", TargetKind.FPGA),
        ("edgetpu", "coral-edgetpu-usb", TargetKind.NPU),
        ("mcu", "mcu-stm32f746", TargetKind.MCU),
    ],
)
def test_aliases_resolve(alias: str, name: str, kind: TargetKind) -> None:
    p = load_profile(alias)
    assert (p.name, p.kind) == (name, kind)
    assert load_profile(name) == p


def test_target_support_narrows_search() -> None:
    fpga = load_profile("fpga")
    assert fpga.quantization.int8_only and fpga.quantization.modes == ("int8_static",)
    assert fpga.pruning.channel_multiple == 16
    assert fpga.units[0].fallback == "cpu" and fpga.units[0].supported_ops is not None
    cpu = load_profile("cpu")
    assert cpu.measured and cpu.quantization.activation_type == "uint8"
    assert cpu.quantization.supports("int8_dynamic")
    mcu = load_profile("mcu")
    assert mcu.memory is not None and mcu.memory.weights_in == "flash"
    assert mcu.memory.sram_bytes == 327680


def test_path_loads_user_profile() -> None:
    p = load_profile(str(ARITH))
    assert p.name == "arith-cpu" and p.source_path == ARITH.resolve()
    u = p.units[0]
    assert u.eff("int8", "dense_conv") == 0.25
    assert u.eff("int8", "gemm") == 0.5  # falls back to the default table
    assert u.eff("fp32", "dense_conv") == 0.5
    assert p.assumptions == ["runtime.invoke_overhead_us"]


def test_a_source_checkout_reads_its_own_profiles() -> None:
    # a git worktree run with PYTHONPATH=worktree beside an editable install of another
    # checkout: the profiles are the worktree's, like its code
    checkout = Path(edgeopt.__file__).resolve().parents[1]
    assert shipped_profile_dir().resolve() == (checkout / "profiles").resolve()


def test_shipped_profiles_come_from_one_folder() -> None:
    folder = shipped_profile_dir()
    assert sorted(p.name for p in folder.glob("*.toml")) == sorted(
        p.source_path.name for p in list_profiles() if p.source_path is not None
    )
    assert all(
        p.source_path is not None and p.source_path.parent == folder.resolve()
        for p in list_profiles()
    )


def test_merged_targets_keep_what_all_can_run() -> None:
    cpu, mcu, fpga = load_profile("cpu"), load_profile("mcu"), load_profile("fpga")
    assert merge_profiles([cpu]) is cpu
    both = merge_profiles([cpu, mcu])
    assert both.name == "host-cpu+mcu-stm32f746"
    assert both.quantization.modes == ("fp32", "int8_static")
    assert both.pruning.channel_multiple == 8  # lcm(8, 4)
    assert both.units == cpu.units  # the first profile's numbers
    three = merge_profiles([cpu, mcu, fpga])
    assert three.quantization.modes == ("int8_static",) and three.quantization.int8_only
    assert three.pruning.channel_multiple == 16
    fp32_only = replace(mcu, quantization=replace(mcu.quantization, modes=("fp32",)))
    with pytest.raises(ConfigError, match="share no model format"):
        merge_profiles([fpga, fp32_only])
    with pytest.raises(ConfigError, match="no target given"):
        merge_profiles([])


def test_one_int8_flavour_per_search_the_first_targets() -> None:
    cpu, mobile, jetson = load_profile("cpu"), load_profile("mobile"), load_profile("jetson")
    merged = merge_profiles([mobile, cpu, jetson]).quantization
    assert (merged.activation_type, merged.weight_type) == ("uint8", "uint8")
    note = Targets((mobile, cpu, jetson)).flavour_note
    assert note is not None
    assert "quantized for mobile-sd8gen2 (uint8 activations, uint8 weights)" in note
    assert (
        "host-cpu (uint8 activations, int8 weights), jetson-orin-nano-8gb (int8 symmetric "
        "activations, int8 weights) want another flavour"
    ) in note
    jet = merge_profiles([jetson, cpu]).quantization
    assert (jet.activation_type, jet.activation_symmetric) == ("int8", True)
    assert Targets((cpu, load_profile("server"))).flavour_note is None  # both x86 u8/s8
    assert Targets((mobile,)).flavour_note is None


def test_unknown_profile_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as exc:
        load_profile("mobil")
    msg = str(exc.value)
    assert "unknown profile 'mobil'" in msg and "did you mean 'mobile'" in msg
    for name in ("cpu", "fpga", "mcu", "host-cpu"):
        assert name in msg


def test_typo_names_key_and_suggests() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_profile_file(DATA / "typo.toml")
    msg = str(exc.value)
    assert "typo.toml" in msg
    assert "units.cpu.bandwith_gbs" in msg
    assert "unknown key 'bandwith_gbs' (did you mean 'bandwidth_gbs'?)" in msg


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "peak_gops_int8 = 400.0",
            'peak_gops_int8 = "fast"',
            "units.cpu.peak_gops_int8: expected a positive number (1e9 ops/s), got 'fast'",
        ),
        (
            "bandwidth_gbs = 10.0",
            'bandwidth_gbs = "10 GB/s"',
            "units.cpu.bandwidth_gbs: expected a positive number (GB/s), got '10 GB/s'",
        ),
        ("dense_conv = 0.5", "dense_conv = 50", "units.cpu.efficiency.dense_conv: expected a"),
        ("threads = 1", "threads = 1.5", "profile.threads: expected a positive integer"),
        ('kind = "cpu"\ndesc', 'kind = "phone"\ndesc', "profile.kind: expected one of"),
        ("pj_per_byte = 10.0\n", "\n", "energy.pj_per_byte: missing required key"),
        (
            'modes = ["fp32", "int8_static"]',
            'modes = ["fp32", "int4"]',
            "quantization.modes: expected a list drawn from",
        ),
        (
            'invoke_overhead_us = { v = 10.0, kind = "assumption" }',
            'invoke_overhead_us = { v = 10.0, kind = "guess" }',
            "runtime.invoke_overhead_us.kind: expected one of",
        ),
        (
            'invoke_overhead_us = { v = 10.0, kind = "assumption" }',
            'invoke_overhead_us = { v = 10.0, kind = "datasheet", src = "S9" }',
            "runtime.invoke_overhead_us.src: 'S9' is not a key of [sources]",
        ),
        ("[units.cpu.power]", "[units.cpu.powr]", "unknown key 'powr' (did you mean 'power'?)"),
        ('weight_type = "int8"', 'weight_type = "int4"', 'expected "uint8" or "int8"'),
        (
            'activation_type = "uint8"\nweight_type = "int8"',
            'activation_type = "int8"\nweight_type = "uint8"',
            "quantization: int8 activations with uint8 weights is not an ONNX Runtime flavour",
        ),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    path = _write(tmp_path, ARITH.read_text(), old, new)
    with pytest.raises(ConfigError) as exc:
        validate_profile_file(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert expected in str(exc.value)


def test_fallback_must_name_a_unit(tmp_path: Path) -> None:
    text = (DATA / "arith-fpga.toml").read_text()
    path = _write(tmp_path, text, 'fallback = "cpu"', 'fallback = "cpuu"')
    with pytest.raises(ConfigError, match=r"units\.acc\.fallback: expected the id of another"):
        validate_profile_file(path)


def test_unknown_op_name_suggests(tmp_path: Path) -> None:
    text = (DATA / "arith-fpga.toml").read_text()
    path = _write(tmp_path, text, '"Relu", "Add"]', '"Rleu", "Add"]')
    with pytest.raises(ConfigError, match=r"'Rleu' is not an ONNX operator \(did you mean 'Relu'"):
        validate_profile_file(path)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("schema = \n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        validate_profile_file(bad)
    with pytest.raises(ConfigError, match="not found"):
        validate_profile_file(tmp_path / "none.toml")


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_list_and_show() -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["profiles", "list"])
    assert r.exit_code == 0, r.output
    assert "host-cpu" in r.output and "measured (this host)" in r.output
    assert "fpga-zcu104-dpu" in r.output and "estimated" in r.output
    r = runner.invoke(main, ["profiles", "show", "fpga"])
    assert r.exit_code == 0, r.output
    assert "estimated (profile fpga-zcu104-dpu)" in r.output
    assert "int8 only" in r.output and "falls back to cpu" in r.output
    assert "[datasheet, S20]" in r.output
    r = runner.invoke(main, ["profiles", "show", "cpu"])
    assert r.exit_code == 0 and "measured (this host)" in r.output


def test_cli_errors_exit_2() -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["profiles", "show", "nope"])
    assert r.exit_code == 2
    assert "Error: unknown profile 'nope'" in r.output
    r = runner.invoke(main, ["profiles", "validate", str(DATA / "typo.toml")])
    assert r.exit_code == 2
    assert "did you mean 'bandwidth_gbs'" in r.output


def test_cli_validate_ok() -> None:
    r = CliRunner().invoke(main, ["profiles", "validate", str(ARITH)])
    assert r.exit_code == 0, r.output
    assert "OK (arith-cpu" in r.output


def test_calibrated_host_profile_renders_valid(tmp_path: Path) -> None:
    from edgeopt.measure.calibrate import CalibrationResult, render_host_toml

    r = CalibrationResult(
        peak_gops={"fp32": 110.0, "int8": 300.0},
        efficiency={
            "fp32": {
                "dense_conv": 1.0,
                "pointwise_conv": 0.9,
                "depthwise_conv": 0.4,
                "gemm": 0.3,
                "quantize": 0.03,
            },
            "int8": {"dense_conv": 0.9, "pointwise_conv": 0.8, "depthwise_conv": 0.1, "gemm": 0.1},
        },
        bandwidth_gbs=40.0,
        kernel_overhead_us=0.8,
        invoke_overhead_us=5.0,
        machine="Test CPU, 2 logical cores",
        kernel_overhead_us_int8=2.0,
        kendall_tau=0.9,
        median_rel_error=0.1,
        n_models=12,
    )
    path = tmp_path / "host.toml"
    path.write_text(render_host_toml(load_profile("cpu"), r, "edgeopt profiles calibrate"))
    p = validate_profile_file(path)
    u = p.units[0]
    assert p.measured and p.calibrated and p.unstated == []
    assert u.peak_gops == {"fp32": 110.0, "int8": 300.0}
    assert (u.kernel_overhead_us, u.kernel_overhead_us_int8) == (0.8, 2.0)
    assert u.eff("int8", "depthwise_conv") == 0.1
    assert u.eff("int8", "quantize") == 0.03  # optional class, from the default table
    assert p.calibration is not None and p.calibration.n_models == 12


def test_calibration_times_models_with_the_shared_timer(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from edgeopt.measure.calibrate import time_models

    paths = []
    for op in ("Relu", "Sigmoid"):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])
        graph = helper.make_graph([helper.make_node(op, ["x"], ["y"])], op, [x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, tmp_path / f"{op}.onnx")
        paths.append(tmp_path / f"{op}.onnx")
    feed = np.ones((1, 64), np.float32)
    times = time_models([(p, feed) for p in paths], threads=1, rounds=2)
    assert len(times) == 2 and all(0 < t < 50 for t in times)
