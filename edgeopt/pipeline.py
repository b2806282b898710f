"""Run a Candidate through the stages: torch stages, export, ONNX stages -> one ONNX file.

The torch-phase result (after prune and fine-tune) is cached by the hash of the model, data,
seed and torch-stage configs, as its exported fp32 ONNX plus an info file: trials that share
that prefix reuse it instead of retraining.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.candidate import Candidate
from edgeopt.data import DataBundle, synthetic_inputs
from edgeopt.errors import CandidateError
from edgeopt.loading import LoadedModel


@dataclass(frozen=True)
class PipelineInputs:
    """What every candidate starts from.

    ``salt`` identifies the original model, data and seed (part of every cache key);
    ``cache_dir`` holds torch-phase results shared across trials.
    """

    model: LoadedModel
    data: DataBundle | None
    profile: Any  # HardwareProfile (possibly merged over several targets)
    seed: int
    cache_dir: Path
    salt: str


@dataclass
class BuildResult:
    """The candidate's final ONNX file, its fp32 export, and what the stages reported."""

    onnx_path: Path
    fp32_path: Path
    info: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool = False


def parity_inputs(inputs: PipelineInputs) -> np.ndarray:
    """A few real validation inputs (or seeded synthetic ones) for the export parity check."""
    if inputs.data is not None:
        return inputs.data.x_val[:8]
    return synthetic_inputs(inputs.model.input_shape, 8, inputs.seed)


def build(
    candidate: Candidate,
    inputs: PipelineInputs,
    out_dir: Path,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> BuildResult:
    """Apply ``candidate`` to the original model; the result is ``out_dir/model.onnx``.

    Raises CandidateError naming the stage that failed. ``on_stage(name)`` is called as each
    stage starts (the trial runner records it to say where a hung trial was).
    """
    from edgeopt.stages import STAGES, StageContext

    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(
        workdir=out_dir,
        profile=inputs.profile,
        data=inputs.data,
        teacher=inputs.model.module,
        input_shape=inputs.model.input_shape,
        seed=inputs.seed,
        on_epoch=on_epoch,
        cache_dir=inputs.cache_dir,
    )
    fp32, info, hit = _torch_phase(candidate, inputs, ctx, on_stage)
    seconds = dict(info.get("seconds", {})) if not hit else {}
    if hit and info.get("seconds"):
        info = {**info, "cache_saved_s": sum(info["seconds"].values())}
    path = fp32
    fake_quant = _has_fake_quant(fp32)
    for step in candidate.onnx_steps():
        stage = STAGES[step.stage]
        if stage.is_identity(step.config) and not fake_quant:
            # a quantization-aware export's fake-quant pairs would run as int8 in ORT under
            # an fp32 label: the identity quantize step removes them, so it runs
            continue
        if on_stage:
            on_stage(step.stage)
        t0 = time.perf_counter()
        path = stage.apply(path, step.config, ctx)
        seconds[step.stage] = time.perf_counter() - t0
    if path != fp32:
        from edgeopt.stages.quantize import read_stage_info

        info = {**info, **read_stage_info(Path(path))}  # e.g. the nodes kept in fp32
    info = {**info, "seconds": seconds}
    final = out_dir / "model.onnx"
    if path != final:
        shutil.copyfile(path, final)
    if path not in (fp32, final):
        Path(path).unlink(missing_ok=True)
    if fp32 == out_dir / "input.onnx":  # an ONNX input's inlined copy (see _torch_phase)
        fp32.unlink(missing_ok=True)
    return BuildResult(final, fp32, info, hit)


def _has_fake_quant(path: Path) -> bool:
    """True when the exported graph carries QuantizeLinear nodes (a QAT export)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def _torch_phase(
    candidate: Candidate,
    inputs: PipelineInputs,
    ctx: Any,
    on_stage: Callable[[str], None] | None,
) -> tuple[Path, dict[str, Any], bool]:
    from edgeopt.onnx_export import export_onnx, inline_external_data
    from edgeopt.stages import STAGES

    active = [s for s in candidate.torch_steps() if not STAGES[s.stage].is_identity(s.config)]
    if inputs.model.is_onnx:
        if active:
            raise CandidateError(active[0].stage, "an ONNX input model cannot take torch stages")
        # weights in external files would not follow the model into the trial's folder
        path = inline_external_data(inputs.model.onnx_path, ctx.workdir, "input.onnx")  # type: ignore[arg-type]
        return path, {}, False
    key = Candidate(tuple(active)).torch_key(inputs.salt)
    entry = inputs.cache_dir / key
    if (entry / "model.onnx").exists() and (entry / "info.json").exists():
        return entry / "model.onnx", json.loads((entry / "info.json").read_text()), True
    module = copy.deepcopy(inputs.model.module)
    info: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for step in active:
        if on_stage:
            on_stage(step.stage)
        stage = STAGES[step.stage]
        t0 = time.perf_counter()
        module = stage.apply(module, step.config, ctx)
        seconds[step.stage] = time.perf_counter() - t0
        info.update(_stage_info(step.stage, module))
    if on_stage:
        on_stage("export")
    t0 = time.perf_counter()
    inputs.cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=inputs.cache_dir))
    try:
        # a model that runs int8 kernels in ORT (QAT) states how close it can be to torch
        atol = float(getattr(module, "edgeopt_export_atol", 1e-4))
        export_onnx(
            module,
            inputs.model.input_shape,
            tmp / "model.onnx",
            check_inputs=parity_inputs(inputs),
            atol=atol,
        )
        seconds["export"] = time.perf_counter() - t0
        info["seconds"] = seconds  # what building this prefix cost; a cache hit saves it
        (tmp / "info.json").write_text(json.dumps(info, default=str))
        try:
            tmp.rename(entry)  # atomic publish; another worker may have won the race
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return entry / "model.onnx", info, False


def _stage_info(stage: str, module: Any) -> dict[str, Any]:
    """Numbers a stage left on the module it returned (achieved MACs, training history)."""
    out: dict[str, Any] = {}
    for attr in dir(module):
        if attr.startswith("edgeopt_"):
            value = getattr(module, attr)
            if isinstance(value, dict | list | int | float | str):
                out[f"{stage}.{attr.removeprefix('edgeopt_')}"] = value
    return out
