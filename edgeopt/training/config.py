"""Training settings and results: validated once at construction, JSON-ready."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edgeopt.errors import ConfigError

MAX_EPOCH_SAMPLES = 16384
"""An epoch draws at most this many training samples: on a large data set the fine-tune
budget (``epochs``) counts rounds of at most ``MAX_EPOCH_SAMPLES / batch_size`` optimizer
steps instead of whole passes, so one candidate never costs hours (a slow model's rounds are
shorter still: ``fit``'s ``round_samples``)."""
HIDDEN_WEIGHT = 1.0
"""The hidden-state loss's weight beside the (alpha-blended) logit loss: both are about 0.1 to
1 early in a fine-tune of a pruned model (the hidden loss is relative to the teacher's scale)."""
SYNTHETIC_TRAIN = 2048
"""Synthetic inputs per epoch in data-free distillation."""


class OptimizerKind(StrEnum):
    """SGD (momentum 0.9) or AdamW."""

    SGD = "sgd"
    ADAMW = "adamw"


class Schedule(StrEnum):
    """Learning-rate schedule over all steps: constant, step (x0.1 at 50% and 75%), cosine,
    wsd (constant, then a linear decay to zero over the last quarter of the epochs: a longer
    fine-tune continues from a shorter one's checkpoint, ``edgeopt.training.resume``)."""

    CONSTANT = "constant"
    STEP = "step"
    COSINE = "cosine"
    WSD = "wsd"


def _bad(name: str, value: object, want: str) -> ConfigError:
    return ConfigError(f"finetune.{name} must be {want}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Fine-tuning hyperparameters; validated at construction (ConfigError).

    ``epochs=0`` means no training. ``patience`` stops after that many epochs without a
    better validation accuracy (0 = never stop early). ``augment`` applies random shifts of
    up to ``MAX_SHIFT_PX`` pixels and Gaussian noise to image-like inputs (C, H, W); on an
    image folder, the folder's ``augment`` setting (crop, flip) instead of the shifts
    (``edgeopt.training.augment``).
    ``distill`` adds the Hinton loss against the teacher with ``temperature`` and ``alpha``
    (the weight of the soft loss); ``hidden_distill`` (with ``distill``) adds the
    hidden-state loss of ``edgeopt.training.hidden`` at weight ``HIDDEN_WEIGHT``.
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
    hidden_distill: bool = False

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
            ("hidden_distill", isinstance(self.hidden_distill, bool), "a bool"),
        ]
        for name, ok, want in checks:
            if not ok or isinstance(getattr(self, name), bool) != (want == "a bool"):
                raise _bad(name, getattr(self, name), want)
        if self.hidden_distill and not self.distill:
            raise ConfigError(
                "finetune.hidden_distill needs finetune.distill (it distils from the teacher)"
            )
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
    resumed_epochs: int = 0
    """Epochs restored from a shorter fine-tune's checkpoint instead of trained again."""
    steps: int = 0
    """Optimizer steps of the fine-tune (restored ones included): rounds x round batches."""
    data_wait_s: float = 0.0
    """Seconds blocked waiting for a streamed source's next batch (training and validation;
    part of ``seconds``): the data-loading share of the fine-tune. 0 for data in memory."""
