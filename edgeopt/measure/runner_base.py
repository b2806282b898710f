"""What every runner is: the :class:`Runner` contract, :class:`DeviceError`, and the timing
requests built once here for all kinds (``edgeopt.measure.runners`` maps a kind to its class).

What a caller may rely on:

- ``device``: who measures, e.g. ``local://HOSTNAME`` or ``ssh://user@host:port``; it goes
  beside every measured number (``MetricValue.device``, bench and check records).
- ``check()``: connect and verify the runtime (onnxruntime, the providers asked for); raises
  :class:`DeviceError` (exit 2, with a hint) before any work when the device cannot measure.
- ``describe()``: one line naming the machine (CPU, cores, OS, ORT version, providers).
- ``measure_latency(paths, ...)`` / ``measure_memory(path, ...)`` / ``measure_energy(path,
  ...)`` / ``time_models(models, ...)``: the same contracts as the host's functions in
  ``edgeopt.measure.local_runner``; ``measure_energy`` is None where the device exposes no
  power reading (the number then stays the cost model's estimate). Each call is bounded in
  time; a failure raises :class:`DeviceError` when the device is unreachable or unfit, an
  ``EdgeoptError`` when the model failed there. The search turns either into a FAIL trial
  and goes on.
- ``close()``: remove what the runner left on the device and drop its connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import ConfigError
from edgeopt.measure import runtime
from edgeopt.measure.runtime import EnergyStats, LatencyStats, MemoryStats

CALIBRATION_TIMING: dict[str, Any] = {
    "warmup": 5,
    "target_round_ms": 15.0,
    "min_runs": 3,
    "max_runs": 400,
}
"""The interleaved timer's settings for ``time_models`` (profile calibration; fixed rounds
come on top); remote runners send them along."""


class DeviceError(ConfigError):
    """The device cannot measure: unreachable, key refused, no onnxruntime there, a provider
    it lacks, or no answer in time. Exit code 2 with a hint; a FAIL trial in a search."""


class Runner:
    """Measures ONNX models somewhere (see the module docstring for the contract).

    The measurements are built here once, as requests to the timing child and stats from its
    replies (``edgeopt.measure.runtime``); a runner kind says where the child runs: ``_stage``
    (where the child finds the models and inputs), ``_child`` (run it with a request) and
    ``_power_source`` (the device's power reading, None without one). ``base_timeout_s`` is
    what a request may take besides its own timing.
    """

    device: str
    providers: tuple[str, ...] | None = None
    base_timeout_s: float = 120.0

    def check(self) -> None:
        """Raise DeviceError when the device cannot measure."""

    def describe(self) -> str:
        raise NotImplementedError

    def _stage(
        self, paths: Sequence[str | Path], arrays: Sequence[np.ndarray]
    ) -> AbstractContextManager[tuple[list[str], list[str]]]:
        """Where the child finds ``paths`` and ``arrays`` (as .npy): (models, inputs)."""
        raise NotImplementedError

    def _child(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """The timing child's reply to ``request``."""
        raise NotImplementedError

    def _power_source(self) -> dict[str, Any] | None:
        return None

    def measure_latency(
        self,
        paths: Sequence[str | Path],
        *,
        threads: int,
        input_shape: Sequence[int],
        sample: np.ndarray | None = None,
        min_rounds: int = 5,
        max_rounds: int = 40,
        time_budget_s: float = 8.0,
        target_round_ms: float = 40.0,
        precision_hint: str = "f32",
    ) -> list[LatencyStats]:
        """Time ``paths`` interleaved in one isolated process; stats in the order given.

        ``sample`` is a real input (its first row is used) or None for a seeded random one.
        Rounds stop once every model's median is stable (and at least ``min_rounds`` ran) or
        when ``time_budget_s`` is spent. ``precision_hint``: OpenVINO files' inference
        precision (the profile's ``[runtime] precision_hint``).
        """
        if not paths:
            return []
        self.check()
        with self._stage(paths, [runtime.input_row(input_shape, sample)]) as (models, inputs):
            request = runtime.latency_request(
                models,
                inputs,
                threads=threads,
                providers=self.providers,
                min_rounds=min_rounds,
                max_rounds=max_rounds,
                time_budget_s=time_budget_s,
                target_round_ms=target_round_ms,
            )
            request["precision_hint"] = precision_hint
            reply = self._child(request, self.base_timeout_s + 4 * time_budget_s)
        return runtime.latency_stats(paths, reply)

    def measure_memory(
        self,
        path: str | Path,
        *,
        threads: int,
        input_shape: Sequence[int],
        sample: np.ndarray | None = None,
        precision_hint: str = "f32",
    ) -> MemoryStats:
        """Peak memory of a fresh process that loads the model in its runtime and runs it."""
        with self._stage([path], [runtime.input_row(input_shape, sample)]) as (models, inputs):
            request = runtime.child_request(
                "memory",
                models,
                inputs[0],
                threads=threads,
                providers=self.providers,
                precision_hint=precision_hint,
            )
            reply = self._child(request, self.base_timeout_s)
        return runtime.memory_stats(reply)

    def measure_energy(
        self,
        path: str | Path,
        *,
        threads: int,
        input_shape: Sequence[int],
        sample: np.ndarray | None = None,
        duration_s: float = 1.0,
        precision_hint: str = "f32",
    ) -> EnergyStats | None:
        """Energy per inference from the device's power reading; None when it has none."""
        source = self._power_source()
        if source is None:
            return None
        with self._stage([path], [runtime.input_row(input_shape, sample)]) as (models, inputs):
            request = runtime.child_request(
                "energy",
                models,
                inputs[0],
                threads=threads,
                providers=self.providers,
                power=source,
                duration_s=duration_s,
                precision_hint=precision_hint,
            )
            reply = self._child(request, self.base_timeout_s + 2 * duration_s)
        return runtime.energy_stats(reply)

    def time_models(
        self, models: Sequence[tuple[str | Path, np.ndarray]], *, threads: int, rounds: int
    ) -> list[float]:
        raise NotImplementedError

    def close(self) -> None:
        """Remove what the runner left on the device and drop its connection."""
