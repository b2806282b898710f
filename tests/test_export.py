"""Export produces an ONNX graph that ORT runs with the torch model's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgeopt import zoo
from edgeopt.errors import CandidateError
from edgeopt.measure.accuracy import onnx_logits
from edgeopt.onnx_export import OPSET, check_parity, export_onnx


@pytest.mark.parametrize("builder", ["plain_cnn", "resnet_small", "mobilenet_small"])
def test_export_parity_each_family(tmp_path: Path, builder: str) -> None:
    torch.manual_seed(0)
    model = zoo.BUILDERS[builder](in_channels=1, num_classes=10, width=8).eval()
    x = np.random.default_rng(0).standard_normal((5, 1, 16, 16)).astype(np.float32)
    path = export_onnx(model, (1, 16, 16), tmp_path / "m.onnx", check_inputs=x)
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == OPSET
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx_logits(path, x), expected, atol=1e-4, rtol=1e-3)


def test_export_does_not_mutate_model(tmp_path: Path) -> None:
    model = zoo.resnet_small(width=8).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, (1, 16, 16), tmp_path / "m.onnx")
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_parity_mismatch_names_output_and_difference(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.plain_cnn(width=4).eval()
    path = export_onnx(model, (1, 16, 16), tmp_path / "m.onnx")
    other = zoo.plain_cnn(width=4).eval()  # different random weights
    x = np.random.default_rng(1).standard_normal((4, 1, 16, 16)).astype(np.float32)
    with pytest.raises(CandidateError, match="ONNX output 'output' differs from torch: max abs"):
        check_parity(other, path, x, atol=1e-4, rtol=1e-3)


def test_relative_parity_passes_a_quantum_and_fails_another_model(tmp_path: Path) -> None:
    """The relative test (int8 kernels): an output moved by a small step on every element
    passes where the element-wise test fails; another model's outputs fail both."""
    torch.manual_seed(0)
    model = zoo.plain_cnn(width=4).eval()
    path = export_onnx(model, (1, 16, 16), tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((4, 1, 16, 16)).astype(np.float32)
    with torch.no_grad():
        norm = float(np.linalg.norm(model(torch.from_numpy(x)).numpy()))

    class Shifted(torch.nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            out = model(t)
            return out + 0.02 * norm / out.numel() ** 0.5  # 2 % of the norm, relative

    with pytest.raises(CandidateError, match="max abs"):
        check_parity(Shifted(), path, x, atol=1e-4, rtol=1e-3)
    assert check_parity(Shifted(), path, x, atol=1e-4, rtol=1e-3, rel_error=0.15) > 1e-3
    other = zoo.plain_cnn(width=4).eval()
    with pytest.raises(CandidateError, match=r"relative error \S+ > tolerance 0.15 \(L2 norm"):
        check_parity(other, path, x, atol=1e-4, rtol=1e-3, rel_error=0.15)


def test_unexportable_model_is_a_candidate_error(tmp_path: Path) -> None:
    class Bad(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.fft(x).real  # no ONNX symbolic at opset 17

    with pytest.raises(CandidateError, match="export: torch.onnx.export failed"):
        export_onnx(Bad(), (1, 16, 16), tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
