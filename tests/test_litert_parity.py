"""A quantized LiteRT file is ai-edge-quantizer's int8, not the candidate's ORT int8, so the
search checks the conversion, not the two quantizers' agreement: real litert-torch
conversions in a runtime child of a model whose logits are nearly tied (int8 rounding flips
its top-1, a float conversion does not), and the search space of a run whose every target
quantizes with its own tool (nothing drawn that its file ignores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_facts import facts as model_facts

from edgeopt.errors import CandidateError
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import load_profile, merge_profiles, quantizes_with_ort
from edgeopt.profiles.runtime_spec import Runtime
from edgeopt.search.strategy.space import DefaultSuggester
from edgeopt.search.trial.runtimes import TorchCandidate, convert_for_targets
from edgeopt.stages import STAGES

SHAPE = (1, 8, 8)
ORT_ONLY = ("quantize.calibration", "quantize.exclude_first_last", "quantize.fp32_nodes")


def _near_tied() -> torch.nn.Module:
    """A linear classifier whose ten logits share one large term and differ by small ones:
    int8 activations (a step of ~1/255 of their range) round the differences away."""
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 10)
    with torch.no_grad():
        head.weight.copy_(torch.randn(64) + 0.02 * torch.randn(10, 64))
        head.bias.zero_()
    return torch.nn.Sequential(torch.nn.Flatten(), head).eval()


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TorchCandidate, np.ndarray]:
    torch.set_num_threads(1)
    module = _near_tied()
    d = tmp_path_factory.mktemp("parity")
    onnx_path = export_onnx(module, SHAPE, d / "model.onnx")
    x = np.random.default_rng(0).standard_normal((128, *SHAPE)).astype(np.float32)
    return onnx_path, TorchCandidate(module, SHAPE, x[:64], "int8_static"), x


def test_an_aeq_int8_file_is_held_to_its_conversion_not_to_ort_int8(
    case: tuple[Path, TorchCandidate, np.ndarray],
) -> None:
    onnx_path, candidate, x = case
    out = convert_for_targets(
        onnx_path, [load_profile("litert-host")], x, threads=1, torch=candidate
    )
    entry = out["litert-host"]
    conversion = entry["conversion"]
    assert conversion["quant_mode"] == "int8_static"
    assert conversion["recipe"] == "static_wi8_ai8"
    # the float file is the torch model's twin ...
    assert conversion["conversion_agreement"] >= 0.995
    # ... while int8 rounding changes many top-1s: recorded, and not a failed conversion (it
    # was one, compared with the 97 % int8 bar, before)
    assert entry["agreement"] < 0.97
    assert Path(entry["files"][0]).suffix == ".tflite"


def test_a_conversion_below_the_bar_fails_the_candidate_with_its_reason(
    case: tuple[Path, TorchCandidate, np.ndarray],
) -> None:
    onnx_path, candidate, x = case
    with pytest.raises(CandidateError) as err:
        convert_for_targets(
            onnx_path,
            [load_profile("litert-host")],
            x,
            threads=1,
            torch=candidate,
            min_agreement={Runtime.LITERT: 1.01},
        )
    assert err.value.stage == "convert:litert-host"
    assert "litert-torch's float .tflite agrees with the torch candidate on 100.00% of 128" in (
        err.value.reason
    )


def test_a_litert_only_run_draws_no_ort_quantizer_option() -> None:
    stage = STAGES["quantize"]
    facts = model_facts()
    lite, cpu = load_profile("litert-host"), load_profile("cpu")
    assert not quantizes_with_ort(lite)
    assert not quantizes_with_ort(merge_profiles([lite, load_profile("edgetpu")]))
    # one target shipping ORT's int8, first or not, draws them all
    assert quantizes_with_ort(merge_profiles([lite, cpu]))
    assert quantizes_with_ort(merge_profiles([cpu, lite]))
    asked = {"quantize.mode": "int8_static", "quantize.fp32_nodes": 5}
    rec = DefaultSuggester(dict(asked))
    config = stage.suggest(rec, lite, facts)
    assert not {*ORT_ONLY, "quantize.per_channel"} & set(rec.params), rec.params
    assert "quantize.calibration_samples" in rec.params
    assert (config.fp32_nodes, config.exclude_first_last) == (0, False)
    assert (config.calibration.value, config.per_channel) == ("minmax", True)
    assert stage.describe(config) == "int8_static"
    rec = DefaultSuggester(dict(asked))
    assert stage.suggest(rec, merge_profiles([lite, cpu]), facts).fp32_nodes == 5
    assert set(ORT_ONLY) <= set(rec.params)
    # the by-hand int8 names only what the run draws
    hand = stage.by_hand(lite, facts)
    assert hand is not None and not set(ORT_ONLY) & set(hand.params)
