"""Facts about the user's model found once, at setup, before any trial runs: can
Torch-Pruning prune it (and which layers must it leave whole), and what does one fine-tune
epoch cost on this machine (the default per-trial timeout is a multiple of it).

Both used to be learnt the hard way: a graph Torch-Pruning cannot follow (ShuffleNetV2's
channel split and shuffle) held every pruning trial until a fixed 15-minute timeout, and that
timeout was too short for a ResNet-18 fine-tune and far too long for a toy model.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeopt.data import DataBundle

PREFLIGHT_LIMIT_S = float(os.environ.get("EDGEOPT_PREFLIGHT_S", "90"))
"""Wall-time cap of the pruning pre-flight (child start-up included)."""

MAX_EPOCHS = 8
"""The most fine-tune epochs the search draws (``finetune.epochs``)."""
TIMEOUT_EPOCHS = 2.0 * MAX_EPOCHS
"""The auto trial timeout allows this many measured epochs: the longest fine-tune the search
draws, with room for distillation's teacher pass, validation and a machine loaded twice."""
TIMEOUT_OVERHEAD_S = 120.0
"""Plus this much for start-up, pruning, export, quantization and scoring."""
TIMEOUT_MIN_S = 180.0
PROBE_BATCH = 64
PROBE_STEPS = 8


@dataclass(frozen=True)
class ModelProbe:
    """What setup found: ``prunable`` (None when the pre-flight could not run, e.g. the
    model cannot be copied to a child process; trials then find out themselves),
    ``prune_ignored`` (layers the prune stage leaves whole), ``prune_note`` (one line for the
    user), ``epoch_s`` (measured seconds of one fine-tune epoch with a distillation teacher,
    None for an ONNX input), and ``auto_timeout_s`` (the default per-trial timeout)."""

    prunable: bool | None
    prune_ignored: tuple[str, ...]
    prune_note: str
    epoch_s: float | None
    auto_timeout_s: float | None


def probe_model(
    module: Any, input_shape: tuple[int, ...], data: DataBundle | None, threads: int
) -> ModelProbe:
    """Run the pruning pre-flight and time fine-tuning for a torch ``module`` (not modified)."""
    from edgeopt.stages.prune_preflight import preflight

    pre = preflight(module, tuple(input_shape), time_limit_s=PREFLIGHT_LIMIT_S)
    epoch_s = epoch_seconds(module, input_shape, data, threads)
    return ModelProbe(
        prunable=pre.prunable if pre.conclusive else None,
        prune_ignored=tuple(pre.ignored_layers),
        prune_note=pre.reason,
        epoch_s=round(epoch_s, 3),
        auto_timeout_s=auto_timeout(epoch_s),
    )


def auto_timeout(epoch_s: float) -> float:
    """The default per-trial timeout for a model whose fine-tune epoch costs ``epoch_s``."""
    return round(max(TIMEOUT_MIN_S, TIMEOUT_EPOCHS * epoch_s + TIMEOUT_OVERHEAD_S), 1)


def epoch_seconds(
    module: Any, input_shape: tuple[int, ...], data: DataBundle | None, threads: int
) -> float:
    """Measured seconds of one distillation fine-tune epoch of ``module`` on this machine.

    Times ``PROBE_STEPS`` SGD steps (forward, backward, update, plus the teacher's forward
    pass) on a batch of ``PROBE_BATCH`` after one warm-up step, on a copy, at ``threads``
    torch threads; the step time (``typical_step_s``) scales to the samples one epoch draws
    (the training split, at most ``MAX_EPOCH_SAMPLES``; data-free: the synthetic epoch).
    """
    import torch
    from torch.nn import functional as F

    from edgeopt.training import MAX_EPOCH_SAMPLES, SYNTHETIC_TRAIN

    torch.set_num_threads(threads)
    student = copy.deepcopy(module).train()
    teacher = module
    was_training = teacher.training
    teacher.eval()
    n_train = len(data.x_train) if data is not None else SYNTHETIC_TRAIN
    batch = min(PROBE_BATCH, max(2, n_train))
    n_epoch = min(n_train, MAX_EPOCH_SAMPLES)  # what one fine-tune epoch draws
    if data is not None:
        x = torch.from_numpy(data.x_train[:batch].astype("float32"))
    else:
        x = torch.randn((batch, *input_shape))
    opt = torch.optim.SGD(student.parameters(), lr=1e-6, momentum=0.9)
    times: list[float] = []
    try:
        for _ in range(PROBE_STEPS + 1):
            t0 = time.perf_counter()
            with torch.no_grad():
                soft = teacher(x)
            out = student(x)
            loss = F.mse_loss(out, soft)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
    finally:
        teacher.train(was_training)
    return typical_step_s(times[1:]) * n_epoch / batch


def typical_step_s(times: list[float]) -> float:
    """The cost of one step from timed steps on a shared machine: the median of the faster
    half. Another process can only make a step slower, never faster, so the slow tail is
    load, not the model: with a plain median, one model's measured epoch read 6 s to 77 s
    on one machine under load, and the auto trial timeout followed it to 1358 s."""
    fast = sorted(times)[: max(1, (len(times) + 1) // 2)]
    return statistics.median(fast)
