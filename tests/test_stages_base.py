"""Stage registry, config serialization and the suggest contract, across all stages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from model_facts import facts

from edgeopt.errors import ConfigError
from edgeopt.profiles import list_profiles, load_profile
from edgeopt.stages import (
    STAGES,
    FinetuneConfig,
    Phase,
    PruneConfig,
    QuantizeConfig,
    Stage,
    StageConfig,
)
from edgeopt.stages import base as base_module

FACTS = facts(matmul_heavy=True)


class Lowest:
    """A Suggester answering the low end / first choice, or what ``answers`` says."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.answers = answers or {}
        self.names: list[str] = []

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        self.names.append(name)
        assert low <= high and (not log or low > 0)
        return float(self.answers.get(name, low))

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        self.names.append(name)
        return int(self.answers.get(name, low))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.names.append(name)
        assert all(isinstance(c, str | bool | int | float) for c in choices)
        value = self.answers.get(name, choices[0])
        assert value in choices
        return value


def test_registry_in_pipeline_order() -> None:
    assert list(STAGES) == ["prune", "finetune", "qat", "quantize"]
    assert base_module.STAGES is STAGES
    phases = [s.phase for s in STAGES.values()]
    assert phases == [Phase.TORCH, Phase.TORCH, Phase.TORCH, Phase.ONNX]
    for name, stage in STAGES.items():
        assert isinstance(stage, Stage) and stage.name == name
        assert issubclass(stage.config_type, StageConfig)


@pytest.mark.parametrize("profile", [p.name for p in list_profiles()])
def test_suggest_and_identity_every_profile(profile: str) -> None:
    prof = load_profile(profile)
    for name, stage in STAGES.items():
        base = stage.identity(prof)
        assert stage.is_identity(base)
        assert all(k.startswith(f"{name}.") for k in stage.identity_params(prof))
        for answers in ({}, {"prune.ratio": 0.5, "finetune.distill": True}):
            space = Lowest(answers)
            cfg = stage.suggest(space, prof, FACTS)
            assert isinstance(cfg, stage.config_type)
            assert all(n.startswith(f"{name}.") for n in space.names)
            assert len(space.names) == len(set(space.names))
            again = stage.suggest(Lowest(answers), prof, FACTS)
            assert again == cfg  # deterministic given the answers
            data = json.loads(json.dumps(cfg.to_dict()))
            assert stage.config_from_dict(data) == cfg


def test_suggest_uses_profile() -> None:
    cfg = STAGES["prune"].suggest(Lowest({"prune.ratio": 0.3}), load_profile("fpga"), FACTS)
    assert cfg.round_to == 16 and cfg.ratio == 0.3
    kd = Lowest({"finetune.distill": True})
    ft = STAGES["finetune"].suggest(kd, load_profile("cpu"), FACTS)
    assert ft.distill and "finetune.temperature" in kd.names and ft.epochs >= 1
    no_kd = Lowest()
    STAGES["finetune"].suggest(no_kd, load_profile("cpu"), FACTS)
    assert "finetune.temperature" not in no_kd.names


@pytest.mark.parametrize(
    "cfg",
    [
        PruneConfig(ratio=0.4, importance="taylor", ignored_layers=("fc",)),
        FinetuneConfig(epochs=3, optimizer="adamw", distill=True, temperature=2.5),
        QuantizeConfig(mode="int8_static", calibration="percentile", exclude_first_last=True),
    ],
)
def test_round_trip(cfg: StageConfig) -> None:
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert type(cfg).from_dict(d) == cfg
    with pytest.raises(ConfigError):
        type(cfg).from_dict({**d, "bogus": 1})


def test_from_dict_rejects_bad_values() -> None:
    with pytest.raises(ConfigError):
        QuantizeConfig.from_dict({"mode": "int3"})
    with pytest.raises(ConfigError):
        PruneConfig.from_dict({"ratio": 2.0})
    with pytest.raises(ConfigError):
        FinetuneConfig.from_dict({"epochs": "3"})
    assert PruneConfig.from_dict({"ignored_layers": ["a", "b"]}).ignored_layers == ("a", "b")
    assert PruneConfig.from_dict({"ratio": 0}).ratio == 0.0


def test_configs_are_frozen() -> None:
    cfg = PruneConfig(ratio=0.5)
    with pytest.raises(AttributeError):
        cfg.ratio = 0.1  # type: ignore[misc]
    assert hash(cfg) == hash(PruneConfig(ratio=0.5))
