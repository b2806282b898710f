"""Compose the registered stages' own search spaces into one candidate per trial.

Nothing here names a stage. Each stage says what it offers (``suggest``), whether it applies
to this model (``enabled``, from ``ModelFacts``), which stage it follows (``requires``), its
identity and by-hand configs and its grid axes; this module walks ``STAGES`` in pipeline
order, so a newly registered stage joins the search without a change here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edgeopt.candidate import Candidate, Step
from edgeopt.stages import STAGES, ModelFacts, Suggester

if TYPE_CHECKING:
    from edgeopt.profiles import HardwareProfile

UNCHANGED = "unchanged"
"""Tag of the first enqueued trial: the unchanged model."""
INT8 = "int8"
"""Tag of the quantize stage's by-hand baseline, plain int8 (its ``ByHandBaseline.tag``)."""


def suggest_candidate(space: Suggester, profile: HardwareProfile, facts: ModelFacts) -> Candidate:
    """Draw a candidate: each registered stage in pipeline order, from its own space.

    A stage that ``requires`` another is drawn only when that one is active, i.e. not at its
    identity config (a pruned model is never scored without fine-tuning, and an unpruned one
    is not fine-tuned, which keeps those candidates cheap); otherwise it is left out. A
    stage ``enabled`` rejects for this model (pruning an ONNX input) stays at its identity.
    Deterministic given the answers ``space`` returns.
    """
    steps: list[Step] = []
    active: set[str] = set()
    for stage in STAGES.values():
        if not stage.requires <= active:
            continue
        if stage.enabled(facts):
            config = stage.suggest(space, profile, facts)
        else:
            config = stage.identity(profile)
        steps.append(Step(stage.name, config))
        if not stage.is_identity(config):
            active.add(stage.name)
    return Candidate(tuple(steps))


def identity_candidate(profile: HardwareProfile) -> Candidate:
    """The unchanged model: every stage at its identity config (those that ``require``
    another are left out, as ``suggest_candidate`` leaves them out)."""
    return Candidate(
        tuple(
            Step(stage.name, stage.identity(profile))
            for stage in STAGES.values()
            if not stage.requires
        )
    )


def baseline_params(
    profile: HardwareProfile, facts: ModelFacts
) -> list[tuple[str, dict[str, Any]]]:
    """Optuna params to enqueue as the first trials, tagged: ``UNCHANGED`` (every stage's
    ``identity_params``), then one per stage with a by-hand baseline (``INT8``: plain int8)
    where the others keep their identity params.

    The unchanged model is always a baseline, even where the target cannot run fp32 natively
    (an int8-only accelerator estimates it with its CPU fallback): it is the reference. The
    params never change, since a resumed study recognizes its baselines by them.
    """
    out: list[tuple[str, dict[str, Any]]] = [(UNCHANGED, params_with(profile))]
    for stage in STAGES.values():
        # a stage that requires another would not even be drawn beside identities
        if stage.requires or not stage.enabled(facts):
            continue
        hand = stage.by_hand(profile, facts)
        if hand is not None:
            out.append((hand.tag, params_with(profile, stage.name, hand.params)))
    return out


def params_with(
    profile: HardwareProfile, name: str | None = None, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Every stage's identity params, with stage ``name``'s replaced by ``params`` (all of
    them at their identity when ``name`` is None)."""
    out: dict[str, Any] = {}
    for stage in STAGES.values():
        if stage.name == name and params is not None:
            out.update(params)
        else:
            out.update(stage.identity_params(profile))
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


def grid_space(profile: HardwareProfile, facts: ModelFacts) -> dict[str, list[Any]]:
    """A grid over the stages' ``grid_axes`` (pruning ratio x quantization mode); every other
    param the stages draw is fixed at a middle value."""
    probe: dict[str, Any] = {}
    for stage in STAGES.values():
        probe.update(stage.grid_probe)
    # the probe reaches every conditional param (a pruned, int8 candidate: fine-tuning,
    # calibration), so each gets its fixed value
    rec = DefaultSuggester(probe)
    candidate = suggest_candidate(rec, profile, facts)
    space: dict[str, list[Any]] = {k: [v] for k, v in rec.params.items()}
    for step in candidate.steps:
        stage = STAGES[step.stage]
        if stage.enabled(facts):
            space.update(stage.grid_axes(profile, facts))
    return space
