"""``calibrate_host``: time the micro-benchmarks and example models on this host or a
profile's device, fit the profile's numbers and write its TOML (see the package docstring)."""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.fileio import write_atomic
from edgeopt.measure.calibrate.fit import CalibrationResult, Timed, agreement, fit, fit_quantized
from edgeopt.measure.calibrate.micro import build_micro, quantize_qdq
from edgeopt.measure.calibrate.render import render_device_toml, render_host_toml
from edgeopt.measure.local_runner import time_models
from edgeopt.measure.runners import runner_for
from edgeopt.measure.runtime import host_description
from edgeopt.profiles import HardwareProfile, load_profile, validate_profile_file

if TYPE_CHECKING:
    from torch import nn

FIT_WIDTH = 12  # example models used for fitting; the accuracy benchmark uses other widths
FIT_SIZES = (16, 32)
# the profile TOML from the base profile, the fit and the command that made it
Render = Callable[[HardwareProfile, CalibrationResult, str], str]


@dataclass(frozen=True)
class ExampleModel:
    """A torch model the calibration exports (fp32 and int8 QDQ), times and estimates.

    ``input_shape`` excludes the batch dimension.
    """

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]


def example_models(builders: Mapping[str, Callable[..., nn.Module]]) -> list[ExampleModel]:
    """The fitting set: each builder at width ``FIT_WIDTH`` with one input channel, on
    ``FIT_SIZES`` square inputs (one module per builder, exported at each size).

    ``builders`` is e.g. ``edgeopt.zoo.BUILDERS``: ``build(in_channels=, width=)``.
    """
    out = []
    for fam, build in builders.items():
        module = build(in_channels=1, width=FIT_WIDTH)
        for hw in FIT_SIZES:
            out.append(ExampleModel(f"{fam}-w{FIT_WIDTH}-{hw}x{hw}", module, (1, hw, hw)))
    return out


def _export_examples(tmp: Path, examples: Sequence[ExampleModel]) -> list[tuple[Path, list[int]]]:
    """Each example as fp32 ONNX and as int8 QDQ (``NAME.int8.onnx``): (path, input shape)."""
    from edgeopt.onnx_export import export_onnx

    out = []
    for ex in examples:
        shape = [1, *ex.input_shape]
        fp = export_onnx(ex.module, ex.input_shape, tmp / f"{ex.name}.onnx")
        out.append((fp, shape))
        out.append((quantize_qdq(fp, tmp / f"{ex.name}.int8.onnx", shape), shape))
    return out


def calibrate_host(
    out: Path,
    *,
    rounds: int = 7,
    examples: Sequence[ExampleModel] = (),
    command: str = "edgeopt profiles calibrate",
    log: Callable[[str], None] | None = None,
    extra: Sequence[tuple[Path, np.ndarray]] = (),
    target: HardwareProfile | None = None,
) -> CalibrationResult:
    """Fit the host profile on this machine, or ``target`` (a profile with a ``[runner]``)
    on its device, and write it to ``out`` (atomically, validated).

    One interleaved timing run covers the micro-benchmarks, the ``examples`` (each fp32 and
    int8) and any ``extra`` models (their medians come back in ``extra_ms``, so a caller's
    evaluation shares the calibration's machine state; this VM's speed drifts between runs).
    Step 1 fits peaks, efficiencies, bandwidth and overheads from the micro-benchmarks; with
    examples, step 2 fits the quantized-kernel scale and overhead on the int8 ones and the
    agreement on all of them (in-sample) is recorded in ``[calibration]``.
    """
    base = target if target is not None and target.runner is not None else load_profile("cpu")
    runner = runner_for(base) if base.runner is not None else None
    render: Render = render_host_toml
    if runner is not None:
        runner.check()  # an unreachable device fails before the graphs are built
        mem = float(getattr(runner, "mem_bytes", 0.0))
        render = functools.partial(render_device_toml, dram_bytes=mem)
    with tempfile.TemporaryDirectory(prefix="edgeopt-calibrate-") as td:
        tmp = Path(td)
        micro = build_micro(tmp)
        exported = _export_examples(tmp, examples)
        rng = np.random.default_rng(1)
        feeds = [*micro.values()]
        feeds += [(p, rng.standard_normal(s).astype(np.float32)) for p, s in exported]
        feeds += list(extra)
        if log:
            log(
                f"  timing {len(micro)} micro-benchmarks, {len(exported)} example models"
                + (f" and {len(extra)} more" if extra else "")
                + f", {rounds} interleaved rounds ..."
            )
        if runner is not None:
            times = runner.time_models(feeds, threads=base.threads, rounds=rounds)
            machine = runner.describe()
        else:
            times = time_models(feeds, threads=base.threads, rounds=rounds)
            machine = host_description()
        n_micro, n_ex = len(micro), len(exported)
        micro_t = dict(zip(micro, times[:n_micro], strict=True))
        ex_t = times[n_micro : n_micro + n_ex]
        timed = [(p, t) for (p, _), t in zip(exported, ex_t, strict=True)]
        result = fit(micro_t, {k: v[0] for k, v in micro.items()}, machine)
        write_atomic(out, render(base, result, command))
        if timed:
            result = _fit_examples(out, base, result, timed, command, render)
        result = dataclasses.replace(result, extra_ms=list(times[n_micro + n_ex :]))
    validate_profile_file(out)
    return result


def _fit_examples(
    out: Path,
    base: HardwareProfile,
    base_result: CalibrationResult,
    timed: Sequence[Timed],
    command: str,
    render: Render,
) -> CalibrationResult:
    """Step 2: refit quantized kernels on the timed examples, then record the agreement;
    rewrites ``out`` after each."""
    scale, o8 = fit_quantized(validate_profile_file(out), timed)
    eff = {d: dict(t) for d, t in base_result.efficiency.items()}
    eff["fp32"]["quantize"] = round(min(eff["fp32"]["quantize"] / scale, 1.0), 5)
    peak = dict(base_result.peak_gops)
    peak["int8"] = round(peak["int8"] / scale, 2)
    result = dataclasses.replace(
        base_result, kernel_overhead_us_int8=o8, efficiency=eff, peak_gops=peak
    )
    write_atomic(out, render(base, result, command))
    tau, err = agreement(validate_profile_file(out), timed)
    result = dataclasses.replace(result, kendall_tau=tau, median_rel_error=err, n_models=len(timed))
    write_atomic(out, render(base, result, command))
    return result
