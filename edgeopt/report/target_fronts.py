"""The Pareto front of each target alone, for a run over several targets.

A multi-target search optimizes one objective per target number (``latency_ms[host-cpu]``,
``latency_ms[openvino-host]`` ...) and its front is joint: a candidate is on it when it is
best at something on some target. Someone shipping to one target wants the candidates that
are Pareto-optimal there: on the run's accuracy objective, that target's own objectives
(latency, and memory or energy where they are objectives) and the target-free ones (size).
Such a front is the joint front less the members that are good only on another target (a
candidate the joint front calls dominated can be on it only when it ties its dominator on
everything this target is judged on). Each target's numbers keep their provenance (its
objectives' ``ObjectiveInfo.provenance``) and name the runtime and the file it loads.

Pure: reads a run's records (``RunRecord``, or the dict ``load_run`` gives), nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeopt.record_targets import target_files
from edgeopt.records import RunRecord, TrialRecord, as_run
from edgeopt.report.model import ObjectiveInfo, objective_infos
from edgeopt.report.pareto import pareto_front
from edgeopt.report.runtimes import runtime_kind, target_runtime


@dataclass(frozen=True)
class TargetFront:
    """One target's front: ``objectives`` (the run's, in recorded order) it is judged on,
    the ``runtime`` its candidates' files are for (``ort``: the candidate's ONNX file, where
    no trial recorded a converted one), and its ``members`` in trial order."""

    target: str
    objectives: tuple[ObjectiveInfo, ...]
    runtime: str
    members: tuple[TrialRecord, ...]

    @property
    def own(self) -> tuple[ObjectiveInfo, ...]:
        """The objectives of this target alone (its latency, memory, energy)."""
        return tuple(o for o in self.objectives if o.target == self.target)

    @property
    def numbers(self) -> list[int]:
        """The members' trial numbers, ascending."""
        return [t.number for t in self.members]

    @property
    def format(self) -> str:
        """``edgeopt export --format``'s name of the file (``onnx``, ``openvino``, ``tflite``)."""
        kind = runtime_kind(self.runtime)
        return kind.format if kind is not None else self.runtime

    @property
    def label(self) -> str:
        """The runtime and its file, e.g. ``OpenVINO, .xml``."""
        kind = runtime_kind(self.runtime)
        return f"{kind.label}, {kind.suffix}" if kind is not None else self.runtime

    def fastest_first(self) -> list[TrialRecord]:
        """The members by this target's first own objective (its latency), best first."""
        if not self.own:
            return list(self.members)
        o = self.own[0]
        sign = -1.0 if o.maximize else 1.0
        return sorted(self.members, key=lambda t: (sign * t.values[o.name], t.number))

    @property
    def converted(self) -> bool:
        """Whether this target loads a converted file (scored through its runtime too)."""
        return self.runtime != "ort"

    def file_score(self, t: TrialRecord) -> float | None:
        """Trial ``t``'s validation score through this target's runtime, on the file it
        loads (a converted one; None where none was recorded). An int8 ``.tflite`` is
        LiteRT's own quantization, so its score can differ from the ONNX candidate's."""
        converted = target_files(t.info).get(self.target)
        return converted.val_accuracy if converted is not None else None

    def file_of(self, t: TrialRecord) -> str | None:
        """The file this target loads for trial ``t``: its converted file, else its ONNX."""
        converted = target_files(t.info).get(self.target)
        return converted.path if converted is not None else t.onnx


def target_fronts(records: RunRecord | Mapping[str, Any]) -> tuple[TargetFront, ...]:
    """The front of each target alone (module doc), in ``--target`` order; empty for a run
    over one target, or whose objectives name no target (its fronts would be the joint one).

    Candidates are the complete trials within every budget with a finite value for every
    objective, less the ones the joint front hides for hopeless accuracy (a non-baseline
    trial under ``hopeless_below``)."""
    run = as_run(records)
    objectives = objective_infos(run)
    if len(run.targets) < 2 or not any(o.target for o in objectives):
        return ()
    pool = [t for t in run.trials if t.is_complete and t.feasible and not _hopeless(run, t)]
    out = []
    for target in run.targets:
        judged = tuple(o for o in objectives if o.target in (None, target))
        points, members = [], []
        for t in pool:
            vector = _vector(t, judged)
            if vector is not None:
                points.append(vector)
                members.append(t)
        front = pareto_front(points, [o.maximize for o in judged])
        out.append(
            TargetFront(
                target=target,
                objectives=judged,
                runtime=target_runtime(run.trials, target),
                members=tuple(members[i] for i in front),
            )
        )
    return tuple(out)


def _hopeless(run: RunRecord, t: TrialRecord) -> bool:
    bar, acc = run.hopeless_below, t.val_accuracy
    return bar is not None and not t.baseline and acc is not None and acc < bar


def _vector(t: TrialRecord, judged: Sequence[ObjectiveInfo]) -> list[float] | None:
    out = []
    for o in judged:
        v = t.values.get(o.name)
        if not isinstance(v, int | float) or not math.isfinite(v):
            return None
        out.append(float(v))
    return out
