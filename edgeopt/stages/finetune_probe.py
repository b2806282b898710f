"""What one fine-tune sample of the user's model costs on this machine, measured once at setup
(``FinetuneStage.probe``), and the fine-tune *round* it sets: the unit ``finetune.epochs``
counts, and the default per-trial timeout is a multiple of it.

A round is one epoch (at most ``MAX_EPOCH_SAMPLES``) where that costs at most ``round_s``
seconds, as on every 32x32 model; a model whose samples cost more (224x224 images: ~50x)
gets a round of the samples ``round_s`` pays for, so a trial costs about the same wall time
whatever the resolution and the folder's size. The timeout used to be a fixed 15 minutes:
too short for a ResNet-18 fine-tune and far too long for a toy model.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edgeopt.training import MAX_EPOCH_SAMPLES, SYNTHETIC_TRAIN
from edgeopt.training.batch import Inputs, forward, synthetic, tensors, to
from edgeopt.training.device import module_device
from edgeopt.training.micro_batch import activation_bytes_per_sample, micro_batch_size

if TYPE_CHECKING:
    from edgeopt.data import DataSource
    from edgeopt.stages.base import ProbeInput

MAX_EPOCHS = 8
"""The most fine-tune rounds (``finetune.epochs``) the search draws."""
LOAD_MARGIN = 2.0
"""A stage's longest draw times this is what a trial may spend on it (``trial_seconds``):
room for validation and a machine loaded twice (the QAT stage allows the same)."""
TIMEOUT_EPOCHS = LOAD_MARGIN * MAX_EPOCHS
"""A trial may take this many measured rounds: the longest fine-tune the search draws, with
room for distillation's teacher pass, validation and a machine loaded twice."""
PROBE_BATCH = 64
PROBE_STEPS = 8
ROUND_S_MIN, ROUND_S_MAX = 10.0, 60.0
"""Bounds of one round's measured cost (``round_seconds``). 60 s is what the search was tuned
on: the longest 32x32 epoch we ship or benchmark (``resnet18_cifar`` at width 1 on the
1,078 digits: 38 s measured on one loaded core) fits in it, so at 32x32 a round stays the
epoch; eight such rounds also draw as many samples as the by-hand recipe's two epochs of a
5,000-image folder at 224x224, the accuracy such a search is compared with. 10 s: a round
still has more than a few steps."""
ROUND_SHARE = 1 / 20
"""With ``--timeout T`` a round costs at most ``T / 20`` (within the bounds), so the longest
fine-tune the search draws (``MAX_EPOCHS`` rounds) takes at most 40 % of a short search; from
``--timeout 20m`` up a round may cost the full ``ROUND_S_MAX``."""
MIN_ROUND_STEPS = 8
LARGEST_BATCH = 128
"""A round has at least ``MIN_ROUND_STEPS`` steps of the largest batch the search draws
(``finetune.batch_size``), however slow a step."""


def round_seconds(search_timeout_s: float | None) -> float:
    """What one fine-tune round may cost: ``ROUND_SHARE`` of ``--timeout`` within
    ``ROUND_S_MIN..ROUND_S_MAX``; ``ROUND_S_MAX`` without a timeout."""
    if search_timeout_s is None:
        return ROUND_S_MAX
    return min(ROUND_S_MAX, max(ROUND_S_MIN, search_timeout_s * ROUND_SHARE))


def round_samples(sample_s: float, round_s: float, n_train: int) -> int:
    """The training samples one fine-tune round draws: those ``round_s`` seconds pay for at
    ``sample_s`` each, at least ``MIN_ROUND_STEPS`` largest batches, at most one epoch
    (the split, capped at ``MAX_EPOCH_SAMPLES``)."""
    epoch = min(n_train, MAX_EPOCH_SAMPLES)
    paid = math.floor(round_s / sample_s) if sample_s > 0 else epoch
    return min(epoch, max(MIN_ROUND_STEPS * LARGEST_BATCH, paid))


def recorded_round_samples(stage_facts: Mapping[str, Mapping[str, Any]]) -> int | None:
    """The samples per fine-tune round a run's probe recorded (``Baseline.stage_facts``);
    None for a run set up before rounds (its fine-tunes draw whole epochs, as they did)."""
    n = stage_facts.get("finetune", {}).get("round_samples")
    return None if n is None else int(n)


def train_samples(data: DataSource | None) -> int:
    """The samples a fine-tune epoch is drawn from (data-free: the synthetic epoch)."""
    return data.count("train") if data is not None else SYNTHETIC_TRAIN


_SAMPLE_S: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], float]] = (
    weakref.WeakKeyDictionary()
)


def float_round(model: ProbeInput) -> tuple[float, int]:
    """``(sample_s, round_samples)`` of a float fine-tune of ``model.module`` (not None).

    The sample cost is measured once per module, inputs, threads, probe batch and kind of
    data (real or synthetic), so that the fine-tune stage's round and the QAT stage's epoch
    (a round, by definition) are the same samples, not two timings of the same steps that
    noise sets apart; the round is drawn from it for this data's split and timeout."""
    inputs = model.inputs if model.inputs is not None else tuple(model.input_shape)
    # never the data object's id: a collected source's id is reused by the next one
    batch = min(PROBE_BATCH, train_samples(model.data))  # a tiny split probes a smaller batch
    key = (model.data is None, batch, model.threads, repr(inputs))
    known = _SAMPLE_S.setdefault(model.module, {})
    if key not in known:
        known[key] = sample_seconds(model.module, inputs, model.data, model.threads)
    sample_s = known[key]
    n = round_samples(sample_s, round_seconds(model.search_timeout_s), train_samples(model.data))
    return sample_s, n


def sample_seconds(
    module: Any,
    input_shape: Inputs,
    data: DataSource | None,
    threads: int,
    student: Any = None,
) -> float:
    """Measured seconds per training sample of a distillation fine-tune of ``module`` here.

    Times ``PROBE_STEPS`` SGD steps (forward, backward, update, plus the teacher's forward
    pass) on a batch of ``PROBE_BATCH`` (at most one micro-batch,
    ``edgeopt.training.micro_batch``) after one warm-up step, at ``threads`` torch threads;
    the step time (``typical_step_s``) over the batch. ``student``: the model trained
    (changed by the steps), distilling from ``module``; default a copy of ``module`` (the
    QAT stage passes its fake-quantized one).
    """
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(threads)
    student = (copy.deepcopy(module) if student is None else student).train()
    teacher = module
    was_training = teacher.training
    teacher.eval()
    # a step of at most one micro-batch: what a fine-tune's forward holds at a time
    micro = micro_batch_size(activation_bytes_per_sample(student, input_shape))
    batch = min(PROBE_BATCH, max(2, train_samples(data)), micro or PROBE_BATCH)
    device = module_device(module)  # set-up runs on the CPU: a GPU's steps are faster
    if data is not None:
        x = to(tensors(data.subset("train", batch, None)[0]), device)
    else:
        x = to(synthetic(input_shape, batch, torch.Generator()), device)
    opt = torch.optim.SGD(student.parameters(), lr=1e-6, momentum=0.9)
    times: list[float] = []
    try:
        for _ in range(PROBE_STEPS + 1):
            t0 = time.perf_counter()
            with torch.no_grad():
                soft = forward(teacher, x)
            out = forward(student, x)
            loss = F.mse_loss(out, soft)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
    finally:
        teacher.train(was_training)
    return typical_step_s(times[1:]) / batch


def typical_step_s(times: list[float]) -> float:
    """The cost of one step from timed steps on a shared machine: the median of the faster
    half. Another process can only make a step slower, never faster, so the slow tail is
    load, not the model: with a plain median, one model's measured epoch read 6 s to 77 s
    on one machine under load, and the auto trial timeout followed it to 1358 s."""
    fast = sorted(times)[: max(1, (len(times) + 1) // 2)]
    return statistics.median(fast)


def trial_seconds(epoch_s: float) -> float:
    """The longest fine-tune one trial may run, for a model whose round costs ``epoch_s``."""
    return TIMEOUT_EPOCHS * epoch_s
