"""Take one trial out of a run: its exact ONNX file plus a ``.json`` with its config and
numbers, and optionally a rebuild from the config that checks it gives the same model."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.candidate import Candidate
from edgeopt.config import RunConfig
from edgeopt.data import eval_count, first_inputs, open_source, synthetic_inputs
from edgeopt.data.metadata import sidecar_path, stamp, write_sidecar
from edgeopt.data.preprocess import Preprocess
from edgeopt.errors import ConfigError
from edgeopt.export.convert import Artifact, ConvertOptions, convert
from edgeopt.fileio import write_atomic
from edgeopt.loading import load_spec
from edgeopt.measure.accuracy import onnx_logits
from edgeopt.pipeline import PipelineInputs, build
from edgeopt.profiles import HardwareProfile
from edgeopt.profiles.runtime_spec import Runtime
from edgeopt.records import MetricEntry, RunRecord, TrialRecord, TrialState, as_run
from edgeopt.rundir import Baseline, RunDir
from edgeopt.search.run.export_format import export_files, require_stored, stored_artifact
from edgeopt.search.study.artifacts import check_sha256, open_store
from edgeopt.search.study.context import run_targets
from edgeopt.search.trial.protocol import SYNTHETIC_N, SYNTHETIC_VAL_SEED
from edgeopt.stages.finetune_probe import recorded_round_samples

EXPORT_SCHEMA_VERSION = 1
# outputs of a rebuilt model must agree with the recorded one within this (absolute, plus
# relative to the largest recorded output): the same config on the same machine is
# deterministic, so anything above float noise means the model differs
REBUILD_ATOL = 1e-4
REBUILD_RTOL = 1e-4


@dataclass(frozen=True)
class RebuildCheck:
    """How closely a model rebuilt from the trial's config reproduces the recorded one."""

    max_abs_diff: float
    tolerance: float
    top1_agreement: float
    n_inputs: int
    inputs: str
    matches: bool


@dataclass(frozen=True)
class ExportResult:
    """What ``export_trial`` wrote; ``preprocess`` the ``X.preprocess.json`` of a run whose
    data has a preprocessing recipe (None otherwise)."""

    trial: int
    onnx: Path
    metadata: Path
    rebuild: RebuildCheck | None = None
    preprocess: Path | None = None
    artifact: Artifact | None = None
    """The runtime's files converted from ``onnx`` (``--format ort|openvino``), else None."""


def find_trial(records: RunRecord | Mapping[str, Any], number: int) -> TrialRecord:
    """The complete trial ``number``; ConfigError (with the front's numbers) otherwise."""
    run = as_run(records)
    front = [str(t.number) for t in run.trials if t.on_front]
    hint = (
        f"front trials: {', '.join(front)}"
        if front
        else "no trial is on the feasible front; see the report for complete trials"
    )
    t = run.trial(number)
    if t is None and number in run.unfinished:
        raise ConfigError(
            f"trial {number} has not finished: a worker is still running it, or it waits in "
            "the queue",
            hint="export it once it has finished; " + hint,
        )
    if t is None:
        raise ConfigError(f"run has no trial {number} (it has {len(run.trials)} trials)", hint=hint)
    if not t.is_complete:
        why = (
            f"failed in {t.fail_stage}: {t.fail_reason}"
            if t.state is TrialState.FAIL
            else f"was stopped early: {t.stopped_reason}"
        )
        raise ConfigError(f"trial {number} has no model: it {why}", hint=hint)
    if not t.onnx:
        raise ConfigError(f"trial {number} recorded no ONNX file", hint=hint)
    return t


def metadata(run: RunRecord, trial: TrialRecord, sha256: str) -> dict[str, Any]:
    """The ``.json`` written beside an exported model: config and numbers with provenance."""
    return {
        "schema_version": EXPORT_SCHEMA_VERSION,
        "trial": trial.number,
        "describe": trial.describe,
        "candidate": dict(trial.candidate),
        "params": dict(trial.params),
        "run_dir": run.run_dir,
        "source_onnx": trial.onnx,
        "onnx_sha256": sha256,
        "model": run.model_spec,
        "data": run.data,
        "seed": run.seed,
        "targets": list(run.targets),
        "accuracy_kind": run.accuracy_kind,
        "val_accuracy": trial.val_accuracy,
        "test_accuracy": trial.test_accuracy,
        "test_split": run.test_split,
        "size_mb": trial.size_mb,
        "measurements": _entries(trial.measurements),
        "on_front": trial.on_front,
        "feasible": trial.feasible,
        "constraints": dict(trial.constraints),
        "baseline": {
            "val_accuracy": run.original_val_accuracy,
            "test_accuracy": run.original_test_accuracy,
        },
    }


def _entries(measurements: Mapping[str, Mapping[str, MetricEntry]]) -> dict[str, Any]:
    """``{target: {metric: entry}}`` as the records write it."""
    return {t: {m: e.to_dict() for m, e in ms.items()} for t, ms in measurements.items()}


def export_paths(
    records: RunRecord | Mapping[str, Any], out: Path, runtime: Runtime = Runtime.ORT
) -> list[Path]:
    """Every file ``export_trial`` writes for ``out``: the model (in ``runtime``'s format:
    ``export_format.export_files``), ``X.json``, and ``X.preprocess.json`` when the run's
    data has a preprocessing recipe."""
    out = Path(out)
    paths = [*export_files(runtime, out), out.with_suffix(".json")]
    return paths + ([sidecar_path(out)] if as_run(records).preprocess is not None else [])


def export_trial(
    records: RunRecord | Mapping[str, Any],
    run_dir: Path | None,
    number: int,
    out: Path,
    *,
    rebuild: bool = False,
    artifacts: str | None = None,
    trust: Mapping[str, Any] | None = None,
    runtime: Runtime = Runtime.ORT,
    profile: HardwareProfile | None = None,
) -> ExportResult:
    """Copy trial ``number``'s ONNX file to ``out`` and write ``out`` with suffix ``.json``.

    For another ``runtime`` than ``ort``, ``out`` names that runtime's file (``.ort``,
    ``.xml``): the ONNX file is copied to ``out`` with suffix ``.onnx`` and converted from
    there (for ``profile``'s device, e.g. ``arm`` for a phone); ConversionError with the
    converter's reason when it does not convert. The ``.json`` records the runtime.

    The file comes from ``run_dir`` (the recorded path must lie inside it) when it is there,
    else from the artifact store (``artifacts``, else the one the records name); the copy
    must be a valid ONNX model; ConfigError otherwise (nothing is left at ``out``). With
    ``rebuild``, the candidate is built again from its config in a temporary folder (no
    shared cache: the torch phase re-runs) and compared with the recorded model.

    When the run's data has a preprocessing recipe (an image folder), the copy at ``out``
    carries it in its ONNX metadata and ``X.preprocess.json`` is written beside it; the
    recorded SHA-256 is checked on the bytes copied before that, and ``X.json`` records the
    exported file's own digest (``onnx_sha256``) and the recorded one
    (``source_onnx_sha256``).
    """
    from edgeopt.search.study.source import scratch_dir

    run = RunDir(run_dir) if run_dir is not None else None
    records = as_run(records)
    trial = find_trial(records, number)
    require_stored(run, trial.info, runtime, profile, number)  # a .tflite: the search's only
    artifact_out = Path(out)
    out = export_files(runtime, artifact_out)[0]  # the ONNX file
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out must name an .onnx file, got {out}", hint="e.g. model.onnx")
    recipe = Preprocess.from_dict(records.preprocess) if records.preprocess else None
    spec = artifacts or records.artifacts
    with scratch_dir() as downloads:
        src = _source_onnx(run, spec, trial, Path(downloads))
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot make the folder of --out {out}: {exc.strerror or exc}",
                hint="name a path in a folder you can write to, e.g. --out release/model.onnx",
            ) from exc
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.copyfile(src, tmp)
        try:
            # the very bytes handed out are the ones the study recorded
            check_sha256(tmp, trial.onnx_sha256, f"trial {number}'s model {src}")
            _check_onnx(tmp, f"trial {number}'s model {src}")
            # rebuild against the very bytes being exported
            check = rebuild_check(records, run_dir, trial, tmp, trust) if rebuild else None
            if recipe is not None:
                stamp(tmp, recipe)  # the copy handed out; the trial's file keeps its digest
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    artifact = None
    if runtime != Runtime.ORT:  # the search's own file where it is here, else converted now
        artifact = stored_artifact(run, trial.info, runtime, profile, artifact_out)
    if runtime != Runtime.ORT and artifact is None:
        artifact = convert(out, runtime, artifact_out, ConvertOptions.for_profile(profile))
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    meta = metadata(records, trial, digest)
    meta["runtime"] = runtime.value
    if artifact is not None:
        meta["artifact"] = [p.name for p in artifact.paths]
        meta["conversion"] = {**artifact.facts, "target": profile.name if profile else None}
    if check is not None:
        meta["rebuild"] = asdict(check)
    sidecar = None
    if recipe is not None:
        sidecar = write_sidecar(out, recipe)
        meta["source_onnx_sha256"] = trial.onnx_sha256
        meta["preprocess"] = recipe.to_dict()
    meta_path = write_atomic(out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return ExportResult(int(number), out, meta_path, check, sidecar, artifact)


def _source_onnx(run: RunDir | None, spec: str | None, trial: TrialRecord, dest: Path) -> Path:
    """The trial's ONNX file: local (inside the run directory) or downloaded into ``dest``."""
    from edgeopt.search.study.source import trial_onnx

    src = trial_onnx(
        run, lambda: open_store(spec, write=False) if spec else None, trial.to_dict(), dest
    )
    if not src.is_file():
        raise ConfigError(
            f"trial {trial.number}'s model {src} is missing",
            hint="the run directory was moved or cleaned; rebuild it with --rebuild",
        )
    return src


def _check_onnx(path: Path, what: str) -> None:
    """ConfigError unless ``path`` parses and passes the ONNX checker."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{what} is not a valid ONNX model: {first}",
            hint="the run directory was edited or damaged; re-run the search for this trial",
        ) from exc


def rebuild_check(
    records: RunRecord | Mapping[str, Any],
    run_dir: Path | None,
    trial: TrialRecord,
    recorded: Path,
    trust: Mapping[str, Any] | None = None,
) -> RebuildCheck:
    """Build the trial's candidate again as the search did and compare outputs on the
    validation inputs (synthetic ones for runs without data). The settings come from
    ``run_dir`` when it is a run directory, else from the records (a shared study); the
    model's trust flags, and a callable data source's reference (``trust["data"]``), only
    from ``trust`` (the command line), never from those."""
    import torch

    run = RunDir(run_dir) if run_dir is not None else None
    if run is not None and run.run_file.exists():
        baseline = run.read_baseline()
        config, salt, facts = run.read_config(), baseline.salt, baseline.stage_facts
    else:
        records = as_run(records)
        config = RunConfig.from_dict({**records.config, "storage": None})
        salt = str(records.salt)
        facts = Baseline.from_dict(records.baseline).stage_facts if records.baseline else {}
    flags = dict(trust or {})
    data_ref = flags.pop("data", None)
    model = load_spec(config.model.with_trust(**flags) if flags else config.model)
    spec = config.data.with_ref(data_ref) if config.data else None
    data = open_source(spec) if spec else None  # a changed folder or callable: refused
    profile = run_targets(config).merged  # refused when a profile changed since the run
    torch.set_num_threads(config.threads)
    with tempfile.TemporaryDirectory(prefix="edgeopt-rebuild-") as tmp:
        inputs = PipelineInputs(
            model=model,
            data=data,
            profile=profile,
            seed=config.seed,
            cache_dir=Path(tmp) / "cache",
            salt=salt,
            round_samples=recorded_round_samples(facts),  # the search's fine-tune rounds
        )
        result = build(Candidate.from_dict(trial.candidate), inputs, Path(tmp) / "build")
        if data is not None:  # an npz's whole split; a folder's first EVAL_SAMPLES
            x = first_inputs(data, "val", eval_count(data, "val"))
            what = "validation split"
        else:
            x = synthetic_inputs(model.input_shape, SYNTHETIC_N, SYNTHETIC_VAL_SEED)
            what = "synthetic inputs (no data in this run)"
        ref = onnx_logits(recorded, x)
        got = onnx_logits(result.onnx_path, x)
    diff = float(np.max(np.abs(ref.astype(np.float64) - got))) if ref.size else 0.0
    tol = REBUILD_ATOL + REBUILD_RTOL * float(np.max(np.abs(ref))) if ref.size else REBUILD_ATOL
    agree = float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1))) if ref.size else 1.0
    return RebuildCheck(diff, tol, agree, int(len(x)), what, diff <= tol)
