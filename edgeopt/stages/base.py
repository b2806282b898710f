"""What every compression stage is: a typed frozen config, the search space it offers, one
transformation.

A stage never mutates its input. Torch-phase stages (prune, finetune) take and return an
``nn.Module`` (a deep copy); ONNX-phase stages (quantize) take an ONNX ``Path`` and return a
new file under ``StageContext.workdir``. A failure of one candidate is a
``CandidateError(stage.name, reason)``; an invalid config is a ``ConfigError`` raised when the
config is constructed.

A stage describes itself fully, so the search only composes stages: its search space
(``suggest``), the config that leaves the model unchanged (``identity``), the config a user
would pick by hand if there is one (``by_hand``), what it needs to know about the model
(``probe``, run once at setup; the results are ``ModelFacts.of(name)``), which models it
applies to (``enabled``), which stages it follows (``requires``), what its failure means
for later trials (``failure_policy``), which field is a training budget (``fidelity``), and
what ``apply`` reports besides its artifact (``StageOutput``). The search names no stage.

The registry ``STAGES`` lists the stages in pipeline order. ``edgeopt.stages`` registers
them, so ``STAGES`` is complete once that package has been imported (importing this module
imports the package first). A new stage is one new module and one ``register`` line there.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, Self, TypeVar

from edgeopt.errors import ConfigError
from edgeopt.inputs import ModelInputs

if TYPE_CHECKING:
    from torch import nn

    from edgeopt.data import DataSource
    from edgeopt.profiles import HardwareProfile


class Suggester(Protocol):
    """The part of ``optuna.Trial`` a stage needs to suggest its config (a fake in tests)."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


class Phase(StrEnum):
    """Which artifact a stage works on: a torch module or an exported ONNX file."""

    TORCH = "torch"
    ONNX = "onnx"


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Turn a JSON value back into the declared field type (StrEnum, tuple, float)."""
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        try:
            return tp(value)
        except ValueError as exc:
            allowed = ", ".join(str(m.value) for m in tp)
            raise ConfigError(f"{name}: {value!r} is not one of {allowed}") from exc
    origin = typing.get_origin(tp)
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _check_type(name: str, tp: Any, value: Any) -> None:
    """Reject values of the wrong JSON type (bool is not an int here)."""
    ok = True
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    elif typing.get_origin(tp) is tuple:
        ok = isinstance(value, tuple)
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(f"{name} must be {getattr(tp, '__name__', tp)}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class StageConfig:
    """Base of every stage config: frozen, JSON-serializable fields, validated at construction.

    Field types are limited to str/int/float/bool, ``StrEnum`` and tuples of those, so that
    ``to_dict`` gives canonical JSON for a candidate's hash. Subclasses validate ranges in
    ``__post_init__`` (raising ``ConfigError``) and must call ``self._check_types()`` first.
    """

    def _check_types(self) -> None:
        """Coerce enum values given as strings (and lists given for tuples), then raise
        ConfigError when a field holds a value of the wrong type."""
        hints = _field_types(type(self))
        for f in dataclasses.fields(self):
            label = f"{type(self).__name__}.{f.name}"
            value = _coerce(label, hints[f.name], getattr(self, f.name))
            _check_type(label, hints[f.name], value)
            object.__setattr__(self, f.name, value)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: enums as their values, tuples as lists."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, enum.Enum):
                v = v.value
            elif isinstance(v, tuple):
                v = [x.value if isinstance(x, enum.Enum) else x for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Inverse of ``to_dict``; unknown keys are a ConfigError, missing keys take defaults."""
        hints = _field_types(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown field(s) {', '.join(unknown)}",
                hint=f"known fields: {', '.join(sorted(names))}",
            )
        kwargs = {k: _coerce(f"{cls.__name__}.{k}", hints[k], v) for k, v in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{cls.__name__}: {exc}") from exc


def check_range(
    name: str, value: float, low: float | None = None, high: float | None = None
) -> None:
    """Raise ConfigError unless ``low <= value <= high`` (either bound may be None)."""
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {value!r}")


@dataclass(frozen=True, kw_only=True)
class StageContext:
    """Everything a stage may need besides its artifact and config.

    ``teacher`` is the unmodified original model (never trained or mutated by a stage);
    ``data`` is None for data-free runs (stages then use synthetic inputs of
    ``model_inputs``); ``inputs``: what a multi-input (or integer-input) model takes, None
    for one float input of ``input_shape``; ``on_epoch(epoch, val_accuracy)`` is called by
    training stages after each epoch and may raise to abandon the candidate (the exception
    propagates).
    ``cache_dir`` holds results shared across trials (a sensitivity ranking); None: stages
    keep such results under ``workdir``.
    """

    workdir: Path
    profile: HardwareProfile
    data: DataSource | None
    teacher: nn.Module | None
    input_shape: tuple[int, ...]
    inputs: ModelInputs | None = None
    seed: int = 0
    on_epoch: Callable[[int, float], None] | None = None
    cache_dir: Path | None = None
    round_samples: int | None = None
    """The training samples one fine-tune round (``finetune.epochs``) draws, from the run's
    probe (``finetune_probe.round_samples``); None: a whole epoch (``training.fit``)."""

    @property
    def model_inputs(self) -> ModelInputs:
        """What the model takes: ``inputs``, else one float input of ``input_shape``."""
        return self.inputs or ModelInputs.single(self.input_shape)


@dataclass(frozen=True, kw_only=True)
class ProbeInput:
    """The model as setup sees it, for ``Stage.probe``.

    ``module`` is None for an ONNX input, and when a run set up before a stage had its
    probe is opened again: a probe then answers from ``onnx_path`` alone, or with nothing.
    """

    module: nn.Module | None
    onnx_path: Path
    input_shape: tuple[int, ...]
    inputs: ModelInputs | None = None
    """What a multi-input model takes (None: one float input of ``input_shape``)."""
    data: DataSource | None = None
    threads: int = 1
    search_timeout_s: float | None = None
    """``--timeout`` of the search that sets the run up (None: none, or not known)."""

    @property
    def model_inputs(self) -> ModelInputs:
        """What the model takes: ``inputs``, else one float input of ``input_shape``."""
        return self.inputs or ModelInputs.single(self.input_shape)


@dataclass(frozen=True, kw_only=True)
class ModelFacts:
    """What the stages need to know about the model being compressed, found once per run.

    ``onnx_input``: the user gave an ONNX file, so only ONNX-phase stages apply.
    ``stages``: each stage's ``probe`` result by stage name (JSON values; ``of(name)``).
    ``disabled``: stages the search switched off for this model after a failure that is
    the model's, not the draw's (``FailurePolicy``); they stay at their identity.
    """

    onnx_input: bool
    stages: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    disabled: frozenset[str] = frozenset()

    def of(self, stage: str) -> Mapping[str, Any]:
        """What ``stage``'s probe found (empty when it found nothing or did not run)."""
        return self.stages.get(stage, {})


C = TypeVar("C", bound=StageConfig)
A = TypeVar("A")


@dataclass(frozen=True)
class Fidelity:
    """A stage whose config holds a training budget: the search stops its runs early when
    they trail their peers and continues promising ones for longer
    (``edgeopt.search.strategy.halving``).

    ``budget``: the config field holding the budget (param ``f"{stage}.{budget}"``, e.g.
    ``finetune.epochs``), drawn up to ``max_budget``. ``peer_key``: the param that makes two
    trials peers when within ``peer_tolerance`` (``prune.ratio``: candidates of about the
    same size). ``history_key``: the trial attribute holding the per-epoch validation
    accuracy. ``continue_when``: a longer budget continues from the shorter run's
    checkpoint only when each of these own fields has one of these values. ``peer_same``:
    params that peers must also share exactly (absent counts as 0): ``prune.depth``, since a
    model with blocks removed starts its fine-tune further behind one of the same ratio.
    """

    budget: str
    peer_key: str
    peer_tolerance: float
    max_budget: int
    history_key: str
    continue_when: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    peer_same: tuple[str, ...] = ()


@dataclass(frozen=True)
class FailurePolicy:
    """What a failure of this stage means for the later trials of the same study.

    ``disable_after_model_failure``: an error in this stage (not a hang, not the memory cap)
    before any trial with this stage at a non-identity config succeeded is the model's, not
    the draw's: the stage is switched off for the rest of the study (said once, and in the
    report). ``block_config_after_hang``: a config of this stage that hung or ran out of
    memory is not built again (the trial fails at once, saying which trial it repeats).
    """

    disable_after_model_failure: bool = False
    block_config_after_hang: bool = False


@dataclass(frozen=True)
class StageOutput(Generic[A]):
    """What ``Stage.apply`` returns: the new artifact and what the stage has to report.

    ``info`` (JSON values) goes into the trial's info as ``"{stage}.{key}"`` (the achieved
    MACs, the training history). ``export_rel_error``: a torch-phase stage whose model runs
    int8 kernels in ORT (QAT) states how close the export can be to torch, as a relative L2
    error (``onnx_export.export_onnx``); None keeps the element-wise default.
    """

    artifact: A
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    export_rel_error: float | None = None


@dataclass(frozen=True)
class ByHandBaseline(Generic[C]):
    """What a user gets from one stage by hand, enqueued as one of a study's first trials.

    ``tag`` names the trial in records and reports (``"int8"``); ``params`` are the Optuna
    params under which the stage's ``suggest`` returns ``config`` (other stages take their
    ``identity_params``). Params must never change: resumed studies match baselines by them.
    """

    tag: str
    config: C
    params: Mapping[str, Any]


class Stage(abc.ABC, Generic[C, A]):
    """One transformation with its own config type and search space.

    Subclasses set ``name`` (also the prefix of its Optuna params, ``f"{name}.field"``),
    ``phase`` and ``config_type``; ``requires`` and ``grid_probe`` when they need them.
    """

    name: ClassVar[str]
    title: ClassVar[str] = ""
    """What the stage does, for notes to the user ("Pruning was disabled ..."); the name
    when empty."""
    phase: ClassVar[Phase]
    config_type: ClassVar[type[StageConfig]]
    requires: ClassVar[frozenset[str]] = frozenset()
    """The stages this one only follows: it is in a candidate only when every one of them
    (earlier in the pipeline) is at a non-identity config (fine-tuning only pays after
    pruning)."""
    failure_policy: ClassVar[FailurePolicy] = FailurePolicy()
    """What a failure of this stage means for later trials (``FailurePolicy``)."""
    fidelity: ClassVar[Fidelity | None] = None
    """Which field is this stage's training budget, for early stopping and promotion; its
    ``apply`` reports each epoch through ``StageContext.on_epoch``."""
    grid_probe: ClassVar[Mapping[str, Any]] = {}
    """Answers under which ``suggest`` asks for every conditional param, so that a grid
    search can fix each of them at a middle value."""
    widest_facts: ClassVar[Mapping[str, Any]] = {}
    """Probe facts under which ``suggest`` declares every param some model may get: the
    user's ``--space``/``--enqueue`` are checked against them before any probe runs."""

    def enabled(self, facts: ModelFacts) -> bool:
        """Whether this model may take the stage; a disabled stage stays at its identity.

        By default a torch-phase stage needs a torch model, and no stage is enabled once the
        search switched it off for this model (``facts.disabled``).
        """
        if self.name in facts.disabled:
            return False
        return self.phase is Phase.ONNX or not facts.onnx_input

    def probe(self, model: ProbeInput) -> Mapping[str, Any]:
        """Facts about the model this stage needs, found once at setup (in the parent
        process, before any trial) and stored with the run: ``ModelFacts.of(self.name)``.
        JSON values only. Default: nothing to find."""
        return {}

    def probe_notes(self, facts: Mapping[str, Any]) -> list[str]:
        """One line each for the user about what ``probe`` found (the CLI prints them)."""
        return []

    def trial_seconds(self, facts: Mapping[str, Any]) -> float | None:
        """The longest this stage may take in one trial, from its probe's facts; the auto
        trial timeout adds these up. None: no measured cost."""
        return None

    @abc.abstractmethod
    def suggest(self, space: Suggester, profile: HardwareProfile, facts: ModelFacts) -> C:
        """Draw a config from ``space``; params are named ``f"{self.name}.<field>"``.

        Called only when ``enabled(facts)``. Deterministic given the answers ``space``
        returns. The profile and the facts narrow what is offered (quantization modes,
        channel multiples). Param names and ranges never change: studies are resumed.
        """

    @abc.abstractmethod
    def identity(self, profile: HardwareProfile) -> C:
        """The config that leaves the model unchanged (``is_identity`` holds for it)."""

    def identity_params(self, profile: HardwareProfile) -> dict[str, Any]:
        """The Optuna params under which ``suggest`` returns ``identity(profile)``, enqueued
        for the unchanged-model trial; empty when the identity is outside the space."""
        return {}

    def by_hand(self, profile: HardwareProfile, facts: ModelFacts) -> ByHandBaseline[C] | None:
        """The config a user would pick by hand with this stage alone, if there is one."""
        return None

    def variants(self, profile: HardwareProfile, facts: ModelFacts) -> list[dict[str, Any]]:
        """Params of the cheap variants worth scoring for every model an earlier phase
        built (an ONNX-phase stage: seconds each, beside a torch phase's minutes); the
        search queues them as sibling trials. Default: the identity and the by-hand config."""
        hand = self.by_hand(profile, facts)
        out = [self.identity_params(profile)]
        return out + [dict(hand.params)] if hand is not None else out

    def grid_axes(self, profile: HardwareProfile, facts: ModelFacts) -> dict[str, list[Any]]:
        """The params a grid search varies for this stage, with their values (none by
        default: the grid fixes the stage's params at middle values)."""
        return {}

    def must_run(self, fp32_onnx: Path) -> bool:
        """ONNX phase: whether this stage runs even at its identity config on this export
        (``fp32_onnx``, the torch phase's result); by default an identity step is skipped."""
        return False

    def describe(self, config: C) -> str:
        """A few words for summaries; empty when there is nothing to say."""
        return "" if self.is_identity(config) else self.name

    @abc.abstractmethod
    def apply(self, artifact: A, config: C, ctx: StageContext) -> StageOutput[A]:
        """Apply ``config`` to a copy of ``artifact`` and return the result with its info.

        Never mutates ``artifact``. Raises ``CandidateError(self.name, reason)`` when this
        candidate cannot be produced or its result fails the stage's structural check.
        """

    @abc.abstractmethod
    def is_identity(self, config: C) -> bool:
        """True when ``apply`` with ``config`` would return an equivalent artifact."""

    def config_from_dict(self, data: Mapping[str, Any]) -> C:
        """Rebuild this stage's config from ``to_dict`` output (e.g. from a trial record)."""
        return typing.cast(C, self.config_type.from_dict(data))


STAGES: dict[str, Stage[Any, Any]] = {}
"""Registry of stage instances by name, in pipeline order (registration order)."""

S = TypeVar("S", bound=Stage[Any, Any])


def register(stage: S) -> S:
    """Append ``stage`` to ``STAGES`` (``edgeopt.stages`` registers each stage once).

    Registration order is pipeline order, so it must keep torch-phase stages before
    ONNX-phase ones and put a stage after the one it ``requires`` (ValueError otherwise).
    """
    if stage.name in STAGES:
        raise ValueError(f"stage {stage.name!r} registered twice")
    missing = sorted(stage.requires - STAGES.keys())
    if missing:
        raise ValueError(f"stage {stage.name!r} requires {missing!r}, not registered yet")
    if stage.phase is Phase.TORCH and any(s.phase is Phase.ONNX for s in STAGES.values()):
        raise ValueError(f"torch-phase stage {stage.name!r} registered after an ONNX-phase one")
    STAGES[stage.name] = stage
    return stage
