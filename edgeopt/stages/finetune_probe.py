"""What one fine-tune epoch of the user's model costs on this machine, measured once at setup
(``FinetuneStage.probe``): the default per-trial timeout is a multiple of it.

It used to be a fixed 15 minutes: too short for a ResNet-18 fine-tune and far too long for
a toy model.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import TYPE_CHECKING, Any

from edgeopt.training import MAX_EPOCH_SAMPLES, SYNTHETIC_TRAIN
from edgeopt.training.device import module_device

if TYPE_CHECKING:
    from edgeopt.data import DataSource

MAX_EPOCHS = 8
"""The most fine-tune epochs the search draws (``finetune.epochs``)."""
TIMEOUT_EPOCHS = 2.0 * MAX_EPOCHS
"""A trial may take this many measured epochs: the longest fine-tune the search draws, with
room for distillation's teacher pass, validation and a machine loaded twice."""
PROBE_BATCH = 64
PROBE_STEPS = 8


def epoch_seconds(
    module: Any, input_shape: tuple[int, ...], data: DataSource | None, threads: int
) -> float:
    """Measured seconds of one distillation fine-tune epoch of ``module`` on this machine.

    Times ``PROBE_STEPS`` SGD steps (forward, backward, update, plus the teacher's forward
    pass) on a batch of ``PROBE_BATCH`` after one warm-up step, on a copy, at ``threads``
    torch threads; the step time (``typical_step_s``) scales to the samples one epoch draws
    (the training split, at most ``MAX_EPOCH_SAMPLES``; data-free: the synthetic epoch).
    """
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(threads)
    student = copy.deepcopy(module).train()
    teacher = module
    was_training = teacher.training
    teacher.eval()
    n_train = data.count("train") if data is not None else SYNTHETIC_TRAIN
    batch = min(PROBE_BATCH, max(2, n_train))
    n_epoch = min(n_train, MAX_EPOCH_SAMPLES)  # what one fine-tune epoch draws
    device = module_device(module)  # set-up runs on the CPU: a GPU's steps are faster
    if data is not None:
        x = torch.from_numpy(data.subset("train", batch, None)[0].astype("float32")).to(device)
    else:
        x = torch.randn((batch, *input_shape), device=device)
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


def trial_seconds(epoch_s: float) -> float:
    """The longest fine-tune one trial may run, for a model whose epoch costs ``epoch_s``."""
    return TIMEOUT_EPOCHS * epoch_s
