"""What the search and its trial child say to each other: one request, one result.

Both are frozen dataclasses written as JSON in the trial's folder (``request.json``,
``result.json``), so a trial can be read back after a crash and the child needs nothing but
the request. Kept free of optuna and torch imports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from edgeopt.data import synthetic_inputs
from edgeopt.fileio import write_json
from edgeopt.inputs import ModelInputs
from edgeopt.search.study.records import STOPPED_REASON, stopped_reason

# seeds and count of the synthetic inputs that stand in for data in a data-free run
SYNTHETIC_VAL_SEED = 1_000_001
SYNTHETIC_TEST_SEED = 2_000_003
SYNTHETIC_N = 256

__all__ = ["STOPPED_REASON", "stopped_reason"]  # re-exported: the study layer owns them


def scoring_inputs(
    data: Any, split: str, input_shape: tuple[int, ...] | ModelInputs
) -> tuple[Any, Any]:
    """``(x, y)`` of a data split, or seeded synthetic inputs and ``None`` without data (then
    the score is fidelity to the original model); ``input_shape`` is one float sample's
    shape, or the inputs of a model that takes several (structured samples)."""
    if data is not None:
        return data.split(split)

    seed = SYNTHETIC_VAL_SEED if split == "val" else SYNTHETIC_TEST_SEED
    if isinstance(input_shape, ModelInputs) and not input_shape.is_single:
        return input_shape.synthetic(SYNTHETIC_N, seed), None
    shape = input_shape.first_shape if isinstance(input_shape, ModelInputs) else input_shape
    return synthetic_inputs(shape, SYNTHETIC_N, seed), None


class Status(StrEnum):
    """How a trial's build ended."""

    OK = "ok"
    FAIL = "fail"
    STOPPED = "stopped"

    @classmethod
    def _missing_(cls, value: object) -> Status | None:
        return cls.STOPPED if value == "pruned" else None  # result.json of an older edgeopt


@dataclass(frozen=True)
class TrialRequest:
    """Everything the child needs to build and score one candidate.

    ``model`` is a ``ModelSpec.to_dict()``, ``data`` a ``DataSpec.to_dict()``; ``candidate``
    a ``Candidate.to_dict()``;
    ``hopeless_below`` the validation accuracy under which a fine-tune is abandoned after its
    first epoch; ``reference_onnx`` the original model, for fidelity without data; ``metric``
    the task metric the validation score is (``edgeopt.metrics.TASK_METRICS``);
    ``rung_bars`` the median stopping rule's bars for this candidate's fine-tune;
    ``profiles`` the TOML text of each target profile as the run resolved it when it started
    (``edgeopt.profiles.Targets.texts``): the child never reads a profile file;
    ``train_device`` where its torch stages run (``cpu``, ``cuda:0``: the child's own GPU);
    ``round_samples`` the samples of one fine-tune round, as the run's probe set them;
    ``data_workers`` and ``data_cache_bytes``: how it reads streamed data.
    """

    trial_dir: str
    model: Mapping[str, Any]
    data: Mapping[str, Any] | str | None
    """The run's ``DataSpec.to_dict()`` (a request written before data had kinds: the npz's
    path)."""
    profiles: tuple[str, ...]
    seed: int
    cache_dir: str
    salt: str
    candidate: Mapping[str, Any]
    reference_onnx: str
    threads: int = 1
    hopeless_below: float | None = None
    metric: str = "accuracy"
    rung_bars: Mapping[int, float] = field(default_factory=dict)
    """Fine-tune epoch -> the validation accuracy needed to go on (``halving.rung_bars``)."""
    train_device: str = "cpu"
    round_samples: int | None = None
    data_workers: int = 0
    """DataLoader worker processes a streamed source's fine-tunes read with."""
    data_cache_bytes: int = 0
    """Size of the decoded-image cache under ``cache_dir``/data (0: none)."""

    def write(self, path: Path) -> None:
        d = {**asdict(self), "profiles": list(self.profiles)}
        d["rung_bars"] = {str(k): v for k, v in self.rung_bars.items()}
        write_json(path, d, indent=1)

    @classmethod
    def read(cls, path: Path) -> TrialRequest:
        d = json.loads(Path(path).read_text())
        d["profiles"] = tuple(d["profiles"])
        d["rung_bars"] = {int(k): float(v) for k, v in d.get("rung_bars", {}).items()}
        return cls(**d)


class FailureKind(StrEnum):
    """What kind of failure a ``FAIL`` result is, set where it is detected: the builder's
    timeout (``HANG``), the memory cap (``MEMORY``), anything else (``ERROR``: a
    ``CandidateError`` or a crash). A stage's ``FailurePolicy`` acts on it."""

    ERROR = "error"
    HANG = "hang"
    MEMORY = "memory"


@dataclass(frozen=True)
class TrialResult:
    """The child's answer. ``OK`` carries the ONNX path and validation accuracy; ``FAIL`` the
    stage it failed in, why, and what kind of failure it was; ``STOPPED`` why it was
    stopped early."""

    status: Status
    stage: str | None = None
    reason: str | None = None
    failure: FailureKind | None = None
    onnx: str | None = None
    val_accuracy: float | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    cache_hit: bool = False
    build_seconds: float = 0.0

    @classmethod
    def failed(
        cls, stage: str, reason: str, failure: FailureKind = FailureKind.ERROR, **kw: Any
    ) -> TrialResult:
        return cls(Status.FAIL, stage=stage, reason=reason, failure=failure, **kw)

    def write(self, path: Path) -> None:
        write_json(path, asdict(self), indent=None)

    @classmethod
    def read(cls, path: Path) -> TrialResult:
        d = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["status"] = Status(d["status"])
        if d.get("failure") is not None:
            d["failure"] = FailureKind(d["failure"])
        return cls(**d)
