"""A candidate in the files its targets load: the trial's conversion stage.

After the pipeline wrote the candidate's ``model.onnx``, the trial child converts it once per
distinct runtime among the run's targets that is not ONNX Runtime (``openvino``:
``model.xml``/``.bin``, ``ort-format``: ``model.ort`` plus its operator config), beside the
ONNX file, in stage ``convert:<target>``. A LiteRT target's ``model.tflite`` is converted
from the candidate's torch module instead (litert-torch reads torch: :class:`TorchCandidate`,
which the pipeline hands back for such a run), quantized as the candidate is (its int8
quantize step: AEQ's ``int8_static`` calibrated on that step's calibration inputs, with the
target's weight granularity; dynamic: ``int8_dynamic``; float: ``fp32``); a target that loads
only full-integer files (``[runtime] io_type``: Edge TPU, TFLite Micro) gets ``int8_static``
with int8 inputs and outputs whatever the candidate, since its device runs nothing else (the
parity check then holds it to the int8 tolerance). A run from an ONNX model has no torch
module: its estimated LiteRT targets stay estimated on the ONNX file (a measured one is
refused at set-up). A converter's error fails the trial with its reason;
so does a conversion whose top-1 agreement with the ONNX candidate on the first
``PARITY_SAMPLES`` validation inputs is below its runtime's tolerance
(``RuntimeKind.min_agreement``). A quantized LiteRT file is not the candidate's ORT
quantization but ai-edge-quantizer's (min-max, every op int8: the ORT options a mixed run
draws, e.g. float nodes, do not reach it), so its agreement with the ONNX candidate is
recorded, not held to a bar: the conversion is checked on litert-torch's float file against
the torch candidate, at the float tolerance, and what AEQ's int8 costs is the file's own
validation score. Each converted target's validation score is taken through
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.candidate import Candidate
from edgeopt.data import DataSource, first_inputs
from edgeopt.errors import CandidateError, ConfigError, ConversionError
from edgeopt.export.convert import Artifact, ConvertOptions, convert
from edgeopt.export.litert import to_litert
from edgeopt.measure.accuracy import onnx_logits, onnx_score, source_task_metric
from edgeopt.measure.service import precision_hint
from edgeopt.profiles import HardwareProfile, Targets
from edgeopt.profiles.runtime_spec import RUNTIMES, Runtime
from edgeopt.record_targets import TARGET_FILES
from edgeopt.rundir import RunDir
from edgeopt.runtime_child import ChildDied, shared_runtime_child
from edgeopt.search.study.artifacts import sha256_of
from edgeopt.search.trial.protocol import TrialRequest, scoring_inputs
from edgeopt.stages.quantize_config import QuantizeConfig, QuantMode

log = logging.getLogger(__name__)

PARITY_SAMPLES = 256
"""Validation inputs a conversion is compared with its ONNX candidate on."""
INFO_KEY = "runtime_files"
"""``TrialResult.info`` key of the child's record (module doc)."""
ATTR = TARGET_FILES
"""Key in a trial's ``info`` attribute: the record kept in the study (module doc)."""
INT8_OPS = frozenset(
    {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
)
"""ONNX ops that make a candidate int8 for the parity tolerance."""

Scorer = Callable[[Path, str], float]
"""``(artifact, precision_hint) -> validation score`` through the artifact's runtime."""


@dataclass(frozen=True)
class TorchCandidate:
    """What a LiteRT target's converter reads: the candidate's final torch module (one
    sample's ``input_shape``), the calibration inputs of its quantize step and the LiteRT
    quantization mode that follows the candidate (:func:`litert_mode`)."""

    module: Any
    input_shape: tuple[int, ...]
    calibration: np.ndarray | None
    quant_mode: str


def converted_targets(profiles: Sequence[HardwareProfile]) -> list[HardwareProfile]:
    """The profiles whose runtime loads a file edgeopt converts here (from the ONNX candidate,
    or for LiteRT from its torch module); the others run or estimate the ONNX file itself."""
    return [p for p in profiles if p.runtime_name != Runtime.ORT and convertible_here(p)]


def convertible_here(profile: HardwareProfile) -> bool:
    """True when edgeopt converts to ``profile``'s runtime here."""
    return RUNTIMES[profile.runtime_name].convertible


def needs_module(profiles: Sequence[HardwareProfile]) -> bool:
    """True when a target's converter reads the candidate's torch module (LiteRT)."""
    return any(RUNTIMES[p.runtime_name].needs_torch for p in converted_targets(profiles))


_INT8_MODES = {
    QuantMode.INT8_STATIC: "int8_static",
    QuantMode.ORT_DEFAULT: "int8_static",
    QuantMode.INT8_DYNAMIC: "int8_dynamic",
}


def litert_mode(candidate: Candidate) -> str:
    """The LiteRT quantization mode that follows ``candidate``'s quantize step: ``int8_static``
    for a static int8 one, ``int8_dynamic`` for a dynamic one, else ``fp32``."""
    for step in candidate.onnx_steps():
        if isinstance(step.config, QuantizeConfig):
            return _INT8_MODES.get(step.config.mode, "fp32")
    return "fp32"


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
    torch: TorchCandidate | None = None,
) -> dict[str, dict[str, Any]]:
    """Convert ``onnx_path`` for each of ``converted_targets(profiles)`` beside it, once per
    runtime and converter options, checking parity on ``x[:PARITY_SAMPLES]`` (tolerances:
    ``min_agreement`` where given, else the runtime's for this candidate's precision) and
    scoring each target through its runtime with ``score``; LiteRT targets from ``torch``
    (none without it: module doc). The child's record (module doc); CandidateError (stage
    ``convert:<target>``) for a conversion that fails or disagrees."""
    out: dict[str, dict[str, Any]] = {}
    made: dict[tuple[Runtime, ConvertOptions], Artifact] = {}
    x = x[:PARITY_SAMPLES]
    int8: bool | None = None
    stage = "convert"
    try:
        with shared_runtime_child(threads):
            for profile in converted_targets(profiles):
                runtime, lite = profile.runtime_name, RUNTIMES[profile.runtime_name].needs_torch
                if lite and torch is None:
                    continue  # an ONNX model's run: estimated on the ONNX file
                options = ConvertOptions.for_profile(profile, _mode(profile, torch))
                stage = f"convert:{profile.name}"
                hint = precision_hint(profile)
                if (runtime, options) not in made:
                    if on_stage is not None:
                        on_stage(stage)
                    taken = sum(r == runtime for r, _ in made)
                    stem = onnx_path.stem + (f"-{profile.name}" if taken else "")
                    dest = onnx_path.with_name(stem)
                    try:
                        if lite:
                            assert torch is not None
                            artifact = to_litert(
                                torch.module,
                                torch.input_shape,
                                dest,
                                options,
                                torch.calibration,
                                parity_inputs=None if options.quant_mode == "fp32" else x,
                            )
                        else:
                            artifact = convert(onnx_path, runtime, dest, options)
                    except (ConversionError, ConfigError) as exc:
                        raise CandidateError(stage, exc.message) from exc
                    made[(runtime, options)] = artifact
                paths = list(made[(runtime, options)].paths)
                facts = made[(runtime, options)].facts
                own_int8 = lite and options.quant_mode != "fp32"
                if min_agreement is not None and runtime in min_agreement:
                    bar = min_agreement[runtime]
                elif own_int8:
                    bar = RUNTIMES[runtime].min_agreement(False)
                else:
                    int8 = is_int8(onnx_path) if int8 is None else int8
                    bar = RUNTIMES[runtime].min_agreement(int8 or options.quant_mode != "fp32")
                if own_int8:
                    # AEQ's int8, not the candidate's ORT int8: the conversion is held to the
                    # float bar on litert-torch's float file; what AEQ's quantization costs is
                    # the file's own score, and its agreement with the candidate is recorded
                    _check_conversion(facts, bar, profile.name, len(x))
                    agreed = agreement(onnx_path, paths[0], x, threads=threads, precision_hint=hint)
                else:
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
                    "conversion": dict(facts),
                    "agreement": agreed,
                }
                if score is not None:
                    entry["val_accuracy"] = score(paths[0], hint)
                out[profile.name] = entry
    except ChildDied as exc:
        raise CandidateError(stage, str(exc)) from exc
    return out


def _check_conversion(facts: Mapping[str, Any], bar: float, target: str, n: int) -> None:
    """CandidateError (stage ``convert:<target>``) when litert-torch's float file agreed
    with the torch candidate on less than ``bar`` of the parity inputs' top-1."""
    agreed = float(facts["conversion_agreement"])
    if agreed < bar:
        raise CandidateError(
            f"convert:{target}",
            f"litert-torch's float .tflite agrees with the torch candidate on {agreed:.2%} of "
            f"{n} validation inputs' top-1 (needs >= {bar:.2%}), before any quantization",
        )


def _mode(profile: HardwareProfile, torch: TorchCandidate | None) -> str:
    """The LiteRT mode for ``profile``: full-integer where its device needs it, else the
    candidate's (module doc); ``fp32`` for the other runtimes' options."""
    if torch is None or not RUNTIMES[profile.runtime_name].needs_torch:
        return "fp32"
    return "int8_static" if profile.runtime and profile.runtime.io_type else torch.quant_mode


def trial_conversions(
    req: TrialRequest,
    onnx_path: Path,
    data: DataSource | None,
    input_shape: tuple[int, ...],
    on_stage: Callable[[str], None],
    torch: TorchCandidate | None = None,
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
        onnx_path,
        profiles,
        np.asarray(x),
        threads=threads,
        score=score,
        on_stage=on_stage,
        torch=torch,
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


def convert_originals(
    run: RunDir,
    profiles: Sequence[HardwareProfile],
    module: Any = None,
    input_shape: tuple[int, ...] | None = None,
) -> dict[str, Path]:
    """``original_files``, converted where missing (set-up): from ``run.baseline_onnx``, or
    for LiteRT from the original torch ``module`` (fp32, one sample's ``input_shape``).
    ConversionError when the original itself does not convert; ConfigError for a measured
    LiteRT target without a torch module (an ONNX model)."""
    found = original_files(run, profiles)
    by_name = {p.name: p for p in profiles}
    with shared_runtime_child():
        for name, path in found.items():
            if path.is_file():
                continue
            p = by_name[name]
            options = ConvertOptions.for_profile(p)
            if not RUNTIMES[p.runtime_name].needs_torch:
                convert(run.baseline_onnx, p.runtime_name, path, options)
            elif module is None or input_shape is None:
                raise ConfigError(
                    f"--target {name}: {RUNTIMES[p.runtime_name].label} files are converted "
                    "from the torch model, and this run's model is an ONNX file",
                    hint="optimize the torch model (.pt) for this target, or target cpu",
                )
            else:
                to_litert(module, input_shape, path, options)
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
