"""The one training loop: fine-tuning with optional knowledge distillation, and accuracy helpers.

``fit`` trains a model in place on a ``DataBundle`` (or, data-free, on synthetic Gaussian
inputs against a teacher's outputs), keeps the best-validation weights, and is deterministic
under its seed on a fixed thread count (threads are left to the caller).

Distillation loss (Hinton et al. 2015), with teacher = the unmodified original model::

    alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)

(the KL runs from the teacher's distribution to the student's, as in the paper and the
PyTorch KD tutorial; the T^2 factor keeps the soft gradients' scale independent of T).

Modules: ``loop`` (``fit``), ``splits`` (what it trains and validates on), ``batch`` (tensor or
tuple batches of any model's inputs), ``distill`` (the loss, the teacher's logits), ``evaluate``
(top-1 accuracy in torch and ONNX Runtime), ``augment`` (training batches only), ``config``,
``resume`` (checkpoints shared by fine-tunes of different lengths), ``fake_quant``
(quantization-aware fine-tuning).
"""

from edgeopt.training.augment import augment_batch
from edgeopt.training.config import OptimizerKind, Schedule, TrainConfig, TrainResult
from edgeopt.training.distill import distillation_loss, teacher_logits
from edgeopt.training.evaluate import evaluate, evaluate_onnx
from edgeopt.training.loop import MAX_EPOCH_SAMPLES, SYNTHETIC_TRAIN, fit
from edgeopt.training.splits import SYNTHETIC_VAL

__all__ = [
    "MAX_EPOCH_SAMPLES",
    "SYNTHETIC_TRAIN",
    "SYNTHETIC_VAL",
    "OptimizerKind",
    "Schedule",
    "TrainConfig",
    "TrainResult",
    "augment_batch",
    "distillation_loss",
    "evaluate",
    "evaluate_onnx",
    "fit",
    "teacher_logits",
]
