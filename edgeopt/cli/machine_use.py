"""How an ``optimize`` run uses this machine: torch threads per trial (``--threads``), each
worker's training device (``--train-device``), with a warning line where they oversubscribe,
and how streamed data is read (``--data-workers``, ``--data-cache-gb``)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import click

from edgeopt.data.cache import DEFAULT_CAPACITY_GB
from edgeopt.data.loader import auto_workers, usable_cpus
from edgeopt.errors import ConfigError

if TYPE_CHECKING:
    from edgeopt.config import RunConfig

F = TypeVar("F", bound=Callable[..., object])


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


def data_use_options(func: F) -> F:
    """``--data-workers`` and ``--data-cache-gb`` (how a trial reads an image folder)."""
    func = click.option(
        "--data-cache-gb",
        type=float,
        default=DEFAULT_CAPACITY_GB,
        show_default=True,
        help="Decoded images of a folder cached on disk in the run directory (RUN/cache/data), "
        "never more than this size; 0: off.",
    )(func)
    return click.option(
        "--data-workers",
        default="auto",
        show_default=True,
        metavar="auto|N",
        help="DataLoader processes per trial decoding an image folder's training batches; "
        "auto: 1 when training on the CPU with 2+ cores, else 0 (decoded in the trial).",
    )(func)


def with_data_use(
    config: RunConfig, devices: Sequence[str], workers_text: str, cache_gb: float
) -> RunConfig:
    """``config`` with ``--data-workers`` (auto: ``auto_workers`` for the workers' training
    ``devices``) and ``--data-cache-gb``; ConfigError (exit 2) for a bad value."""
    text = workers_text.strip().lower()
    if text == "auto":
        workers = auto_workers(usable_cpus(), devices)
    elif text.isdigit():
        workers = int(text)
    else:
        raise ConfigError(
            f"--data-workers must be auto or a count >= 0, got {workers_text!r}",
            hint="e.g. --data-workers 2 (0: decode in the trial process itself)",
        )
    return dataclasses.replace(config, data_workers=workers, data_cache_gb=cache_gb)
