"""Which runtime timed each measured number of a run, and what scored its accuracy: the
reports' footnotes say it from the records, never from the run's settings.

A target's runtime is that of its trials' converted files (``edgeopt.record_targets``); a
target no trial recorded one for loads the candidate's ONNX file in ONNX Runtime. Every
number measured here ran on this host's CPU (ORT's CPU provider, OpenVINO's CPU plugin,
LiteRT's interpreter with XNNPACK). Accuracy and the task metrics are always scored on each
candidate's ONNX file with ONNX Runtime (the search's validation score, finalize's test
split); a converted file is timed only once its top-1 agreement with that ONNX file passed
its runtime's parity check (``edgeopt.search.trial.runtimes``).
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeopt.metrics import Metric
from edgeopt.profiles.runtime_spec import RUNTIMES, Runtime, RuntimeKind
from edgeopt.record_targets import target_files
from edgeopt.records import RunRecord, TrialRecord

ORT_CPU = RUNTIMES[Runtime.ORT].host_words


def runtime_kind(runtime: str) -> RuntimeKind | None:
    """The runtime table's row of ``runtime``; None for one this version does not know."""
    try:
        return RUNTIMES[Runtime(runtime)]
    except ValueError:
        return None


def target_runtime(trials: Sequence[TrialRecord], target: str) -> str:
    """The runtime of ``target``'s converted files (the first trial that recorded one), else
    ``ort``: the target loads (or its estimate was made for) the candidate's ONNX file."""
    for t in trials:
        converted = target_files(t.info).get(target)
        if converted is not None:
            return converted.runtime
    return Runtime.ORT.value


def runtime_words(runtime: str) -> str:
    """``ORT CPU``, ``OpenVINO CPU`` ...: the runtime that timed a measured number here."""
    known = runtime_kind(runtime)
    if known is None:
        return runtime
    return known.host_words


def _measured(run: RunRecord, target: str) -> bool:
    """True when a complete trial has a number (other than its file size) measured on
    ``target``."""
    return any(
        t.is_complete and e.provenance == "measured"
        for t in run.trials
        for m in Metric
        if m != Metric.SIZE_MB and (e := t.metric(target, m)) is not None
    )


def measured_on(run: RunRecord) -> str:
    """What "measured" stands for: ``ORT CPU`` where every measured number ran in ONNX
    Runtime (or none was measured), else each runtime with the targets it timed, ONNX
    Runtime's first and unnamed: ``ORT CPU; openvino-host: OpenVINO CPU``."""
    by_runtime: dict[str, list[str]] = {}
    for target in run.targets:
        if _measured(run, target):
            by_runtime.setdefault(target_runtime(run.trials, target), []).append(target)
    parts = [ORT_CPU] if Runtime.ORT.value in by_runtime or not by_runtime else []
    parts += [
        f"{', '.join(targets)}: {runtime_words(r)}"
        for r, targets in by_runtime.items()
        if r != Runtime.ORT.value
    ]
    return "; ".join(parts)


def converted(run: RunRecord) -> bool:
    """True when a target loads converted files rather than the candidate's ONNX file (its
    accuracy is still the ONNX file's: module doc)."""
    return any(target_runtime(run.trials, t) != Runtime.ORT.value for t in run.targets)
