"""Run a Candidate through the stages: torch stages, export, ONNX stages -> one ONNX file.

The torch-phase result (after prune and fine-tune) is cached by the hash of the model, data,
seed and torch-stage configs, as its exported fp32 ONNX plus an info file: trials that share
that prefix reuse it instead of retraining. An entry records the SHA-256 of its files when
written; one that no longer matches (changed, truncated, or from an edgeopt that recorded none)
is discarded and built again.

``build(..., keep_module=True)`` (a run with a LiteRT target, whose converter reads torch)
also hands back the final torch module (QAT's fake quantization switched off: its weights in
plain float) and the calibration inputs of the candidate's quantize step: the cache keeps
no module (a run directory never holds a pickled one), so such a build skips the cache's
shortcut and runs its torch stages (it still publishes its entry).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.candidate import Candidate
from edgeopt.data import DataSource, first_inputs, synthetic_inputs
from edgeopt.errors import CandidateError
from edgeopt.inputs import ModelInputs
from edgeopt.loading import LoadedModel
from edgeopt.stages import STAGES, StageContext
from edgeopt.stages.quantize_config import QuantizeConfig, calibration_inputs

if TYPE_CHECKING:
    from edgeopt.stages.base import StageOutput

EXPORT_ATOL = 1e-4
"""Export parity tolerance of a torch model; a stage whose model runs int8 kernels in ORT
(QAT) states its own relative one (``StageOutput.export_rel_error``)."""

log = logging.getLogger(__name__)

CACHE_FILES = ("model.onnx", "info.json")
CACHE_HASHES = "sha256.json"


@dataclass(frozen=True)
class PipelineInputs:
    """What every candidate starts from.

    ``salt`` identifies the original model, data and seed (part of every cache key);
    ``cache_dir`` holds torch-phase results shared across trials.
    """

    model: LoadedModel
    data: DataSource | None
    profile: Any  # HardwareProfile (possibly merged over several targets)
    seed: int
    cache_dir: Path
    salt: str
    round_samples: int | None = None
    """Samples per fine-tune round, from the run's probe (``StageContext.round_samples``)."""


@dataclass
class BuildResult:
    """The candidate's final ONNX file, its fp32 export, and what the stages reported;
    with ``keep_module``, its final torch module (on the CPU; None for an ONNX input) and the
    calibration inputs its quantize step draws (that step's sample count, its default
    without one)."""

    onnx_path: Path
    fp32_path: Path
    info: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool = False
    module: Any = None
    calibration: np.ndarray | None = None


def parity_inputs(inputs: PipelineInputs) -> np.ndarray:
    """A few real validation inputs (or seeded synthetic ones) for the export parity check."""
    if inputs.data is not None:
        return first_inputs(inputs.data, "val", 8)
    if not inputs.model.inputs.is_single:
        return inputs.model.inputs.synthetic(8, inputs.seed)
    return synthetic_inputs(inputs.model.input_shape, 8, inputs.seed)


def _export_inputs(model: LoadedModel) -> tuple[int, ...] | ModelInputs:
    """What ``export_onnx`` takes for ``model``: its sample shape, or its inputs when several."""
    return model.input_shape if model.inputs.is_single else model.inputs


def build(
    candidate: Candidate,
    inputs: PipelineInputs,
    out_dir: Path,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    keep_module: bool = False,
) -> BuildResult:
    """Apply ``candidate`` to the original model; the result is ``out_dir/model.onnx``.

    Raises CandidateError naming the stage that failed. ``on_stage(name)`` is called as each
    stage starts (the trial runner records it to say where a hung trial was).
    ``keep_module``: also return the torch module and calibration inputs (module doc).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(
        workdir=out_dir,
        profile=inputs.profile,
        data=inputs.data,
        teacher=inputs.model.module,
        input_shape=inputs.model.input_shape,
        inputs=None if inputs.model.inputs.is_single else inputs.model.inputs,
        seed=inputs.seed,
        on_epoch=on_epoch,
        cache_dir=inputs.cache_dir,
        round_samples=inputs.round_samples,
    )
    fp32, info, hit, module = _torch_phase(candidate, inputs, ctx, on_stage, keep_module)
    seconds = dict(info.get("seconds", {})) if not hit else {}
    if hit and info.get("seconds"):
        info = {**info, "cache_saved_s": sum(info["seconds"].values())}
    path = fp32
    for step in candidate.onnx_steps():
        stage = STAGES[step.stage]
        if stage.is_identity(step.config) and not stage.must_run(fp32):
            continue
        if on_stage:
            on_stage(step.stage)
        t0 = time.perf_counter()
        out = stage.apply(path, step.config, ctx)
        seconds[step.stage] = time.perf_counter() - t0
        path = out.artifact
        info = {**info, **stage_info(step.stage, out)}  # e.g. the nodes kept in fp32
    info = {**info, "seconds": seconds}
    final = out_dir / "model.onnx"
    if path != final:
        shutil.copyfile(path, final)
    if path not in (fp32, final):
        Path(path).unlink(missing_ok=True)
    if fp32 in (out_dir / "input.onnx", out_dir / "fp32.onnx"):  # copies made for this build
        fp32.unlink(missing_ok=True)
    if not keep_module:
        return BuildResult(final, fp32, info, hit)
    quant = [s.config for s in candidate.onnx_steps() if isinstance(s.config, QuantizeConfig)]
    samples = quant[0].calibration_samples if quant else QuantizeConfig().calibration_samples
    calibration = calibration_inputs(ctx, samples)
    kept = None
    if module is not None:  # QAT's fake quantization off: LiteRT's quantizer does its own
        from edgeopt.training.fake_quant import float_copy

        kept = float_copy(module.cpu().eval())
    return BuildResult(final, fp32, info, hit, kept, calibration)


def _torch_phase(
    candidate: Candidate,
    inputs: PipelineInputs,
    ctx: Any,
    on_stage: Callable[[str], None] | None,
    keep_module: bool = False,
) -> tuple[Path, dict[str, Any], bool, Any]:
    from edgeopt.onnx_export import export_onnx, inline_external_data

    active = [s for s in candidate.torch_steps() if not STAGES[s.stage].is_identity(s.config)]
    if inputs.model.is_onnx:
        if active:
            raise CandidateError(active[0].stage, "an ONNX input model cannot take torch stages")
        # weights in external files would not follow the model into the trial's folder
        path = inline_external_data(inputs.model.onnx_path, ctx.workdir, "input.onnx")  # type: ignore[arg-type]
        return path, {}, False, None
    key = Candidate(tuple(active)).torch_key(inputs.salt)
    entry = inputs.cache_dir / key
    cached = None if keep_module else _cached(entry)  # a hit has no module to hand back
    if cached is not None:
        return entry / "model.onnx", cached, True, None
    module = copy.deepcopy(inputs.model.module)
    info: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    rel_error: float | None = None
    for step in active:
        if on_stage:
            on_stage(step.stage)
        stage = STAGES[step.stage]
        t0 = time.perf_counter()
        out = stage.apply(module, step.config, ctx)
        seconds[step.stage] = time.perf_counter() - t0
        module = out.artifact
        info.update(stage_info(step.stage, out))
        if out.export_rel_error is not None:
            rel_error = out.export_rel_error
    if on_stage:
        on_stage("export")
    t0 = time.perf_counter()
    inputs.cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=inputs.cache_dir))
    try:
        export_onnx(
            module,
            _export_inputs(inputs.model),
            tmp / "model.onnx",
            check_inputs=parity_inputs(inputs),
            atol=EXPORT_ATOL,
            rel_error=rel_error,
        )
        seconds["export"] = time.perf_counter() - t0
        info["seconds"] = seconds  # what building this prefix cost; a cache hit saves it
        (tmp / "info.json").write_text(json.dumps(info, default=str))
        hashes = {name: _sha256(tmp / name) for name in CACHE_FILES}
        (tmp / CACHE_HASHES).write_text(json.dumps(hashes))
        own = None
        try:
            tmp.rename(entry)  # atomic publish; another worker may have won the race
        except OSError:
            if keep_module:  # the ONNX file of this very module, not the entry's
                own = shutil.copyfile(tmp / "model.onnx", ctx.workdir / "fp32.onnx")
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return (own if own is not None else entry / "model.onnx"), info, False, module


def stage_info(stage: str, out: StageOutput[Any]) -> dict[str, Any]:
    """What a stage reported, keyed ``"{stage}.{key}"`` for the trial's info (achieved MACs,
    training history; a stated export tolerance as ``"{stage}.export_rel_error"``)."""
    info = {f"{stage}.{k}": v for k, v in out.info.items()}
    if out.export_rel_error is not None:
        info[f"{stage}.export_rel_error"] = out.export_rel_error
    return info


def _cached(entry: Path) -> dict[str, Any] | None:
    """The info of the cache entry ``entry`` when its files still match the SHA-256 recorded
    when it was written; otherwise (changed, truncated, no hashes) it is discarded: None."""
    if not entry.is_dir():
        return None
    try:
        recorded = json.loads((entry / CACHE_HASHES).read_text())
        if all(recorded.get(name) == _sha256(entry / name) for name in CACHE_FILES):
            info = json.loads((entry / "info.json").read_text())
            if isinstance(info, dict):
                return info
    except (OSError, ValueError, AttributeError):
        pass
    log.warning("cache entry %s does not match the SHA-256 recorded for it: rebuilding it", entry)
    trash = entry.with_name(f".{entry.name}-discarded-{os.getpid()}")
    try:
        entry.rename(trash)  # another worker may be discarding it too
    except OSError:
        return None
    shutil.rmtree(trash, ignore_errors=True)
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
