"""The one training loop: fine-tuning with optional knowledge distillation, and accuracy helpers.

``fit`` trains a model in place on a ``DataBundle`` (or, data-free, on synthetic Gaussian
inputs against a teacher's outputs), keeps the best-validation weights, and is deterministic
under its seed on a fixed thread count (threads are left to the caller).

Distillation loss (Hinton et al. 2015), with teacher = the unmodified original model::

    alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)

(the KL runs from the teacher's distribution to the student's, as in the paper and the
PyTorch KD tutorial; the T^2 factor keeps the soft gradients' scale independent of T).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeopt.data import DataBundle

SYNTHETIC_TRAIN = 2048
"""Synthetic inputs per epoch in data-free distillation."""
SYNTHETIC_VAL = 512
"""Fixed synthetic inputs on which data-free 'accuracy' (top-1 agreement) is measured."""
MAX_SHIFT_PX = 2
NOISE_STD = 0.1
"""Gaussian augmentation noise, as a fraction of the training inputs' standard deviation."""


class OptimizerKind(StrEnum):
    """SGD (momentum 0.9) or AdamW."""

    SGD = "sgd"
    ADAMW = "adamw"


class Schedule(StrEnum):
    """Learning-rate schedule over all steps: constant, step (x0.1 at 50% and 75%), cosine."""

    CONSTANT = "constant"
    STEP = "step"
    COSINE = "cosine"


def _bad(name: str, value: object, want: str) -> ConfigError:
    return ConfigError(f"finetune.{name} must be {want}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Fine-tuning hyperparameters; validated at construction (ConfigError).

    ``epochs=0`` means no training. ``patience`` stops after that many epochs without a
    better validation accuracy (0 = never stop early). ``augment`` applies random shifts of
    up to ``MAX_SHIFT_PX`` pixels and Gaussian noise to image-like inputs (C, H, W).
    ``distill`` adds the Hinton loss against the teacher with ``temperature`` and ``alpha``
    (the weight of the soft loss).
    """

    lr: float = 0.01
    epochs: int = 0
    batch_size: int = 64
    optimizer: OptimizerKind = OptimizerKind.SGD
    weight_decay: float = 5e-4
    schedule: Schedule = Schedule.COSINE
    label_smoothing: float = 0.0
    patience: int = 0
    augment: bool = True
    distill: bool = False
    temperature: float = 4.0
    alpha: float = 0.7

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("lr", isinstance(self.lr, int | float) and 0 < self.lr <= 10, "in (0, 10]"),
            ("epochs", _is_int(self.epochs) and 0 <= self.epochs <= 1000, "an int in [0, 1000]"),
            (
                "batch_size",
                _is_int(self.batch_size) and 1 <= self.batch_size <= 65536,
                "an int in [1, 65536]",
            ),
            (
                "weight_decay",
                isinstance(self.weight_decay, int | float) and 0 <= self.weight_decay < 1,
                "in [0, 1)",
            ),
            (
                "label_smoothing",
                isinstance(self.label_smoothing, int | float) and 0 <= self.label_smoothing < 1,
                "in [0, 1)",
            ),
            ("patience", _is_int(self.patience) and self.patience >= 0, "an int >= 0"),
            ("augment", isinstance(self.augment, bool), "a bool"),
            ("distill", isinstance(self.distill, bool), "a bool"),
            (
                "temperature",
                isinstance(self.temperature, int | float) and 0 < self.temperature <= 100,
                "in (0, 100]",
            ),
            ("alpha", isinstance(self.alpha, int | float) and 0 <= self.alpha <= 1, "in [0, 1]"),
        ]
        for name, ok, want in checks:
            if not ok or isinstance(getattr(self, name), bool) != (want == "a bool"):
                raise _bad(name, getattr(self, name), want)
        for name, enum_type in (("optimizer", OptimizerKind), ("schedule", Schedule)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, enum_type(value))
            except ValueError as exc:
                allowed = ", ".join(m.value for m in enum_type)
                raise _bad(name, value, f"one of {allowed}") from exc


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class TrainResult:
    """What ``fit`` did. ``best_val_accuracy`` is of the weights left in the model (epoch 0 =
    the initial weights were best); ``history`` holds ``(epoch, train_loss, val_accuracy)``."""

    best_val_accuracy: float
    best_epoch: int
    initial_val_accuracy: float
    epochs_run: int
    stopped_early: bool
    history: tuple[tuple[int, float, float], ...]
    seconds: float
    data_free: bool


def _batches(n: int, batch: int, gen: torch.Generator) -> list[torch.Tensor]:
    import torch

    perm = torch.randperm(n, generator=gen)
    if n % batch == 1 and n > 1:  # a batch of one breaks BatchNorm in train mode
        perm = perm[:-1]
    return list(perm.split(batch))


def augment_batch(x: torch.Tensor, gen: torch.Generator, noise_std: float) -> torch.Tensor:
    """Random per-sample shifts of up to ``MAX_SHIFT_PX`` (zero fill) plus Gaussian noise."""
    import torch
    from torch.nn import functional as F

    if x.dim() != 4 or min(x.shape[2:]) < 4:
        return x
    b, c, h, w = x.shape
    s = MAX_SHIFT_PX
    padded = F.pad(x, (s, s, s, s))
    dy = torch.randint(-s, s + 1, (b,), generator=gen)
    dx = torch.randint(-s, s + 1, (b,), generator=gen)
    rows = (torch.arange(h)[None, :] + s + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w)[None, :] + s + dx[:, None])[:, None, None, :]
    bi = torch.arange(b)[:, None, None, None]
    ci = torch.arange(c)[None, :, None, None]
    out = padded[bi, ci, rows, cols]
    if noise_std > 0:
        out = out + noise_std * torch.randn(out.shape, generator=gen)
    return out


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, batch mean."""
    from torch.nn import functional as F

    t = temperature
    return (t * t) * F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        log_target=True,
        reduction="batchmean",
    )


def _lr_factor(schedule: Schedule, step: int, total: int) -> float:
    if schedule is Schedule.CONSTANT or total <= 0:
        return 1.0
    frac = step / total
    if schedule is Schedule.STEP:
        return 1.0 if frac < 0.5 else (0.1 if frac < 0.75 else 0.01)
    return 0.5 * (1.0 + math.cos(math.pi * frac))


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    import torch

    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def fit(
    model: nn.Module,
    data: DataBundle | None,
    config: TrainConfig,
    *,
    teacher: nn.Module | None = None,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> TrainResult:
    """Train ``model`` in place and leave its best-validation weights in it.

    With ``data``: labels from the training split, accuracy on the validation split; the
    teacher (required when ``config.distill``) supplies soft targets. With ``data=None``:
    data-free distillation, ``teacher`` required, on fresh standard Gaussian inputs of the
    teacher's input shape each epoch (hard targets = the teacher's top-1), and "accuracy" is
    top-1 agreement with the teacher on a fixed synthetic set. The initial weights count as
    epoch 0, so the result is never worse on validation than the input.

    ``on_epoch(epoch, val_accuracy)`` runs after each epoch (1-based); an exception it raises
    propagates (the search abandons hopeless candidates that way). The model ends in eval
    mode; the teacher is not modified (its train/eval mode is restored).

    ``input_shape`` (one sample, no batch dim) is needed only when ``data`` is None.
    Raises ConfigError when a required teacher or input shape is missing.
    """
    import torch
    from torch.nn import functional as F

    t0 = time.perf_counter()
    if (config.distill or data is None) and teacher is None:
        raise ConfigError(
            "fine-tuning needs a teacher model for distillation"
            + (" (no data was given: data-free distillation)" if data is None else ""),
        )
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    teacher_was_training = teacher.training if teacher is not None else False
    if teacher is not None:
        teacher.eval()
    try:
        if data is not None:
            x_train = torch.from_numpy(np.ascontiguousarray(data.x_train, dtype=np.float32))
            y_train = torch.from_numpy(np.ascontiguousarray(data.y_train, dtype=np.int64))
            x_val = torch.from_numpy(np.ascontiguousarray(data.x_val, dtype=np.float32))
            y_val = torch.from_numpy(np.ascontiguousarray(data.y_val, dtype=np.int64))
            shape = tuple(x_train.shape[1:])
            noise = NOISE_STD * float(x_train.std())
        else:
            assert teacher is not None
            if input_shape is None:
                raise ConfigError("data-free distillation needs the teacher's input_shape")
            shape = tuple(int(d) for d in input_shape)
            val_gen = torch.Generator().manual_seed(seed + 1_000_003)
            x_val = torch.randn((SYNTHETIC_VAL, *shape), generator=val_gen)
            y_val = _predict(teacher, x_val).argmax(1)
            x_train = y_train = None
            noise = NOISE_STD
        do_augment = config.augment and data is not None and len(shape) == 3

        def val_accuracy() -> float:
            model.eval()
            return float((_predict(model, x_val).argmax(1) == y_val).float().mean())

        initial = val_accuracy()
        best_acc, best_epoch = initial, 0
        best_state = copy.deepcopy(model.state_dict())
        history: list[tuple[int, float, float]] = []
        stopped = False
        if config.epochs > 0:
            params = [p for p in model.parameters() if p.requires_grad]
            if config.optimizer is OptimizerKind.SGD:
                opt: torch.optim.Optimizer = torch.optim.SGD(
                    params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay
                )
            else:
                opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
            n_train = len(x_train) if x_train is not None else SYNTHETIC_TRAIN
            steps_per_epoch = len(_batches(n_train, config.batch_size, torch.Generator()))
            total_steps = steps_per_epoch * config.epochs
            step = 0
            since_best = 0
            for epoch in range(1, config.epochs + 1):
                model.train()
                if x_train is None:
                    xe = torch.randn((SYNTHETIC_TRAIN, *shape), generator=gen)
                    ye = None
                else:
                    xe, ye = x_train, y_train
                losses: list[float] = []
                for idx in _batches(len(xe), config.batch_size, gen):
                    xb = xe[idx]
                    if do_augment:
                        xb = augment_batch(xb, gen, noise)
                    out = model(xb)
                    t_out = None
                    if teacher is not None and (config.distill or ye is None):
                        with torch.no_grad():
                            t_out = teacher(xb)
                    yb = ye[idx] if ye is not None else t_out.argmax(1)  # type: ignore[union-attr]
                    ce = F.cross_entropy(out, yb, label_smoothing=config.label_smoothing)
                    if config.distill and t_out is not None:
                        kd = distillation_loss(out, t_out, config.temperature)
                        loss = config.alpha * kd + (1 - config.alpha) * ce
                    else:
                        loss = ce
                    for group in opt.param_groups:
                        group["lr"] = config.lr * _lr_factor(config.schedule, step, total_steps)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    losses.append(float(loss.detach()))
                acc = val_accuracy()
                history.append((epoch, float(np.mean(losses)) if losses else 0.0, acc))
                if acc > best_acc:
                    best_acc, best_epoch, since_best = acc, epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    since_best += 1
                if on_epoch is not None:
                    on_epoch(epoch, acc)
                if config.patience and since_best >= config.patience and epoch < config.epochs:
                    stopped = True
                    break
        model.load_state_dict(best_state)
        model.eval()
    finally:
        if teacher is not None:
            teacher.train(teacher_was_training)
    return TrainResult(
        best_val_accuracy=best_acc,
        best_epoch=best_epoch,
        initial_val_accuracy=initial,
        epochs_run=len(history),
        stopped_early=stopped,
        history=tuple(history),
        seconds=time.perf_counter() - t0,
        data_free=data is None,
    )


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in eval mode (the mode is restored)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        logits = _predict(model, torch.from_numpy(np.ascontiguousarray(x, np.float32)), batch_size)
    finally:
        model.train(was_training)
    return float((logits.argmax(1).numpy() == np.asarray(y)).mean())


def evaluate_onnx(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 256,
    threads: int | None = None,
) -> float:
    """Top-1 accuracy of an ONNX model in ONNX Runtime (CPU); ``threads`` = intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    xs = np.ascontiguousarray(x, dtype=np.float32)
    preds = [
        sess.run(None, {name: xs[i : i + batch_size]})[0].argmax(1)
        for i in range(0, len(xs), batch_size)
    ]
    return float((np.concatenate(preds) == np.asarray(y)).mean()) if preds else 0.0
