"""``edgeopt export --format``: a trial's ONNX converted on the spot into the file a target's
runtime loads (ORT Mobile ``.ort`` for the run's phone target, OpenVINO IR), written beside the
ONNX file with the sidecar naming the runtime; on a real tiny run (``onnx_run``: target
mobile)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from edgeopt.cli import main
from edgeopt.measure.accuracy import onnx_logits

X = np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32)


def _run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _same_outputs(a: Path, b: Path) -> float:
    return float(np.abs(onnx_logits(a, X, threads=1) - onnx_logits(b, X, threads=1)).max())


def test_format_ort_writes_the_phone_file_beside_its_onnx(
    onnx_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "rel" / "m.ort"
    r = _run("export", onnx_run, "--trial", "0", "--format", "ort", "--out", out)
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == ["m.json", "m.onnx", "m.ort", "m.required_operators.config"]
    meta = json.loads((out.parent / "m.json").read_text())
    assert meta["runtime"] == "ort-format"
    assert meta["artifact"] == ["m.ort", "m.required_operators.config"]
    assert meta["conversion"]["target"] == "mobile-sd8gen2"
    assert meta["conversion"]["target_platform"] == "arm"  # the run's target is a phone
    assert _same_outputs(out, out.with_suffix(".onnx")) < 1e-5
    assert f"model: {out} + " in r.output and "ORT Mobile" in r.output
    # the exported pair is what check estimates for the phone
    (tmp_path / ".git").mkdir()  # the config search stops here
    monkeypatch.chdir(tmp_path)
    chk = _run("check", out, "--target", "mobile", "--max-size-mb", "1")
    assert chk.exit_code == 0, chk.output


def test_format_auto_is_the_first_targets_and_must_match_out(
    onnx_run: Path, tmp_path: Path
) -> None:
    bad = _run("export", onnx_run, "--trial", "0", "--format", "auto", "--out", tmp_path / "a.onnx")
    assert bad.exit_code == 2, bad.output
    assert bad.stderr.splitlines()[0] == (
        f"Error: --format auto (ort, for mobile-sd8gen2) writes a .ort file, but --out "
        f"{tmp_path / 'a.onnx'} names a .onnx"
    )
    assert f"--out {tmp_path / 'a.ort'}" in bad.stderr
    assert list(tmp_path.iterdir()) == []
    ok = _run("export", onnx_run, "--trial", "0", "--format", "auto", "--out", tmp_path / "a.ort")
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "a.json").read_text())["runtime"] == "ort-format"


def test_format_openvino_writes_ir_that_gives_the_onnx_outputs(
    onnx_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ov" / "m.xml"
    r = _run("export", onnx_run, "--trial", "0", "--format", "openvino", "--out", out)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.bin", "m.json", "m.onnx", "m.xml"]
    meta = json.loads((out.parent / "m.json").read_text())
    assert meta["runtime"] == "openvino" and meta["conversion"]["fp16_weights"] is False
    assert _same_outputs(out, out.with_suffix(".onnx")) < 1e-4
    # without --format, the suffix of --out says which file to write
    again = _run("export", onnx_run, "--trial", "0", "--out", tmp_path / "by_suffix" / "m.xml")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "by_suffix" / "m.bin").is_file()


def test_plain_onnx_export_is_unchanged_but_records_its_runtime(
    onnx_run: Path, tmp_path: Path
) -> None:
    r = _run("export", onnx_run, "--trial", "0", "--out", tmp_path / "m.onnx")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]
    assert json.loads((tmp_path / "m.json").read_text())["runtime"] == "ort"


def test_formats_edgeopt_cannot_write_are_refused(onnx_run: Path, tmp_path: Path) -> None:
    r = _run("export", onnx_run, "--trial", "0", "--format", "tensorrt", "--out", tmp_path / "m.x")
    assert r.exit_code == 2, r.output
    assert "Invalid value for '--format'" in r.output


@pytest.mark.parametrize("how", [("--format", "tflite"), ()])
def test_tflite_export_of_a_run_that_made_no_tflite_is_refused(
    how: tuple[str, ...], onnx_run: Path, tmp_path: Path
) -> None:
    # a run without a LiteRT target made no .tflite, and a run keeps no torch model
    r = _run("export", onnx_run, "--trial", "0", *how, "--out", tmp_path / "m.tflite")
    assert r.exit_code == 2, r.output
    assert r.stderr.splitlines()[0] == (
        "Error: --format tflite: trial 0 has no .tflite file from the search here (its run "
        "searched no LiteRT target; LiteRT files are converted from the torch model, which a "
        "run does not keep)"
    )
    assert not list(tmp_path.iterdir())
