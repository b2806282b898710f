"""The runtime a profile names (``[runtime] name``): the table of runtimes, the profile key,
its default for files written before it, and a typo's error."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeopt.cli import main
from edgeopt.errors import ConfigError
from edgeopt.profiles import list_profiles, load_profile, validate_profile_file
from edgeopt.profiles.runtime_spec import (
    FORMATS,
    RUNTIMES,
    Runtime,
    convertible,
    runtime_of_file,
)

HOST = Path(__file__).resolve().parents[1] / "profiles" / "host-cpu.toml"


def _with_runtime(tmp_path: Path, lines: str) -> Path:
    text = HOST.read_text()
    assert "[runtime]\n" in text
    p = tmp_path / "board.toml"
    p.write_text(text.replace("[runtime]\n", f"[runtime]\n{lines}\n", 1))
    return p


def test_the_table_names_every_runtime_once_with_its_files() -> None:
    assert set(RUNTIMES) == set(Runtime)
    assert {r: k.runtime for r, k in RUNTIMES.items()} == {r: r for r in Runtime}
    assert FORMATS == {"onnx": "ort", "ort": "ort-format", "tflite": "litert",
                       "openvino": "openvino", "tensorrt": "tensorrt"}  # fmt: skip
    assert RUNTIMES[Runtime.OPENVINO].suffixes == (".xml", ".bin")
    assert RUNTIMES[Runtime.OPENVINO].extra == "openvino"
    assert runtime_of_file("a/model.XML") == Runtime.OPENVINO
    assert runtime_of_file("m.ort") == Runtime.ORT_FORMAT
    assert runtime_of_file("m.onnx") == Runtime.ORT
    assert runtime_of_file("m.pt") is None


def test_runtimes_edgeopt_cannot_convert_to_say_so() -> None:
    assert convertible(Runtime.OPENVINO).format == "openvino"
    # LiteRT converts, from the torch model (litert-torch), not from ONNX
    assert convertible(Runtime.LITERT).needs_torch
    assert runtime_of_file("m.tflite") == Runtime.LITERT
    with pytest.raises(ConfigError, match="not supported yet") as e:
        convertible(Runtime.TENSORRT)
    assert "not installable here" in str(e.value)


def test_a_profile_without_a_runtime_name_runs_ort(tmp_path: Path) -> None:
    p = validate_profile_file(_with_runtime(tmp_path, ""))
    assert p.runtime is not None
    assert p.runtime.name == Runtime.ORT and p.runtime_name == Runtime.ORT
    assert p.runtime.precision_hint == "f32"


def test_a_profile_names_its_runtime_and_precision_hint(tmp_path: Path) -> None:
    p = validate_profile_file(_with_runtime(tmp_path, 'name = "openvino"\nprecision_hint = "bf16"'))
    assert p.runtime_name == Runtime.OPENVINO
    assert p.runtime is not None and p.runtime.precision_hint == "bf16"


def test_a_misspelt_runtime_is_refused_with_did_you_mean(tmp_path: Path) -> None:
    path = _with_runtime(tmp_path, 'name = "openvno"')
    with pytest.raises(ConfigError, match="runtime.name: unknown runtime 'openvno'") as e:
        validate_profile_file(path)
    assert "did you mean 'openvino'?" in str(e.value)
    r = CliRunner().invoke(main, ["profiles", "validate", str(path)])
    assert r.exit_code == 2, r.output
    assert "did you mean 'openvino'?" in r.stderr


def test_a_litert_profile_may_ask_for_int8_inputs_and_outputs(tmp_path: Path) -> None:
    p = validate_profile_file(_with_runtime(tmp_path, 'name = "litert"\nio_type = "int8"'))
    assert p.runtime is not None and p.runtime.io_type == "int8"
    assert validate_profile_file(_with_runtime(tmp_path, 'name = "litert"')).runtime.io_type is None
    with pytest.raises(ConfigError, match="runtime.io_type: expected one of int8"):
        validate_profile_file(_with_runtime(tmp_path, 'name = "litert"\nio_type = "int16"'))
    with pytest.raises(ConfigError, match="only a LiteRT runtime sets the file's input/output"):
        validate_profile_file(_with_runtime(tmp_path, 'name = "openvino"\nio_type = "int8"'))


def test_a_bad_precision_hint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="runtime.precision_hint: expected one of f32"):
        validate_profile_file(_with_runtime(tmp_path, 'precision_hint = "fp32"'))


def test_shipped_profiles_name_the_runtime_their_device_runs() -> None:
    names = {p.name: p.runtime_name for p in list_profiles()}
    assert names["host-cpu"] == Runtime.ORT
    assert {n: r for n, r in names.items() if n.startswith("mobile-")} == {
        "mobile-sd855": Runtime.ORT_FORMAT,
        "mobile-sd8gen2": Runtime.ORT_FORMAT,
    }
    ov = load_profile("openvino")
    assert ov.name == "openvino-host" and ov.runtime_name == Runtime.OPENVINO
    assert ov.measured and ov.threads == 1 and ov.kind.value == "cpu"
    assert ov.runtime is not None and ov.runtime.precision_hint == "f32"
    lite = load_profile("litert")
    assert lite.name == "litert-host" and lite.runtime_name == Runtime.LITERT
    assert lite.measured and lite.threads == 1 and lite.kind.value == "cpu"
    assert lite.runtime is not None and lite.runtime.io_type is None
    for device in ("edgetpu", "mcu"):  # full-integer int8 TFLite, estimated
        p = load_profile(device)
        assert p.runtime_name == Runtime.LITERT and not p.measured
        assert p.runtime is not None and p.runtime.io_type == "int8"


def test_profiles_show_names_the_runtime() -> None:
    r = CliRunner().invoke(main, ["profiles", "show", "openvino"])
    assert r.exit_code == 0, r.output
    assert "  runtime: openvino (precision f32), partition multi" in r.output
    r = CliRunner().invoke(main, ["profiles", "show", "mobile"])
    assert "  runtime: ort-format, partition multi" in r.output
    r = CliRunner().invoke(main, ["profiles", "show", "edgetpu"])
    assert "  runtime: litert (full-integer, int8 inputs and outputs), partition" in r.output
