"""Compose the stages' own search spaces into one candidate per trial."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from edgeopt.candidate import Candidate, Step
from edgeopt.stages import STAGES, Suggester

UNCHANGED = "unchanged"
INT8 = "int8"


def suggest_candidate(
    space: Suggester, profile: Any, *, allow_torch: bool = True, quantize: Any = None
) -> Candidate:
    """Draw a candidate: prune, then fine-tune only when pruned, then quantize.

    A pruned model is never scored without fine-tuning (structured pruning without it falls
    to chance accuracy), and an unpruned model is not fine-tuned, which keeps unpruned
    variants cheap. ``allow_torch=False`` (an ONNX input, or a model Torch-Pruning cannot
    trace) limits the search to the ONNX stages. ``quantize`` is a quantize stage that knows
    the model (``QuantizeStage.for_model``: it offers dynamic int8 only to MatMul-heavy ones).
    """
    prune, finetune = STAGES["prune"], STAGES.get("finetune")
    quantize = quantize or STAGES["quantize"]
    steps: list[Step] = []
    p = prune.suggest(space, profile) if allow_torch else prune.baseline(profile)
    steps.append(Step("prune", p))
    if finetune is not None and not prune.is_identity(p):
        steps.append(Step("finetune", finetune.suggest(space, profile)))
    steps.append(Step("quantize", quantize.suggest(space, profile)))
    return Candidate(tuple(steps))


def baseline_candidate(profile: Any) -> Candidate:
    """The unchanged model (every stage at its identity config)."""
    return Candidate(
        (
            Step("prune", STAGES["prune"].baseline(profile)),
            Step("quantize", STAGES["quantize"].baseline(profile)),
        )
    )


def baseline_params(profile: Any) -> list[tuple[str, dict[str, Any]]]:
    """Params to enqueue as the first trials: the unchanged model and plain int8.

    Plain int8 is what a user gets by hand with the target's types: static QDQ, MinMax
    calibration on 128 samples, per-channel where the target supports it.
    """
    modes = tuple(profile.quantization.modes)
    # the unchanged model is always a baseline, even where the target cannot run fp32 natively
    # (an int8-only accelerator estimates it with its CPU fallback): it is the reference
    unchanged: dict[str, Any] = {"prune.ratio": 0.0}
    if "fp32" in modes:
        unchanged["quantize.mode"] = "fp32"
    out: list[tuple[str, dict[str, Any]]] = [(UNCHANGED, unchanged)]
    if "int8_static" in modes:
        out.append(
            (
                INT8,
                {
                    "prune.ratio": 0.0,
                    "quantize.mode": "int8_static",
                    "quantize.calibration": "minmax",
                    "quantize.calibration_samples": 128,
                    "quantize.per_channel": bool(profile.quantization.per_channel),
                    "quantize.exclude_first_last": False,
                },
            )
        )
    return out


class DefaultSuggester:
    """Answers every suggestion with a middle value and records the names it was asked for.

    Used to build a grid: every parameter gets one fixed value except the gridded ones.
    ``overrides`` answers chosen names with a given value (to reach conditional branches).
    """

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.params: dict[str, Any] = {}
        self.overrides = dict(overrides or {})

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        value = math.sqrt(low * high) if log and low > 0 else (low + high) / 2
        if step:
            value = low + round((value - low) / step) * step
        value = self.overrides.get(name, value)
        self.params[name] = value
        return value

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        value = self.overrides.get(name, low + ((high - low) // 2 // step) * step)
        self.params[name] = value
        return value

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        value = self.overrides.get(name, choices[0])
        self.params[name] = value
        return value


GRID_RATIOS = (0.0, 0.25, 0.5)


def grid_space(
    profile: Any, *, allow_torch: bool = True, quantize: Any = None
) -> dict[str, list[Any]]:
    """A grid over pruning ratio x quantization mode; other parameters at middle values."""
    # a pruned, int8 candidate reaches every conditional parameter (fine-tune, calibration)
    rec = DefaultSuggester({"prune.ratio": 0.5, "quantize.mode": "int8_static"})
    suggest_candidate(rec, profile, allow_torch=allow_torch, quantize=quantize)
    modes = [m.value for m in (quantize or STAGES["quantize"]).offered_modes(profile)]
    space: dict[str, list[Any]] = {k: [v] for k, v in rec.params.items()}
    if allow_torch:
        space["prune.ratio"] = list(GRID_RATIOS)
    if len(modes) > 1:
        space["quantize.mode"] = modes
    return space
