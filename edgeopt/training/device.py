"""Where fine-tuning runs (``--train-device auto|cpu|cuda[:N]``).

The search process never touches CUDA: it counts GPUs through NVML (no CUDA context, so the
worker processes it starts are free to use them) and gives each worker one GPU, round-robin.
A worker's trial child sees only its GPU (``CUDA_VISIBLE_DEVICES``) and trains on
``cuda:0``; everything that builds a tensor for a model builds it on the model's device
(``module_device``). Export, ONNX Runtime and host measurement stay on the CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgeopt.config import parse_train_device
from edgeopt.errors import ConfigError
from edgeopt.training.batch import Inputs, example, forward

if TYPE_CHECKING:
    import torch
    from torch import nn

VISIBLE = "CUDA_VISIBLE_DEVICES"
NO_CUDA_HINT = (
    "use --train-device cpu (or auto); for the GPU, check that nvidia-smi lists it and that "
    "torch is a CUDA build (python -c 'import torch; print(torch.version.cuda)' prints a version)"
)


@contextlib.contextmanager
def _nvml_check() -> Iterator[None]:
    """torch asks NVML instead of the CUDA runtime: no CUDA context in this process."""
    old = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        else:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = old


def cuda_device_count() -> int:
    """The CUDA devices torch sees here (0 on a CPU-only torch or machine), counted without
    creating a CUDA context."""
    import torch

    with _nvml_check():
        if not torch.cuda.is_available():
            return 0
        return int(torch.cuda.device_count())


@dataclass(frozen=True)
class DevicePlan:
    """The device of each worker (``"cpu"`` or ``"cuda:K"``, K as torch numbers the GPUs
    this process sees) and the one warning line to print, if any."""

    devices: tuple[str, ...]
    warning: str | None = None


def assign_devices(spec: str, workers: int, gpu_count: int) -> DevicePlan:
    """Give each of ``workers`` a device for ``--train-device spec`` on a machine where
    torch sees ``gpu_count`` GPUs.

    ``auto``: the GPUs when there are any, else the CPU; ``cuda``: worker i gets GPU
    ``i % gpu_count`` (more workers than GPUs share them, with a warning); ``cuda:N``: every
    worker uses GPU N (warned when several share it). ConfigError (exit 2) for ``cuda``
    without a GPU or a GPU number torch does not see.
    """
    spec = parse_train_device(spec)
    if spec == "cpu" or (spec == "auto" and gpu_count == 0):
        return DevicePlan(("cpu",) * workers)
    if gpu_count == 0:
        raise ConfigError(f"--train-device {spec}: torch sees no CUDA device", hint=NO_CUDA_HINT)
    if spec.startswith("cuda:"):
        index = int(spec.partition(":")[2])
        if index >= gpu_count:
            raise ConfigError(
                f"--train-device {spec}: torch sees {gpu_count} CUDA device(s) "
                f"(cuda:0..cuda:{gpu_count - 1})",
                hint=f"use --train-device cuda to spread the workers over all {gpu_count}",
            )
        warning = None
        if workers > 1:
            warning = f"warning: all {workers} workers share GPU {index} (--train-device {spec})"
        return DevicePlan((spec,) * workers, warning)
    devices = tuple(f"cuda:{i % gpu_count}" for i in range(workers))
    warning = None
    if workers > gpu_count:
        extra = ", ".join(str(i + 1) for i in range(gpu_count, workers))
        first = ", ".join(str(i % gpu_count + 1) for i in range(gpu_count, workers))
        warning = (
            f"warning: --workers {workers} on {gpu_count} GPU(s): workers {extra} share a GPU "
            f"with workers {first}; --workers {gpu_count} gives each its own"
        )
    return DevicePlan(devices, warning)


def train_device(spec: str) -> str:
    """The device one worker trains on for ``--train-device spec`` on this machine."""
    spec = parse_train_device(spec)
    return assign_devices(spec, 1, 0 if spec == "cpu" else cuda_device_count()).devices[0]


def child_env(device: str, environ: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """(the device a trial child trains on, the environment changes it starts with) for a
    worker's ``device``: a GPU is the only one the child sees (``CUDA_VISIBLE_DEVICES``),
    as ``cuda:0``; the CPU changes nothing. ``environ``: this process's (default
    ``os.environ``), whose ``CUDA_VISIBLE_DEVICES`` numbers the GPUs ``device`` counts in."""
    if not device.startswith("cuda"):
        return "cpu", {}
    environ = os.environ if environ is None else environ
    index = int(device.partition(":")[2] or 0)
    seen = [v.strip() for v in environ.get(VISIBLE, "").split(",") if v.strip()]
    physical = seen[index] if index < len(seen) else str(index)
    return "cuda:0", {VISIBLE: physical}


def module_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (else buffer); the CPU for a module with
    neither. Stages and the training loop build their tensors there."""
    import torch

    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def hooked_forward(
    model: nn.Module,
    input_shape: Inputs,
    modules: Iterable[nn.Module],
    hook: Callable[[nn.Module, object, object], None],
) -> None:
    """One forward pass of ``batch.example`` of ``input_shape`` (batch 1: a zero sample of one
    float input) on the model's device, in eval mode without gradients, calling
    ``hook(module, inputs, output)`` as each of ``modules`` runs; the hooks are removed and
    the model's mode restored afterwards."""
    import torch

    handles = [m.register_forward_hook(hook) for m in modules]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            forward(model, example(input_shape, module_device(model)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def device_label(device: torch.device) -> str:
    """``cpu``, or ``cuda:K (GPU name)`` with K the GPU's number on the machine (what a trial
    records as its ``train_device``)."""
    import torch

    if device.type != "cuda":
        return device.type
    index = device.index or 0
    seen = [v.strip() for v in os.environ.get(VISIBLE, "").split(",") if v.strip()]
    physical = seen[index] if index < len(seen) else str(index)
    return f"cuda:{physical} ({torch.cuda.get_device_name(index)})"


def resolve_in_child(requested: str) -> torch.device:
    """The ``torch.device`` a trial child trains on; ConfigError when the request names a
    GPU this child cannot see."""
    import torch

    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"the trial was to train on {requested}, but torch here sees no CUDA device",
            hint=NO_CUDA_HINT,
        )
    return device
