"""What a LiteRT target's converter reads from a trial: the pipeline hands back the candidate's
final torch module (pruned, on the CPU; a QAT one without its fake quantization, which
litert-torch cannot read) and its quantize step's calibration inputs, even where
the torch phase is cached (a cache entry keeps no module); and the LiteRT quantization mode
follows the candidate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeopt.candidate import Candidate
from edgeopt.cli import main
from edgeopt.loading import ModelSpec, load_spec
from edgeopt.pipeline import PipelineInputs, build
from edgeopt.profiles import load_profile
from edgeopt.search.trial.runtimes import TorchCandidate, convert_for_targets, litert_mode
from edgeopt.stages.quantize_config import QuantizeConfig

PRUNED = {"prune": {"ratio": 0.5}, "quantize": {"mode": "int8_static", "calibration_samples": 12}}


def test_the_pruned_module_comes_back_on_a_cached_torch_phase(
    model_files: dict, tmp_path: Path
) -> None:
    inputs = PipelineInputs(
        model=load_spec(ModelSpec(path=str(model_files["bundle_wide"]))),
        data=None,
        profile=load_profile("cpu"),
        seed=0,
        cache_dir=tmp_path / "cache",
        salt="s",
    )
    candidate = Candidate.from_dict(PRUNED)
    first = build(candidate, inputs, tmp_path / "t0")
    assert first.module is None and first.calibration is None  # nothing kept unless asked
    again = build(candidate, inputs, tmp_path / "t1", keep_module=True)
    assert not again.cache_hit  # the entry has no module: the torch phase ran
    assert isinstance(again.module, torch.nn.Module)
    assert next(again.module.parameters()).device.type == "cpu"
    widths = [m.out_channels for m in again.module.modules() if isinstance(m, torch.nn.Conv2d)]
    original = [
        m.out_channels for m in inputs.model.module.modules() if isinstance(m, torch.nn.Conv2d)
    ]
    assert sum(widths) < sum(original)  # the pruned module, not the original
    assert again.calibration is not None and again.calibration.shape == (12, 1, 16, 16)
    assert again.calibration.dtype == np.float32
    assert not (tmp_path / "t1" / "fp32.onnx").exists()  # its own export copy is gone
    assert build(candidate, inputs, tmp_path / "t2").cache_hit  # the entry still serves


@pytest.mark.parametrize(
    ("mode", "litert"),
    [
        ("int8_static", "int8_static"),
        ("ort_default", "int8_static"),
        ("int8_dynamic", "int8_dynamic"),
        ("fp16", "fp32"),
        ("fp32", "fp32"),
    ],
)
def test_the_litert_mode_follows_the_candidates_quantize_step(mode: str, litert: str) -> None:
    assert litert_mode(Candidate.from_dict({"quantize": {"mode": mode}})) == litert
    assert QuantizeConfig().calibration_samples == 128  # what a float candidate calibrates on


def test_a_measured_litert_target_on_an_onnx_model_is_refused_before_any_work(
    model_files: dict, tiny_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["optimize", model_files["onnx"], "--data", tiny_data, "--target", "litert-host"]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--out", out]])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[0] == (
        f"Error: --target litert-host: LiteRT files are converted from the torch model, and "
        f"{model_files['onnx']} is an ONNX file"
    )
    assert not (out / "study.db").exists()


def test_a_qat_candidate_converts_to_litert_from_its_float_weights(
    model_files: dict, tmp_path: Path
) -> None:
    model = load_spec(ModelSpec(path=str(model_files["bundle"])))
    inputs = PipelineInputs(
        model=model,
        data=None,
        profile=load_profile("cpu"),
        seed=0,
        cache_dir=tmp_path / "cache",
        salt="s",
    )
    qat = {"qat": {"epochs": 1}, "quantize": {"mode": "int8_static", "calibration_samples": 16}}
    candidate = Candidate.from_dict(qat)
    built = build(candidate, inputs, tmp_path / "t", keep_module=True)
    lite = TorchCandidate(
        built.module, tuple(model.input_shape), built.calibration, litert_mode(candidate)
    )
    x = np.random.default_rng(0).standard_normal((32, *model.input_shape)).astype(np.float32)
    files = convert_for_targets(
        built.onnx_path, [load_profile("litert-host")], x, threads=1, torch=lite
    )
    entry = files["litert-host"]
    assert entry["conversion"]["quant_mode"] == "int8_static"
    assert entry["agreement"] >= 0.97
