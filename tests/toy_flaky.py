"""A toy ONNX-phase stage whose failures are the draw's, not the model's: ``level`` 1 copies
the model, a higher level fails. Its policy keeps it on after a failure, so only the
search's streak guard (``edgeopt.search.trial.policy.FAIL_STREAK``) stops a sampler that
keeps drawing a failing level."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.errors import CandidateError
from edgeopt.profiles import HardwareProfile
from edgeopt.stages import (
    ModelFacts,
    Phase,
    Stage,
    StageConfig,
    StageContext,
    StageOutput,
    Suggester,
)

LEVELS = (0, 1, 2)


@dataclass(frozen=True, kw_only=True)
class FlakyConfig(StageConfig):
    """``level`` 0 leaves the model alone; 1 works; 2 fails."""

    level: int = 0

    def __post_init__(self) -> None:
        self._check_types()


class FlakyStage(Stage[FlakyConfig, Path]):
    """Copies the ONNX file at level 1, fails at a higher level."""

    name = "flaky"
    title = "Flaky toy stage"
    phase = Phase.ONNX
    config_type = FlakyConfig

    def suggest(self, space: Suggester, profile: HardwareProfile, facts: ModelFacts) -> FlakyConfig:
        return FlakyConfig(level=int(space.suggest_categorical("flaky.level", LEVELS)))

    def identity(self, profile: HardwareProfile) -> FlakyConfig:
        return FlakyConfig()

    def identity_params(self, profile: HardwareProfile) -> dict[str, Any]:
        return {"flaky.level": 0}

    def is_identity(self, config: FlakyConfig) -> bool:
        return config.level == 0

    def apply(self, artifact: Path, config: FlakyConfig, ctx: StageContext) -> StageOutput[Path]:
        if config.level > 1:
            raise CandidateError("flaky", f"level {config.level} is too coarse for this draw")
        out = ctx.workdir / "flaky.onnx"
        shutil.copyfile(artifact, out)
        return StageOutput(out)
