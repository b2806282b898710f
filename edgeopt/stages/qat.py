"""Quantization-aware fine-tuning (torch phase): train with ORT's int8 arithmetic emulated,
so the int8 model ORT runs is the one that was trained.

It follows pruning and fine-tuning when they are there and runs on its own otherwise
("QAT only"). The model is captured as a graph (a ``torch.fx`` trace, else a ``torch.export``
capture: ``edgeopt.training.capture``; BatchNorm folded), fake-quantized as
``edgeopt.training.fake_quant`` describes, its activation ranges calibrated as ORT's MinMax
would on the quantize stage's calibration inputs, then fine-tuned with the one training loop
(distilling from the original model when asked). It exports with QuantizeLinear /
DequantizeLinear pairs carrying the learned ranges and the s8 weights; the quantize stage's
int8_static hands those ranges to ORT as tensor overrides.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeopt.errors import CandidateError
from edgeopt.stages.base import (
    FailurePolicy,
    Phase,
    Stage,
    StageConfig,
    StageOutput,
    check_range,
)
from edgeopt.stages.finetune_probe import (
    LOAD_MARGIN,
    float_round,
    sample_seconds,
)
from edgeopt.stages.quantize_config import calibration_inputs
from edgeopt.training import OptimizerKind, Schedule, TrainConfig, fit

if TYPE_CHECKING:
    from torch import nn

    from edgeopt.profiles import HardwareProfile
    from edgeopt.stages.base import ModelFacts, ProbeInput, StageContext, Suggester

log = logging.getLogger(__name__)

PARITY_REL_ERROR = 0.15
"""Export parity of a QAT model: ORT's outputs within this L2 distance of torch's, relative
to their L2 norm over the check inputs. ORT accumulates in int32 where torch sums floats, so an
activation on a rounding boundary moves by one quantum and deeper layers amplify it: on two
pruned MobileNetV2 x0.5 QAT builds single logits differed by 5 % and 11 % of the largest one
(so an element-wise tolerance failed them) while the relative error was 0.030 and 0.068 and
the top-1 agreed on 98.8 % and 99.6 % of 256 validation images. Another model's outputs are
off by about 1."""

CALIBRATION_SAMPLES = 128
"""Inputs the activation ranges start from: the plain int8 baseline's calibration set."""
EPOCHS = (0, 1, 2, 4)
"""The ``qat.epochs`` the search draws."""
QAT_TIMEOUT_EPOCHS = LOAD_MARGIN * max(EPOCHS)
"""A trial may take this many measured QAT epochs: the longest QAT the search draws, with
the fine-tune's room for validation and a loaded machine (``finetune_probe.LOAD_MARGIN``)."""


@dataclass(frozen=True, kw_only=True)
class QatConfig(StageConfig):
    """``epochs=0``: no quantization-aware fine-tuning. ``distill``: learn from the original
    model's soft outputs as well as the labels (always, without data)."""

    epochs: int = 0
    lr: float = 1e-3
    distill: bool = True

    def __post_init__(self) -> None:
        self._check_types()
        check_range("qat.epochs", self.epochs, 0, 1000)
        check_range("qat.lr", self.lr, 1e-7, 1.0)


class QatStage(Stage[QatConfig, "nn.Module"]):
    """Quantization-aware fine-tuning matched to ORT's static int8 (see the module doc).

    Offered only when the profile has int8_static. The returned module carries its
    ``TrainResult`` (as a dict) like the fine-tune stage's, under ``qat.train_result``.
    """

    name = "qat"
    title = "Quantization-aware training"
    # a model neither torch.fx nor torch.export captures fails every QAT draw alike: one
    # such failure switches QAT off instead of filling the study with it
    failure_policy = FailurePolicy(disable_after_model_failure=True)
    phase = Phase.TORCH
    config_type = QatConfig

    def suggest(self, space: Suggester, profile: HardwareProfile, facts: ModelFacts) -> QatConfig:
        """``qat.epochs`` {0, 1, 2, 4}; when > 0, ``qat.lr`` 1e-4..1e-2 (log) and
        ``qat.distill`` {True, False}. Nothing is drawn when the profile has no int8_static."""
        if "int8_static" not in tuple(profile.quantization.modes):
            return self.identity(profile)
        epochs = int(space.suggest_categorical("qat.epochs", list(EPOCHS)))
        if epochs == 0:
            return self.identity(profile)
        lr = float(space.suggest_float("qat.lr", 1e-4, 1e-2, log=True))
        distill = bool(space.suggest_categorical("qat.distill", [True, False]))
        return QatConfig(epochs=epochs, lr=lr, distill=distill)

    def probe(self, model: ProbeInput) -> dict[str, Any]:
        """The cost of a QAT epoch: ``sample_s`` measured seconds per training sample of the
        fake-quantized model distilling from the original (the fine-tune's timed steps,
        ``finetune_probe.sample_seconds``, on this stage's prepared copy), ``epoch_samples``
        what an epoch draws (a QAT epoch is a fine-tune round: the whole split at 32x32, the
        samples a round pays for on big images), ``epoch_s`` their cost. The probe sees no
        profile: measured whenever the model is a torch module fake quantization prepares;
        nothing otherwise (an ONNX input; a model it cannot capture, whose draws fail)."""
        if model.module is None:
            return {}
        from edgeopt.training import fake_quant

        inputs = model.inputs if model.inputs is not None else tuple(model.input_shape)
        try:  # u8 asymmetric activations: the flavours cost the same
            student = fake_quant.prepare_qat(copy.deepcopy(model.module), input_shape=inputs)
            sample_s = sample_seconds(model.module, inputs, model.data, model.threads, student)
        except Exception as exc:
            log.info("QAT cost not measured: %s: %s", type(exc).__name__, exc)
            return {}
        n = float_round(model)[1]  # a QAT epoch is a fine-tune round: the very same samples
        return {"sample_s": sample_s, "epoch_samples": n, "epoch_s": round(sample_s * n, 3)}

    def probe_notes(self, facts: Mapping[str, Any]) -> list[str]:
        """The measured cost of a QAT epoch."""
        if facts.get("epoch_s") is None:
            return []
        n = facts["epoch_samples"]
        return [f"one QAT epoch ({n} samples): {facts['epoch_s']:.1f}s (measured on this host)"]

    def trial_seconds(self, facts: Mapping[str, Any]) -> float | None:
        """``QAT_TIMEOUT_EPOCHS`` measured epochs (the longest QAT the search draws, with
        room for a loaded machine)."""
        epoch_s = facts.get("epoch_s")
        return None if epoch_s is None else QAT_TIMEOUT_EPOCHS * float(epoch_s)

    def identity(self, profile: HardwareProfile) -> QatConfig:
        """No quantization-aware training."""
        return QatConfig(epochs=0)

    def identity_params(self, profile: HardwareProfile) -> dict[str, Any]:
        """``qat.epochs`` 0 where the stage draws it."""
        return {"qat.epochs": 0} if "int8_static" in tuple(profile.quantization.modes) else {}

    def describe(self, config: QatConfig) -> str:
        """``qat 2ep`` (empty at the identity)."""
        return "" if self.is_identity(config) else f"qat {config.epochs}ep"

    def is_identity(self, config: QatConfig) -> bool:
        """Zero epochs change nothing."""
        return config.epochs == 0

    def apply(
        self, artifact: nn.Module, config: QatConfig, ctx: StageContext
    ) -> StageOutput[nn.Module]:
        """A fake-quantized copy of ``artifact``, calibrated and fine-tuned, in eval mode with
        weights on their int8 grid and ranges frozen (ready to export).

        Raises CandidateError("qat", ...) when the model cannot be captured, when there is no
        teacher where one is needed, or when training diverges.
        """

        from edgeopt.training import fake_quant

        if self.is_identity(config):
            return StageOutput(copy.deepcopy(artifact))
        q = ctx.profile.quantization
        inputs = ctx.inputs if ctx.inputs is not None else tuple(ctx.input_shape)
        try:
            model = fake_quant.prepare_qat(
                copy.deepcopy(artifact),
                signed_activations=str(q.activation_type) == "int8",
                input_shape=inputs,
                symmetric_activations=bool(q.activation_symmetric),
            )
        except fake_quant.CaptureError as exc:
            raise CandidateError("qat", str(exc)) from exc
        except Exception as exc:
            raise CandidateError(
                "qat", f"fake quantization failed: {type(exc).__name__}: {exc}"
            ) from exc
        calib = calibration_inputs(ctx, CALIBRATION_SAMPLES, ctx.model_inputs)
        fake_quant.calibrate(model, calib)
        distill = config.distill or ctx.data is None
        if distill and ctx.teacher is None:
            raise CandidateError("qat", "distillation needs the original model as teacher")
        train = TrainConfig(
            epochs=config.epochs,
            lr=config.lr,
            optimizer=OptimizerKind.SGD,
            schedule=Schedule.COSINE,
            weight_decay=0.0,
            augment=False,
            distill=distill,
        )
        result = fit(
            model,
            ctx.data,
            train,
            teacher=ctx.teacher if distill else None,
            seed=ctx.seed,
            on_epoch=ctx.on_epoch,
            input_shape=inputs,
            round_samples=ctx.round_samples,
        )
        weights = [t for t in model.state_dict().values() if t.is_floating_point()]
        if not all(bool(t.isfinite().all()) for t in weights if t.dim() > 0):
            raise CandidateError("qat", "training diverged: non-finite weights")
        fake_quant.finalize(model)
        log.info(
            "QAT %d epochs: int8-emulated val accuracy %.4f -> %.4f",
            result.epochs_run,
            result.initial_val_accuracy,
            result.best_val_accuracy,
        )
        return StageOutput(
            model,
            {"train_result": dataclasses.asdict(result)},
            export_rel_error=PARITY_REL_ERROR,
        )
