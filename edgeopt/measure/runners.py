"""Runners: where a measured profile's models are timed, and who measured each number.

A profile without ``[runner]`` (the shipped host profile) and one with ``kind = "local"`` are
measured on this host by :class:`LocalRunner` (``edgeopt.measure.local_runner``), which starts
the timing child (``edgeopt.measure.child``) here. A profile with ``kind = "ssh"`` is measured
on a device by ``edgeopt.measure.ssh_runner.SshRunner``, which copies the same child (four
stdlib + numpy + onnxruntime files) to the device and runs it there. Both speak the one
request/reply format of the child, so latency is interleaved against the original on the
device exactly as on the host. What every runner promises is :class:`Runner`'s contract
(``edgeopt.measure.runner_base``).

Adding a runner kind (``adb`` for Android, say) is one subclass of :class:`Runner` with
``check``, ``describe``, ``time_models``, ``close`` and the hooks the measurements use (push
the child's files and each model with ``adb push`` in ``_stage``, run ``adb shell`` with the
request on stdin in ``_child``, map adb's failures to DeviceError), its name in
its spec type (its keys and how they are read) in ``edgeopt.profiles.runner_spec`` with one
entry in ``RUNNER_SPECS`` there, and one entry in :data:`RUNNER_FACTORIES` here.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.measure.local_runner import LocalRunner
from edgeopt.measure.runner_base import DeviceError, Runner
from edgeopt.measure.ssh_runner import SshRunner
from edgeopt.profiles import HardwareProfile, LocalSpec, RunnerSpec, SshSpec

__all__ = [
    "RUNNER_FACTORIES",
    "DeviceError",
    "LocalRunner",
    "Runner",
    "close_runners",
    "runner_for",
]

RUNNER_FACTORIES: dict[str, Callable[[Any], Runner]] = {
    LocalSpec.kind: lambda spec: LocalRunner(spec.providers, energy=True),
    SshSpec.kind: SshRunner,
}
"""``[runner] kind`` -> the runner that measures a spec of that kind (its type in
``edgeopt.profiles.RUNNER_SPECS``); a profile without ``[runner]`` is measured by
``LocalRunner()`` (this host, CPU provider, energy left to the cost model)."""

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
    factory = RUNNER_FACTORIES.get(spec.kind)
    if factory is None:
        raise ConfigError(f"unknown runner kind {spec.kind!r}")
    return factory(spec)


def close_runners() -> None:
    """Close every runner this process opened (also run at exit)."""
    for key in [k for k in _RUNNERS if k[1] == os.getpid()]:
        _RUNNERS.pop(key).close()


atexit.register(close_runners)
