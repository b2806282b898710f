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

    def get(self, stage: str) -> StageConfig | None:
        for s in self.steps:
            if s.stage == stage:
                return s.config
        return None

    def torch_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if STAGES[s.stage].phase is Phase.TORCH)

    def onnx_steps(self) -> tuple[Step, ...]:
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
        """Short human summary, e.g. ``prune 0.50 l2 + finetune 4ep kd + int8_static``."""
        parts = []
        for s in self.steps:
            d = s.config.to_dict()
            if s.stage == "prune":
                if d.get("ratio", 0) > 0:
                    parts.append(f"prune {d['ratio']:.2f} {d.get('importance', '')}".strip())
            elif s.stage == "finetune":
                kd = " kd" if d.get("distill") else ""
                parts.append(f"finetune {d.get('epochs')}ep{kd}")
            elif s.stage == "quantize":
                parts.append(str(d.get("mode")))
            else:
                parts.append(s.stage)
        if parts == ["fp32"] or not parts:
            return "unchanged (fp32)"
        return " + ".join(parts)


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
