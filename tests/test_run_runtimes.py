"""The search measures each target on its own runtime: a real tiny ``edgeopt optimize`` on
``cpu`` (ONNX Runtime) and ``openvino-host`` (OpenVINO), each trial's candidate converted to
an IR beside its ONNX file, checked for parity, timed against the original's IR and scored
through OpenVINO; a conversion that fails or disagrees fails its trial with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from edgeopt.cli import main
from edgeopt.errors import CandidateError, EdgeoptError
from edgeopt.measure.runtime import size_mb
from edgeopt.measure.service import measure_on_targets
from edgeopt.profiles import load_profile
from edgeopt.profiles.runtime_spec import Runtime
from edgeopt.runtime_child import in_runtime_child
from edgeopt.search.run.setup import finalize
from edgeopt.search.trial.runtimes import check_parity, convert_for_targets

OV = "openvino-host"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, model_files: dict, tiny_data: Path) -> Path:
    """A real 3-trial search on cpu and openvino-host through the command line."""
    out = tmp_path_factory.mktemp("runtimes") / "run"
    args = ["optimize", model_files["bundle"], "--data", tiny_data, "--target", f"cpu,{OV}"]
    args += ["--trials", "3", "--sampler", "random", "--threads", "1", "--out", out]
    args += ["--no-report"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code in (0, 1), result.output
    return out


def _complete(run: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run / 'study.db'}")
    return study.get_trials(states=(TrialState.COMPLETE,))


def _ir_outputs(xml: str) -> np.ndarray:
    """OpenVINO's own compiled model of ``xml`` on zeros (in a runtime child)."""
    import openvino as ov

    compiled = ov.Core().compile_model(xml, "CPU")
    return np.asarray(compiled(np.zeros((1, 1, 16, 16), np.float32))[0])


def test_each_trial_is_measured_on_the_ir_of_its_openvino_target(run_dir: Path) -> None:
    trials = _complete(run_dir)
    assert trials
    original = run_dir / "baseline" / OV / "original.xml"
    assert original.is_file() and original.with_suffix(".bin").is_file()
    for t in trials:
        ms = t.user_attrs["measurements"]
        assert {"host-cpu", OV} <= set(ms), ms.keys()
        latency = ms[OV]["values"]["latency_ms"]
        assert latency["provenance"] == "measured", latency
        entry = t.user_attrs["info"]["target_files"][OV]
        assert entry["runtime"] == "openvino"
        xml, bin_ = (run_dir / f for f in entry["files"])
        assert xml.suffix == ".xml" and xml.is_file() and bin_.is_file()
        assert len(entry["sha256"]) == 2
        assert 0.995 <= entry["agreement"] <= 1.0
        assert 0.0 <= entry["val_accuracy"] <= 1.0
        # the size of the target is its IR's, not the ONNX file's
        assert ms[OV]["values"]["size_mb"]["value"] == pytest.approx(size_mb(xml))
        assert "host-cpu" not in t.user_attrs["info"]["target_files"]
        assert in_runtime_child(_ir_outputs, str(xml)).shape[-1] == 10


def test_a_measured_openvino_target_is_never_timed_on_the_onnx_file(
    model_files: dict,
) -> None:
    with pytest.raises(EdgeoptError, match="no OpenVINO file to time"):
        measure_on_targets(
            Path(model_files["onnx"]),
            [load_profile(OV)],
            input_shape=(1, 1, 16, 16),
            sample=None,
        )


def test_a_conversion_that_disagrees_fails_naming_the_agreement(
    tmp_path: Path, model_files: dict
) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(Path(model_files["onnx"]).read_bytes())
    x = np.random.default_rng(0).standard_normal((16, 1, 16, 16)).astype(np.float32)
    with pytest.raises(CandidateError) as caught:
        convert_for_targets(
            onnx, [load_profile(OV)], x, threads=1, min_agreement={Runtime.OPENVINO: 1.01}
        )
    assert caught.value.stage == f"convert:{OV}"
    assert "agrees with the ONNX candidate on 100.00% of 16" in caught.value.reason
    xml = tmp_path / "model.xml"
    assert check_parity(onnx, xml, x, target=OV, min_agreement=0.995, threads=1) == 1.0


def test_a_model_the_converter_rejects_fails_in_its_convert_stage(tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not an onnx model")
    x = np.zeros((2, 1, 16, 16), np.float32)
    with pytest.raises(CandidateError) as caught:
        convert_for_targets(onnx, [load_profile("cpu"), load_profile(OV)], x, threads=1)
    assert caught.value.stage == f"convert:{OV}"
    assert caught.value.reason.startswith("converting to OpenVINO failed:")


def test_the_final_pass_scores_and_times_each_target_on_its_file(
    run_dir: Path, tmp_path: Path
) -> None:
    final = json.loads((run_dir / "final.json").read_text())
    front = set(final["test_accuracy"])
    assert front and set(final["target_test_accuracy"]) == front
    assert all(0.0 <= v[OV] <= 1.0 for v in final["target_test_accuracy"].values())
    assert set(final["final_latency"][OV]["trials"]) == front
    # without a trial's IR the re-timing on openvino-host cannot time it (it never falls
    # back to the ONNX file), while host-cpu still times its ONNX file
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    gone = sorted(front)[0]
    (copy / "trials" / gone / "model.xml").unlink()
    again = finalize(copy)["final_latency"]
    assert f"no file for {OV}" in again[OV]["missing"][gone]
    assert gone not in again[OV]["trials"] and gone in again["host-cpu"]["trials"]


def test_export_copies_the_ir_the_search_timed(run_dir: Path, tmp_path: Path) -> None:
    number = _complete(run_dir)[0].number
    out = tmp_path / "release" / "m.xml"
    args = ["export", run_dir, "--trial", number, "--format", "openvino", "--out", out]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    searched = run_dir / "trials" / str(number) / "model.xml"
    assert out.read_bytes() == searched.read_bytes()
    assert out.with_suffix(".bin").read_bytes() == searched.with_suffix(".bin").read_bytes()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["conversion"]["from_search"] == f"trials/{number}/model.xml"
    assert meta["conversion"]["target"] == OV
