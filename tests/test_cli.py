"""The command line: fast help, one error boundary with exact messages and exit codes, and
bench numbers labelled with their provenance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeopt.cli import main


def _run(*args: str) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    code = (
        "import sys, edgeopt.cli; "
        "heavy = [m for m in ('torch', 'onnxruntime', 'optuna') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("cmd", ["bench", "optimize", "profiles"])
def test_every_subcommand_has_help(cmd: str) -> None:
    result = _run(cmd, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_bench_measures_on_host_and_labels_it(model_files: dict, tiny_data: Path) -> None:
    result = _run(
        "bench", model_files["bundle"], "--data", tiny_data, "--time-budget", "0.5", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (row,) = report["results"]
    assert report["measured"] is True
    for key in ("latency_p50_ms", "latency_p90_ms", "peak_memory_mb", "size_mb", "accuracy"):
        assert row[key]["provenance"] == "measured"
    assert row["latency_p90_ms"]["value"] >= row["latency_p50_ms"]["value"] > 0
    assert "latency_ms" not in row  # schema 2 names the median latency_p50_ms
    assert report["schema_version"] == 2
    # the .pt file the user passed, not the temporary ONNX export bench timed
    assert row["model"] == str(model_files["bundle"])
    assert 0 <= row["accuracy"]["value"] <= 1
    text = _run("bench", model_files["onnx"], "--time-budget", "0.5")
    assert text.exit_code == 0
    assert "measured on this host" in text.output


def test_bench_vs_reports_an_interleaved_ratio(model_files: dict) -> None:
    result = _run(
        "bench",
        model_files["onnx"],
        "--vs",
        model_files["bundle"],
        "--time-budget",
        "0.5",
        "--json",
    )
    assert result.exit_code == 0, result.output
    (cmp,) = json.loads(result.stdout)["comparisons"]
    assert cmp["provenance"] == "measured"
    assert (cmp["a"], cmp["b"]) == (str(model_files["onnx"]), str(model_files["bundle"]))
    # the same network on both sides: the interleaved ratio is close to 1
    assert 0.5 < cmp["ratio"] < 2.0


def test_bench_on_a_profile_is_estimated(model_files: dict) -> None:
    result = _run("bench", model_files["onnx"], "--target", "mobile", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (row,) = report["results"]
    assert report["measured"] is False
    assert row["latency_p50_ms"]["provenance"] == "estimated"
    assert row["energy_mj"]["low"] <= row["energy_mj"]["high"]
    text = _run("bench", model_files["onnx"], "--target", "mobile")
    assert "estimated" in text.output and "assumption:" in text.output


def test_bench_json_names_the_models_as_the_user_passed_them(
    model_files: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # relative paths stay as typed; the .pt input is exported to a temporary ONNX file first
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "net.pt").write_bytes(model_files["bundle"].read_bytes())
    (tmp_path / "m" / "net.onnx").write_bytes(model_files["onnx"].read_bytes())
    monkeypatch.chdir(tmp_path)
    result = _run("bench", "m/net.pt", "--vs", "m/net.onnx", "--target", "mobile", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema_version"] == 2
    assert [r["model"] for r in report["results"]] == ["m/net.pt", "m/net.onnx"]
    (cmp,) = report["comparisons"]
    assert (cmp["a"], cmp["b"]) == ("m/net.pt", "m/net.onnx")
    for row in report["results"]:
        assert row["latency_p50_ms"]["provenance"] == "estimated"
        assert "latency_ms" not in row and "latency_p90_ms" not in row  # the cost model: one


def _wrong_shape_data(tmp_path: Path) -> Path:
    p = tmp_path / "wrong.npz"
    x = np.zeros((4, 3, 8, 8), np.float32)
    y = np.zeros(4, np.int64)
    np.savez(p, x_train=x, y_train=y, x_val=x, y_val=y)
    return p


def _missing_arrays(tmp_path: Path) -> Path:
    p = tmp_path / "partial.npz"
    np.savez(p, x_train=np.zeros((2, 1, 16, 16), np.float32))
    return p


BAD_INPUTS = [
    (lambda f, t: ["bench", t / "nope.pt"], "Error: model file not found"),
    (lambda f, t: ["bench", f["empty"]], "Error: model file is empty"),
    (lambda f, t: ["bench", f["garbage"]], "is not a model edgeopt can read"),
    (lambda f, t: ["bench", f["truncated_onnx"]], "is not a valid ONNX model"),
    (lambda f, t: ["bench", f["pickle"], "--input-shape", "1,16,16"], "full pickled model"),
    (lambda f, t: ["bench", f["state_dict"]], "is a state_dict (weights only)"),
    (
        lambda f, t: [
            "bench",
            f["state_dict"],
            "--arch",
            "edgeopt.zoo:resnet_small",
            "--input-shape",
            "1,16,16",
        ],
        "do not fit architecture edgeopt.zoo:resnet_small",
    ),
    (lambda f, t: ["bench", f["torchscript"], "--input-shape", "a,b"], "invalid input shape"),
    (lambda f, t: ["bench", f["bundle"], "--target", "moblie"], "moblie"),
    (lambda f, t: ["bench", f["bundle"], "--data", t / "none.npz"], "data file not found"),
    (
        lambda f, t: ["bench", f["bundle"], "--data", _wrong_shape_data(t)],
        "data samples have shape (3, 8, 8) but the model expects (1, 16, 16)",
    ),
    (lambda f, t: ["bench", f["bundle"], "--data", _missing_arrays(t)], "lacks arrays"),
    (lambda f, t: ["bench", f["bundle"], "--threads", "0"], "--threads expects positive"),
    (
        lambda f, t: [
            "bench",
            f["state_dict"],
            "--arch",
            "edgeopt.zoo:plain_cnn",
            "--arch-kwargs",
            "{bad",
        ],
        "--arch-kwargs is not valid JSON",
    ),
    (lambda f, t: ["bench", f["pt2_static"]], "fixed batch size"),
    (lambda f, t: ["optimize", f["bundle"], "--objectives", "speed"], "unknown objective(s) speed"),
    (lambda f, t: ["optimize", f["bundle"], "--timeout", "soon"], "invalid duration 'soon'"),
    (lambda f, t: ["optimize", f["bundle"], "--max-accuracy-drop", "2"], "is a fraction"),
    (lambda f, t: ["optimize", f["bundle"], "--target", "fpga,nope"], "nope"),
    (lambda f, t: ["optimize", f["bundle"], "--threads", "two"], "a thread count >= 1 or auto"),
]


@pytest.mark.parametrize(("make_args", "message"), BAD_INPUTS)
def test_bad_input_is_one_clear_error_with_exit_2(
    tmp_path: Path, model_files: dict, make_args: object, message: str
) -> None:
    result = _run(*make_args(model_files, tmp_path))  # type: ignore[operator]
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = _run("--debug", "bench", tmp_path / "nope.pt")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


def test_hint_says_what_to_do(model_files: dict) -> None:
    result = _run("bench", model_files["pickle"], "--input-shape", "1,16,16")
    assert "Hint: if you trust the file, pass --trust-pickle" in result.stderr


@pytest.mark.parametrize("cmd", ["bench", "check", "optimize"])
def test_every_flag_that_runs_code_says_so(cmd: str) -> None:
    text = " ".join(_run(cmd, "--help").output.split())
    assert (
        "--trust-pickle Allow loading a full pickled model, or a .pt2 with pickled payloads "
        "(runs code from the file)." in text
    )
    assert (
        "--trust-arch Build the architecture a bundle records even outside edgeopt.zoo "
        "(imports and runs the module the file names)." in text
    )
