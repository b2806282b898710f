"""Runners: where a measured profile's models are timed, and who measured each number.

A profile without ``[runner]`` (the shipped host profile) and one with ``kind = "local"`` are
measured on this host by :class:`LocalRunner`, which starts the timing child
(``edgeopt.measure.child``) here through ``edgeopt.measure.runtime``. A profile with
``kind = "ssh"`` is measured on a device by ``edgeopt.measure.ssh_runner.SshRunner``, which copies
the same child (four stdlib + numpy + onnxruntime files) to the device and runs it there.
Both speak the one request/reply format of the child, so latency is interleaved against the
original on the device exactly as on the host.

The :class:`Runner` base class, what a caller may rely on:

- ``device``: who measures, e.g. ``local://HOSTNAME`` or ``ssh://user@host:port``; it goes
  beside every measured number (``MetricValue.device``, bench and check records).
- ``check()``: connect and verify the runtime (onnxruntime, the providers asked for); raises
  :class:`DeviceError` (exit 2, with a hint) before any work when the device cannot measure.
- ``describe()``: one line naming the machine (CPU, cores, OS, ORT version, providers).
- ``measure_latency(paths, ...)`` / ``measure_memory(path, ...)`` / ``measure_energy(path,
  ...)`` / ``time_models(models, ...)``: the same contracts as ``edgeopt.measure.runtime``'s
  functions (and ``calibrate.time_models``); ``measure_energy`` is None where the device
  exposes no power reading (the number then stays the cost model's estimate). Each call is
  bounded in time; a failure raises :class:`DeviceError` when the device is unreachable or
  unfit, an ``EdgeoptError`` when the model failed there. The search turns either into a
  FAIL trial and goes on.
- ``close()``: remove what the runner left on the device and drop its connection.

Adding a runner kind (``adb`` for Android, say) is one subclass of :class:`Runner` with
``check``, ``describe``, ``time_models``, ``close`` and the hooks the measurements use (push
the child's files and each model with ``adb push`` in ``_stage``, run ``adb shell`` with the
request on stdin in ``_child``, map adb's failures to DeviceError), its name in
``edgeopt.profiles.schema.RUNNER_KINDS`` with its keys in ``edgeopt.profiles.runner``, and
one branch in :func:`runner_for`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.errors import ConfigError

if TYPE_CHECKING:
    from edgeopt.measure.runtime import EnergyStats, LatencyStats, MemoryStats
    from edgeopt.profiles import HardwareProfile, RunnerSpec


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
    ) -> list[LatencyStats]:
        """Time ``paths`` interleaved in one isolated process; stats in the order given.

        ``sample`` is a real input (its first row is used) or None for a seeded random one.
        Rounds stop once every model's median is stable (and at least ``min_rounds`` ran) or
        when ``time_budget_s`` is spent.
        """
        from edgeopt.measure import runtime

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
            reply = self._child(request, self.base_timeout_s + 4 * time_budget_s)
        return runtime.latency_stats(paths, reply)

    def measure_memory(
        self,
        path: str | Path,
        *,
        threads: int,
        input_shape: Sequence[int],
        sample: np.ndarray | None = None,
    ) -> MemoryStats:
        """Peak memory of a fresh process that loads the model in ORT and runs it."""
        from edgeopt.measure import runtime

        with self._stage([path], [runtime.input_row(input_shape, sample)]) as (models, inputs):
            request = runtime.child_request(
                "memory", models, inputs[0], threads=threads, providers=self.providers
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
    ) -> EnergyStats | None:
        """Energy per inference from the device's power reading; None when it has none."""
        from edgeopt.measure import runtime

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
            )
            reply = self._child(request, self.base_timeout_s + 2 * duration_s)
        return runtime.energy_stats(reply)

    def time_models(
        self, models: Sequence[tuple[str | Path, np.ndarray]], *, threads: int, rounds: int
    ) -> list[float]:
        raise NotImplementedError

    def close(self) -> None:
        """Remove what the runner left on the device and drop its connection."""


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
        (``edgeopt.measure.load``): other jobs on the host skew what is measured here."""
        from dataclasses import replace

        from edgeopt.measure.load import LoadMonitor

        with LoadMonitor() as monitor:
            stats = super().measure_latency(paths, **options)
        load = monitor.load.to_dict() if monitor.load is not None else None
        return [replace(s, load=load) for s in stats]

    def describe(self) -> str:
        from edgeopt.measure.runtime import host_description

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
        from edgeopt.measure.runtime import run_child

        return run_child(request, timeout_s)

    def _power_source(self) -> dict[str, Any] | None:
        from edgeopt.measure.power import find_power_source

        if self.power is not None:
            return self.power
        return find_power_source() if self.energy else None

    def time_models(
        self, models: Sequence[tuple[str | Path, np.ndarray]], *, threads: int, rounds: int
    ) -> list[float]:
        from edgeopt.measure.calibrate import time_models

        return time_models(models, threads=threads, rounds=rounds, providers=self.providers)

    def close(self) -> None:
        """Nothing to release on this host."""


# (runner spec, process id) -> runner: a forked child opens its own, never the parent's
_RUNNERS: dict[tuple[Any, int], Runner] = {}


def runner_for(profile: HardwareProfile) -> Runner:
    """The runner that measures ``profile`` (one per ``[runner]`` table and process, so an
    SSH connection and the files already on the device serve every trial of a search)."""
    key = (profile.runner, os.getpid())
    if key not in _RUNNERS:
        _RUNNERS[key] = _make(profile.runner)
    return _RUNNERS[key]


def _make(spec: RunnerSpec | None) -> Runner:
    if spec is None:
        return LocalRunner()
    if spec.kind == "local":
        return LocalRunner(spec.providers, energy=True)
    if spec.kind == "ssh":
        from edgeopt.measure.ssh_runner import SshRunner

        return SshRunner(spec)
    raise ConfigError(f"unknown runner kind {spec.kind!r}")


def close_runners() -> None:
    """Close every runner this process opened (also run at exit)."""
    for key in [k for k in _RUNNERS if k[1] == os.getpid()]:
        _RUNNERS.pop(key).close()


atexit.register(close_runners)
