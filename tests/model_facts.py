"""``ModelFacts`` as the probes would have found them, for tests that draw candidates."""

from __future__ import annotations

from edgeopt.stages import ModelFacts


def facts(
    *,
    onnx_input: bool = False,
    prunable: bool | None = True,
    matmul_heavy: bool = False,
    prune_ignored: tuple[str, ...] = (),
) -> ModelFacts:
    """The facts of a model with these prune and quantize probe results."""
    prune = {} if onnx_input else {"prunable": prunable, "ignored": list(prune_ignored)}
    return ModelFacts(
        onnx_input=onnx_input, stages={"prune": prune, "quantize": {"matmul_heavy": matmul_heavy}}
    )
