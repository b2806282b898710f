"""This host as a runner: :class:`LocalRunner` starts the timing child
(``edgeopt.measure.child``) in a fresh local process, and the host's measurements as plain
functions (``measure_latency``, ``measure_memory``, ``measure_energy``, ``time_models``)."""

from __future__ import annotations

import contextlib
import functools
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.measure.machine_load import LoadMonitor
from edgeopt.measure.power import find_power_source
from edgeopt.measure.runner_base import CALIBRATION_TIMING, DeviceError, Runner
from edgeopt.measure.runtime import (
    EnergyStats,
    LatencyStats,
    MemoryStats,
    host_description,
    run_child,
)
from edgeopt.measure.session import ort_feeds, ort_session
from edgeopt.measure.timing import time_interleaved


class LocalRunner(Runner):
    """This host: the timing child in a fresh local process (``edgeopt.measure.runtime``).

    ``providers`` None means the CPU provider (the host profile); a ``[runner] kind =
    "local"`` profile may name CUDA or TensorRT where onnxruntime-gpu and a GPU are present.
    ``energy`` reads the host's power meter (RAPL) when readable; off for the implicit host
    runner, whose energy stays the cost model's. ``power``: a power reading to use instead.
    """

    def __init__(
        self,
        providers: Sequence[str] | None = None,
        *,
        energy: bool = False,
        power: dict[str, Any] | None = None,
    ) -> None:
        self.providers = tuple(providers) if providers else None
        self.energy = energy
        self.power = power
        self.device = f"local://{socket.gethostname()}"

    def check(self) -> None:
        """Raise DeviceError when this host's onnxruntime lacks a provider asked for."""
        if not self.providers:
            return
        import onnxruntime as ort

        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        if missing:
            raise DeviceError(
                f"this host's onnxruntime {ort.__version__} has no {', '.join(missing)} "
                f"(available: {', '.join(ort.get_available_providers())})",
                hint="install onnxruntime-gpu (and the GPU's libraries), or remove the provider "
                "from [runner] providers",
            )

    def measure_latency(self, paths: Sequence[str | Path], **options: Any) -> list[LatencyStats]:
        """``Runner.measure_latency``, each stats carrying this host's load meanwhile
        (``edgeopt.measure.machine_load``): other jobs on the host skew what is measured here."""
        with LoadMonitor() as monitor:
            stats = super().measure_latency(paths, **options)
        load = monitor.load.to_dict() if monitor.load is not None else None
        return [replace(s, load=load) for s in stats]

    def describe(self) -> str:
        extra = f", providers {', '.join(self.providers)}" if self.providers else ""
        return host_description() + extra

    @contextlib.contextmanager
    def _stage(
        self, paths: Sequence[str | Path], arrays: Sequence[np.ndarray]
    ) -> Iterator[tuple[list[str], list[str]]]:
        with tempfile.TemporaryDirectory(prefix="edgeopt-measure-") as tmp:
            inputs = [str(Path(tmp) / f"input{i}.npy") for i in range(len(arrays))]
            for name, a in zip(inputs, arrays, strict=True):
                np.save(name, a)
            yield [str(p) for p in paths], inputs

    def _child(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        return run_child(request, timeout_s)

    def _power_source(self) -> dict[str, Any] | None:
        if self.power is not None:
            return self.power
        return find_power_source() if self.energy else None

    def time_models(
        self, models: Sequence[tuple[str | Path, np.ndarray]], *, threads: int, rounds: int
    ) -> list[float]:
        return time_models(models, threads=threads, rounds=rounds, providers=self.providers)

    def close(self) -> None:
        """Nothing to release on this host."""


def measure_latency(
    paths: Sequence[str | Path], *, providers: Sequence[str] | None = None, **options: Any
) -> list[LatencyStats]:
    """Time ``paths`` interleaved in one isolated process on this host; stats in the order
    given. ``options``: those of ``edgeopt.measure.runner_base.Runner.measure_latency``
    (``threads``, ``input_shape``, ``sample``, rounds and budget); ``providers``: ORT
    execution providers (default CPU)."""
    return LocalRunner(providers).measure_latency(paths, **options)


def measure_memory(
    path: str | Path,
    *,
    threads: int,
    input_shape: Sequence[int],
    sample: np.ndarray | None = None,
    providers: Sequence[str] | None = None,
) -> MemoryStats:
    """Peak memory of a fresh process that loads the model in ORT and runs it."""
    runner = LocalRunner(providers)
    return runner.measure_memory(path, threads=threads, input_shape=input_shape, sample=sample)


def measure_energy(
    path: str | Path,
    source: dict[str, Any],
    *,
    threads: int,
    input_shape: Sequence[int],
    sample: np.ndarray | None = None,
    providers: Sequence[str] | None = None,
    duration_s: float = 1.0,
) -> EnergyStats:
    """Energy per inference of ``path`` in a fresh process, from ``source`` (a power reading
    found by ``edgeopt.measure.power.find_power_source``)."""
    stats = LocalRunner(providers, power=source).measure_energy(
        path, threads=threads, input_shape=input_shape, sample=sample, duration_s=duration_s
    )
    assert stats is not None  # a power reading was given
    return stats


def time_models(
    models: Sequence[tuple[str | Path, np.ndarray]],
    *,
    threads: int,
    rounds: int = 7,
    providers: Sequence[str] | None = None,
) -> list[float]:
    """Median latency (ms) of each ONNX model on its input, in this process: exactly
    ``rounds`` interleaved rounds, each model ~15 ms per round; the median of round medians
    (``CALIBRATION_TIMING`` holds the timer's settings, which remote runners send along)."""
    runs = []
    for path, x in models:
        s = ort_session(path, threads=threads, optimization="all", providers=providers)
        runs.append(functools.partial(s.run, None, ort_feeds(s.get_inputs(), x)))
    times = time_interleaved(
        runs, min_rounds=rounds, max_rounds=rounds, time_budget_s=None, **CALIBRATION_TIMING
    )
    return times.medians_ms()
