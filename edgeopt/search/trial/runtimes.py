"""A candidate in the files its targets load: the trial's conversion stage.

After the pipeline wrote the candidate's ``model.onnx``, the trial child converts it once per
distinct runtime among the run's targets that is not ONNX Runtime (``openvino``:
``model.xml``/``.bin``, ``ort-format``: ``model.ort`` plus its operator config), beside the
ONNX file, in stage ``convert:<target>``. A converter's error fails the trial with its reason;
so does a conversion whose top-1 agreement with the ONNX candidate on the first
``PARITY_SAMPLES`` validation inputs is below its runtime's tolerance
(``RuntimeKind.min_agreement``). Each converted target's validation score is taken through
its own runtime. Converters and the converted files' runtimes run in one runtime child per
candidate (``edgeopt.runtime_child``); a child that dies fails the candidate with the signal.

What the child records (``TrialResult.info["runtime_files"]``), per target name::

    {"runtime": "openvino", "files": [absolute paths], "conversion": {converter facts},
     "agreement": 0.998, "val_accuracy": 0.93}

and what the search keeps in the study (the trial's ``info["target_files"]``): the same with
``files`` relative to the run directory and their ``sha256``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.data import DataSource, first_inputs
from edgeopt.errors import CandidateError, ConversionError
from edgeopt.export.convert import Artifact, ConvertOptions, convert
from edgeopt.measure.accuracy import onnx_logits, onnx_score, source_task_metric
from edgeopt.measure.service import precision_hint
from edgeopt.profiles import HardwareProfile, Targets
from edgeopt.profiles.runtime_spec import RUNTIMES, Runtime
from edgeopt.rundir import RunDir
from edgeopt.runtime_child import ChildDied, shared_runtime_child
from edgeopt.search.study.artifacts import sha256_of
from edgeopt.search.trial.protocol import TrialRequest, scoring_inputs

log = logging.getLogger(__name__)

PARITY_SAMPLES = 256
"""Validation inputs a conversion is compared with its ONNX candidate on."""
INFO_KEY = "runtime_files"
"""``TrialResult.info`` key of the child's record (module doc)."""
ATTR = "target_files"
"""Key in a trial's ``info`` attribute: the record kept in the study (module doc)."""
INT8_OPS = frozenset(
    {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
)
"""ONNX ops that make a candidate int8 for the parity tolerance."""

Scorer = Callable[[Path, str], float]
"""``(artifact, precision_hint) -> validation score`` through the artifact's runtime."""


def converted_targets(profiles: Sequence[HardwareProfile]) -> list[HardwareProfile]:
    """The profiles whose runtime loads a file converted from the ONNX candidate (edgeopt
    converts to it here); the others run or estimate the ONNX file itself. A runtime whose
    converter reads the torch model (LiteRT) is left to its estimate on the ONNX file: the
    trial does not keep a torch model to convert."""
    return [
        p
        for p in profiles
        if p.runtime_name != Runtime.ORT
        and RUNTIMES[p.runtime_name].convertible
        and not RUNTIMES[p.runtime_name].needs_torch
    ]


def is_int8(onnx_path: Path) -> bool:
    """True when the ONNX file holds quantized ops (its parity tolerance is int8's)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(n.op_type in INT8_OPS for n in graph.node)


def agreement(
    onnx_path: Path, artifact: Path, x: np.ndarray, *, threads: int, precision_hint: str = "f32"
) -> float:
    """Top-1 agreement of ``artifact`` (in its runtime) with the ONNX file on ``x``."""
    a = onnx_logits(onnx_path, x, threads=threads)
    b = onnx_logits(artifact, x, threads=threads, precision_hint=precision_hint)
    return float((a.reshape(len(a), -1).argmax(1) == b.reshape(len(b), -1).argmax(1)).mean())


def check_parity(
    onnx_path: Path,
    artifact: Path,
    x: np.ndarray,
    *,
    target: str,
    min_agreement: float,
    threads: int,
    precision_hint: str = "f32",
) -> float:
    """``agreement``; CandidateError (stage ``convert:<target>``) naming it when it is below
    ``min_agreement``."""
    agreed = agreement(onnx_path, artifact, x, threads=threads, precision_hint=precision_hint)
    if agreed < min_agreement:
        raise CandidateError(
            f"convert:{target}",
            f"the {artifact.suffix} file agrees with the ONNX candidate on {agreed:.2%} of "
            f"{len(x)} validation inputs' top-1 (needs >= {min_agreement:.2%})",
        )
    return agreed


def convert_for_targets(
    onnx_path: Path,
    profiles: Sequence[HardwareProfile],
    x: np.ndarray,
    *,
    threads: int,
    score: Scorer | None = None,
    on_stage: Callable[[str], None] | None = None,
    min_agreement: Mapping[Runtime, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Convert ``onnx_path`` for each of ``converted_targets(profiles)`` beside it, once per
    runtime and converter options, checking parity on ``x[:PARITY_SAMPLES]`` (tolerances:
    ``min_agreement`` where given, else the runtime's for this candidate's precision) and
    scoring each target through its runtime with ``score``. The child's record (module doc);
    CandidateError (stage ``convert:<target>``) for a conversion that fails or disagrees."""
    out: dict[str, dict[str, Any]] = {}
    made: dict[tuple[Runtime, ConvertOptions], Artifact] = {}
    x = x[:PARITY_SAMPLES]
    int8: bool | None = None
    stage = "convert"
    try:
        with shared_runtime_child(threads):
            for profile in converted_targets(profiles):
                runtime, options = profile.runtime_name, ConvertOptions.for_profile(profile)
                stage = f"convert:{profile.name}"
                hint = precision_hint(profile)
                if (runtime, options) not in made:
                    if on_stage is not None:
                        on_stage(stage)
                    taken = sum(r == runtime for r, _ in made)
                    stem = onnx_path.stem + (f"-{profile.name}" if taken else "")
                    try:
                        artifact = convert(onnx_path, runtime, onnx_path.with_name(stem), options)
                    except ConversionError as exc:
                        raise CandidateError(stage, exc.message) from exc
                    made[(runtime, options)] = artifact
                paths = list(made[(runtime, options)].paths)
                if min_agreement is not None and runtime in min_agreement:
                    bar = min_agreement[runtime]
                else:
                    int8 = is_int8(onnx_path) if int8 is None else int8
                    bar = RUNTIMES[runtime].min_agreement(int8)
                agreed = check_parity(
                    onnx_path,
                    paths[0],
                    x,
                    target=profile.name,
                    min_agreement=bar,
                    threads=threads,
                    precision_hint=hint,
                )
                entry: dict[str, Any] = {
                    "runtime": runtime.value,
                    "files": [str(p) for p in paths],
                    "conversion": dict(made[(runtime, options)].facts),
                    "agreement": agreed,
                }
                if score is not None:
                    entry["val_accuracy"] = score(paths[0], hint)
                out[profile.name] = entry
    except ChildDied as exc:
        raise CandidateError(stage, str(exc)) from exc
    return out


def trial_conversions(
    req: TrialRequest,
    onnx_path: Path,
    data: DataSource | None,
    input_shape: tuple[int, ...],
    on_stage: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """``convert_for_targets`` for a trial child's request: parity on the first validation
    inputs (seeded synthetic ones without data), each target scored on the validation split
    as the ONNX candidate is (the run's metric; fidelity to the original without data)."""
    profiles = Targets.from_texts(req.profiles).profiles
    if not converted_targets(profiles):
        return {}
    threads = req.threads
    if data is not None:
        x = first_inputs(data, "val", PARITY_SAMPLES)

        def score(path: Path, hint: str) -> float:
            assert data is not None
            return source_task_metric(
                path, data, "val", req.metric, threads=threads, precision_hint=hint
            )
    else:
        x, _ = scoring_inputs(None, "val", input_shape)

        def score(path: Path, hint: str) -> float:
            return onnx_score(
                path, x, None, reference=req.reference_onnx, threads=threads, precision_hint=hint
            )

    return convert_for_targets(
        onnx_path, profiles, np.asarray(x), threads=threads, score=score, on_stage=on_stage
    )


def study_record(run: RunDir, info: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The child's record (``info[INFO_KEY]``) as the study keeps it: files relative to the
    run directory, with their sha256."""
    out: dict[str, dict[str, Any]] = {}
    for target, entry in (info.get(INFO_KEY) or {}).items():
        files = [Path(f) for f in entry["files"]]
        out[target] = {
            **entry,
            "files": [run.relative(f) for f in files],
            "sha256": [sha256_of(f) for f in files],
        }
    return out


def recorded(attrs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A trial's ``target_files`` record, from its user attributes."""
    return (attrs.get("info") or {}).get(ATTR)


def target_paths(run: RunDir, record: Mapping[str, Any] | None) -> dict[str, Path]:
    """Target name -> the file its runtime loads, from a trial's ``target_files`` record."""
    return {t: run.inside(e["files"][0]) for t, e in (record or {}).items()}


def original_files(run: RunDir, profiles: Sequence[HardwareProfile]) -> dict[str, Path]:
    """Measured profile name -> the original model converted for its runtime
    (``baseline/<profile>/original.xml``), for the measured targets that run a converted file:
    candidates are timed against it in their own runtime."""
    return {
        p.name: run.baseline_dir / p.name / f"original{RUNTIMES[p.runtime_name].suffix}"
        for p in converted_targets(profiles)
        if p.measured
    }


def convert_originals(run: RunDir, profiles: Sequence[HardwareProfile]) -> dict[str, Path]:
    """``original_files``, converted from ``run.baseline_onnx`` where missing (set-up).
    ConversionError when the original itself does not convert."""
    found = original_files(run, profiles)
    by_name = {p.name: p for p in profiles}
    with shared_runtime_child():
        for name, path in found.items():
            if not path.is_file():
                p = by_name[name]
                convert(run.baseline_onnx, p.runtime_name, path, ConvertOptions.for_profile(p))
    return found


def target_scores(
    run: RunDir,
    record: Mapping[str, Any] | None,
    profiles: Sequence[HardwareProfile],
    score: Scorer,
) -> dict[str, float]:
    """``score`` of a trial's file per target (its ``target_files`` record), in the target's
    runtime; targets whose file is not on this machine, or whose runtime's process died
    (a warning says which), are left out."""
    by_name = {p.name: p for p in profiles}
    out: dict[str, float] = {}
    for target, path in target_paths(run, record).items():
        if target in by_name and path.is_file():
            try:
                out[target] = score(path, precision_hint(by_name[target]))
            except ChildDied as exc:
                log.warning("%s not scored on %s: %s", path.name, target, exc)
    return out
