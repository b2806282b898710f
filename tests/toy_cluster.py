"""A stage added the way the README says one is: this module plus one ``register`` line.

Weight clustering (k-level weight sharing, torch phase): every Conv/Linear weight tensor is
snapped to ``levels`` evenly spaced values between its min and max, so an entropy coder or
a palette-based accelerator can store it in log2(levels) bits. Its probe counts the weight
tensors it would share; a grouped (depthwise) convolution is a model it cannot handle, and
its failure policy switches it off for the rest of the study after that first failure.
Nothing in ``edgeopt/search`` knows it exists.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeopt.errors import CandidateError
from edgeopt.profiles import HardwareProfile
from edgeopt.stages import (
    FailurePolicy,
    ModelFacts,
    Phase,
    ProbeInput,
    Stage,
    StageConfig,
    StageContext,
    StageOutput,
    Suggester,
)
from edgeopt.stages.base import check_range

LEVELS = (0, 4, 16)


@dataclass(frozen=True, kw_only=True)
class ClusterConfig(StageConfig):
    """``levels``: distinct values per weight tensor; 0 leaves the weights alone."""

    levels: int = 0

    def __post_init__(self) -> None:
        self._check_types()
        if self.levels != 0:
            check_range("cluster.levels", self.levels, 2, 256)


def _weights(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


class ClusterStage(Stage[ClusterConfig, nn.Module]):
    """k-level weight sharing of every Conv/Linear weight."""

    name = "cluster"
    title = "Weight clustering"
    phase = Phase.TORCH
    config_type = ClusterConfig
    failure_policy = FailurePolicy(disable_after_model_failure=True)

    def enabled(self, facts: ModelFacts) -> bool:
        return super().enabled(facts) and facts.of(self.name).get("weights", 0) > 0

    def probe(self, model: ProbeInput) -> dict[str, Any]:
        return {} if model.module is None else {"weights": len(_weights(model.module))}

    def probe_notes(self, facts: Mapping[str, Any]) -> list[str]:
        return [f"clustering: {facts['weights']} weight tensor(s)"] if facts.get("weights") else []

    def suggest(
        self, space: Suggester, profile: HardwareProfile, facts: ModelFacts
    ) -> ClusterConfig:
        return ClusterConfig(levels=int(space.suggest_categorical("cluster.levels", LEVELS)))

    def identity(self, profile: HardwareProfile) -> ClusterConfig:
        return ClusterConfig()

    def identity_params(self, profile: HardwareProfile) -> dict[str, Any]:
        return {"cluster.levels": 0}

    def is_identity(self, config: ClusterConfig) -> bool:
        return config.levels == 0

    def describe(self, config: ClusterConfig) -> str:
        return f"cluster {config.levels}" if config.levels else ""

    def apply(
        self, artifact: nn.Module, config: ClusterConfig, ctx: StageContext
    ) -> StageOutput[nn.Module]:
        model = copy.deepcopy(artifact)
        layers = _weights(model)
        grouped = [m for m in layers if isinstance(m, nn.Conv2d) and m.groups > 1]
        if grouped:
            raise CandidateError("cluster", f"{len(grouped)} grouped convolution(s): not shared")
        with torch.no_grad():
            for m in layers:
                w = m.weight
                centers = torch.linspace(float(w.min()), float(w.max()), config.levels)
                w.copy_(centers[(w.unsqueeze(-1) - centers).abs().argmin(-1)])
        used = max(int(m.weight.unique().numel()) for m in layers)
        return StageOutput(model, {"levels_used": used})
