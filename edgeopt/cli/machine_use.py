"""How an ``optimize`` run uses this machine: torch threads per trial (``--threads``) and each
worker's training device (``--train-device``), with a warning line where they oversubscribe."""

from __future__ import annotations

import os

import click


def threads_for(text: str, workers: int) -> int:
    """``--threads``: a count, or auto = this process's usable CPUs shared by the workers."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if workers > (cpus or 1):  # each worker holds a model, a trial child and its memory
        click.echo(
            f"warning: --workers {workers} on {cpus} CPU(s): the workers share the CPUs "
            "(about 200 MB each and a trial child); --workers N up to the CPUs is faster",
            err=True,
        )
    if text.strip().lower() == "auto":
        return max(1, (cpus or 1) // max(1, workers))
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        from edgeopt.errors import ConfigError

        raise ConfigError(f"--threads must be a thread count >= 1 or auto, got {text!r}")
    if value * workers > (cpus or 1):  # oversubscribed torch threads spin against each other
        click.echo(
            f"warning: --threads {value} x --workers {workers} on {cpus} CPU(s) oversubscribes "
            "them and slows training; --threads auto shares the CPUs",
            err=True,
        )
    return value


def devices_for(spec: str, workers: int) -> tuple[str, ...]:
    """Each worker's training device for ``--train-device`` (``assign_devices``); the GPUs
    are counted only when asked for (``cpu`` imports no torch here)."""
    from edgeopt.training.device import assign_devices, cuda_device_count

    plan = assign_devices(spec, workers, 0 if spec == "cpu" else cuda_device_count())
    if plan.warning:
        click.echo(plan.warning, err=True)
    return plan.devices
