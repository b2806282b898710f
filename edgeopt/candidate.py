"""A candidate: the ordered stage configs that turn the original model into one ONNX file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.stages import STAGES, Phase, StageConfig


@dataclass(frozen=True)
class Step:
    """One stage applied with one config."""

    stage: str
    config: StageConfig


@dataclass(frozen=True)
class Candidate:
    """Stage configs in pipeline order; stages that are absent are not applied."""

    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        order = list(STAGES)
        names = [s.stage for s in self.steps]
        for n in names:
            if n not in STAGES:
                raise ConfigError(f"unknown stage {n!r}; known: {', '.join(order)}")
        if names != sorted(names, key=order.index) or len(set(names)) != len(names):
            raise ConfigError(f"stages out of pipeline order: {names} (order: {order})")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{"prune": {...}, "finetune": {...}, "quantize": {...}}`` in pipeline order."""
        return {s.stage: s.config.to_dict() for s in self.steps}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> Candidate:
        """Rebuild from ``to_dict`` output (e.g. a trial record)."""
        steps = []
        for name in STAGES:
            if name in data:
                steps.append(Step(name, STAGES[name].config_from_dict(data[name])))
        unknown = set(data) - set(STAGES)
        if unknown:
            raise ConfigError(f"unknown stage(s) in candidate: {', '.join(sorted(unknown))}")
        return cls(tuple(steps))

    def torch_steps(self) -> tuple[Step, ...]:
        """The steps that work on the torch module, in order."""
        return tuple(s for s in self.steps if STAGES[s.stage].phase is Phase.TORCH)

    def onnx_steps(self) -> tuple[Step, ...]:
        """The steps that work on the exported ONNX file, in order."""
        return tuple(s for s in self.steps if STAGES[s.stage].phase is Phase.ONNX)

    def key(self, salt: str = "") -> str:
        """Stable hash of the canonical JSON (first 16 hex digits)."""
        return _hash({"salt": salt, "steps": self.to_dict()})

    def torch_key(self, salt: str) -> str:
        """Cache key of the torch-phase result: same salt and torch steps, same model."""
        return _hash(
            {"salt": salt, "steps": {s.stage: s.config.to_dict() for s in self.torch_steps()}}
        )

    def describe(self) -> str:
        """Short human summary from each stage's ``describe``, e.g.
        ``prune 0.50 l2 + finetune 4ep kd + int8_static``."""
        if all(STAGES[s.stage].is_identity(s.config) for s in self.steps):
            return "unchanged (fp32)"
        parts = (STAGES[s.stage].describe(s.config) for s in self.steps)
        return " + ".join(p for p in parts if p)


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
