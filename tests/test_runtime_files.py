"""``edgeopt bench``/``check`` on the files a target's runtime loads (``.ort``, OpenVINO
``.xml``): timed and scored in that runtime, refused with a one-line error on a target that
runs another one, and an ONNX model converted for a measured OpenVINO target; ``optimize``
refuses a runtime's file as input and a measured target of a runtime it cannot convert to."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from edgeopt.cli import main
from edgeopt.export.convert import convert
from edgeopt.profiles.runtime_spec import Runtime


def _run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def files(model_files: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny ONNX model as OpenVINO IR and as ORT format (its source ONNX beside it)."""
    d = tmp_path_factory.mktemp("runtime_files")
    onnx_path = d / "model.onnx"
    shutil.copyfile(model_files["onnx"], onnx_path)
    return {
        "onnx": onnx_path,
        "xml": convert(onnx_path, Runtime.OPENVINO, d / "model.xml").path,
        "ort": convert(onnx_path, Runtime.ORT_FORMAT, d / "model.ort").path,
    }


def test_bench_times_and_scores_an_openvino_ir_in_openvino(
    files: dict[str, Path], tiny_data: Path
) -> None:
    r = _run(
        "bench", files["xml"], "--target", "openvino-host", "--data", tiny_data,
        "--time-budget", "0.5", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["runtime"] == "openvino" and report["measured"] is True
    (row,) = report["results"]
    assert row["model"] == str(files["xml"])
    assert row["latency_p50_ms"]["provenance"] == "measured"
    assert row["latency_p50_ms"]["value"] > 0
    both = files["xml"].stat().st_size + files["xml"].with_suffix(".bin").stat().st_size
    assert row["size_mb"]["value"] == pytest.approx(both / 2**20)
    onnx = json.loads(_run("bench", files["onnx"], "--data", tiny_data, "--time-budget", "0.5",
                           "--json").stdout)  # fmt: skip
    assert row["accuracy"]["value"] == onnx["results"][0]["accuracy"]["value"]
    assert report["host"].endswith(f"openvino {version('openvino')}")  # not ORT's
    text = _run("bench", files["xml"], "--target", "openvino", "--data", tiny_data,
                "--time-budget", "0.5")  # fmt: skip
    assert text.exit_code == 0, text.output
    assert "measured on this host (OpenVINO CPU, batch 1" in text.output
    assert "accuracy: measured on this host (OpenVINO CPU) on the" in text.output
    assert "onnxruntime" not in text.output and "ORT CPU" not in text.output


def test_an_onnx_model_is_converted_for_an_openvino_target(files: dict[str, Path]) -> None:
    r = _run("bench", files["onnx"], "--target", "openvino-host", "--time-budget", "0.5", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["runtime"] == "openvino"
    assert report["results"][0]["model"] == str(files["onnx"])


def test_a_runtime_file_on_a_target_of_another_runtime_is_refused(
    files: dict[str, Path],
) -> None:
    r = _run("bench", files["xml"], "--target", "cpu")
    assert r.exit_code == 2, r.output
    assert r.stderr.splitlines()[0] == (
        f"Error: {files['xml']} runs on OpenVINO, but --target host-cpu runs ONNX Runtime"
    )
    assert "--target openvino-host" in r.stderr
    r = _run("bench", files["ort"], "--target", "openvino")
    assert r.exit_code == 2, r.output
    assert "runs on ORT Mobile (.ort format), but --target openvino-host runs OpenVINO" in (
        r.stderr
    )
    assert "--target mobile-" in r.stderr


def test_an_ir_without_its_bin_is_a_one_line_error(files: dict[str, Path], tmp_path: Path) -> None:
    lone = tmp_path / "lone.xml"
    shutil.copyfile(files["xml"], lone)
    r = _run("bench", lone, "--target", "openvino-host")
    assert r.exit_code == 2, r.output
    assert r.stderr.splitlines()[0] == f"Error: {lone}: its weights file lone.bin is not beside it"


def test_check_estimates_an_ort_file_on_a_phone_from_its_source_onnx(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".git").mkdir()  # the config search stops here
    monkeypatch.chdir(tmp_path)
    r = _run("check", files["ort"], "--target", "mobile", "--max-latency-ms", "1000",
             "--max-size-mb", "1")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "PASS" in r.stdout and "estimated" in r.stdout
    bench = json.loads(_run("bench", files["ort"], "--target", "mobile", "--json").stdout)
    (row,) = bench["results"]
    # estimated on the source ONNX; the size is the .ort file's own
    assert row["latency_p50_ms"]["provenance"] == "estimated"
    assert row["size_mb"] == {"value": files["ort"].stat().st_size / 2**20,
                              "provenance": "measured"}  # fmt: skip
    alone = tmp_path / "alone.ort"
    shutil.copyfile(files["ort"], alone)
    r = _run("check", alone, "--target", "mobile", "--max-latency-ms", "1000")
    assert r.exit_code == 2, r.output
    assert (
        "cannot be estimated: the cost model reads ONNX and TFLite graphs, and no alone.onnx"
        in r.stderr
    )


def test_optimize_refuses_runtime_files_and_runtimes_it_cannot_convert_to(
    files: dict[str, Path], tiny_data: Path, tmp_path: Path
) -> None:
    r = _run("optimize", files["xml"], "--data", tiny_data, "--out", tmp_path / "a")
    assert r.exit_code == 2, r.output
    assert "is a runtime's file (openvino): optimize starts from the trained model" in r.stderr
    # a measured target of a runtime edgeopt cannot convert to here (openvino-host is searched:
    # tests/test_run_runtimes.py)
    text = (Path(__file__).resolve().parents[1] / "profiles" / "openvino-host.toml").read_text()
    board = tmp_path / "trt-board.toml"
    board.write_text(
        text.replace('name = "openvino-host"', 'name = "trt-board"')
        .replace('aliases = ["openvino"]', "aliases = []")
        .replace('name = "openvino"', 'name = "tensorrt"')
    )
    r = _run("optimize", files["onnx"], "--data", tiny_data, "--target", board,
             "--out", tmp_path / "b")  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "converting to TensorRT" in r.stderr and "is not supported yet" in r.stderr
    assert not (tmp_path / "b" / "study.db").exists()
    # a measured LiteRT target: its converter reads the torch model (tests/test_run_runtimes.py)


def test_a_measured_target_whose_runtime_is_not_installed_names_its_extra(
    files: dict[str, Path], tmp_path: Path
) -> None:
    # [dev] installs every runtime edgeopt converts to: a process where ai_edge_litert cannot
    # be imported stands for a machine without the [litert] extra
    text = (Path(__file__).resolve().parents[1] / "profiles" / "openvino-host.toml").read_text()
    board = tmp_path / "litert-board.toml"
    board.write_text(
        text.replace('name = "openvino-host"', 'name = "litert-board"')
        .replace('aliases = ["openvino"]', "aliases = []")
        .replace('name = "openvino"', 'name = "litert"')
        .replace('precision_hint = "f32"', "")
    )
    without = (
        "import sys; sys.modules['ai_edge_litert'] = None; from edgeopt.cli import main; main()"
    )
    r = subprocess.run(
        [sys.executable, "-c", without, "bench", str(files["onnx"]), "--target", str(board)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [
        "Error: LiteRT is not installed here (no module ai_edge_litert)",
        "Hint: pip install 'edgeopt[litert]'",
    ]
