"""Fine-tuning stage (torch phase): the one training loop, with optional distillation from the
unmodified original model. Pruned models need it: without it they fall to chance accuracy."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeopt.errors import CandidateError
from edgeopt.stages.base import Fidelity, Phase, Stage, StageConfig, StageOutput
from edgeopt.stages.finetune_probe import (
    MAX_EPOCHS,
    float_round,
    round_seconds,
    trial_seconds,
)
from edgeopt.training import OptimizerKind, Schedule, TrainConfig, TrainResult, fit
from edgeopt.training.batch import is_float_image
from edgeopt.training.blocks import block_stack
from edgeopt.training.resume import CheckpointStore, prefix_key, stable_epochs

if TYPE_CHECKING:
    from torch import nn

    from edgeopt.profiles import HardwareProfile
    from edgeopt.stages.base import ModelFacts, ProbeInput, StageContext, Suggester

log = logging.getLogger(__name__)


PATIENCE = 3
CHECKPOINTS = "finetune-checkpoints"
"""Folder in the run's cache of the states longer fine-tunes continue from."""


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(StageConfig, TrainConfig):
    """``TrainConfig`` as a stage config (same fields; ``epochs=0`` = no fine-tuning)."""

    def __post_init__(self) -> None:
        self._check_types()
        TrainConfig.__post_init__(self)


class FinetuneStage(Stage[FinetuneConfig, "nn.Module"]):
    """Fine-tunes a deep copy of the model with ``edgeopt.training.fit``.

    It follows pruning only (``requires``): a pruned model needs it, and leaving unpruned
    models alone keeps their candidates cheap. ``apply`` passes ``ctx.teacher`` (used when
    ``distill`` is on, and always when ``ctx.data`` is None: data-free distillation) and
    ``ctx.on_epoch`` (its exceptions propagate). Its info carries the
    ``TrainResult`` as a plain dict under ``train_result``. With ``ctx.cache_dir`` a ``wsd``
    or ``constant`` fine-tune continues from the checkpoint of a shorter one with the same
    settings and saves its own (``edgeopt.training.resume``): the same model, sooner.
    """

    name = "finetune"
    title = "Fine-tuning"
    # peers pruned a similar share of the model (and removed as many blocks); a wsd or
    # constant schedule restarts a
    # longer run from the shorter one's checkpoint (``edgeopt.training.resume``)
    fidelity = Fidelity(
        budget="epochs",
        peer_key="prune.ratio",
        peer_tolerance=0.1,
        max_budget=MAX_EPOCHS,
        history_key="finetune_val_history",
        continue_when={"schedule": ("wsd", "constant")},
        peer_same=("prune.depth",),
    )
    phase = Phase.TORCH
    config_type = FinetuneConfig
    requires = frozenset({"prune"})
    widest_facts = {"image": True, "blocks": True}

    def suggest(
        self, space: Suggester, profile: HardwareProfile, facts: ModelFacts
    ) -> FinetuneConfig:
        """``finetune.epochs`` 1..8, ``finetune.lr`` 1e-4..1e-1 (log),
        ``finetune.batch_size`` {32, 64, 128}, ``finetune.optimizer`` {sgd, adamw},
        ``finetune.weight_decay`` 1e-6..1e-2 (log), ``finetune.schedule``
        {constant, step, cosine, wsd}, ``finetune.label_smoothing`` 0..0.2 step 0.05,
        ``finetune.augment`` {True, False} (image models only: token ids are never augmented,
        so other models train with it off), ``finetune.distill`` {False, True}; with distill,
        ``finetune.temperature`` 1..8 (log) and ``finetune.alpha`` 0.3..0.95. Patience is
        fixed at 3 epochs; with distill, on a model with a block stack (``blocks``),
        ``finetune.hidden_distill`` {False, True}. The profile does not narrow this space."""
        # a run probed before the ``image`` fact keeps asking augment, as its study did
        image = bool(facts.of(self.name).get("image", True))
        # drawn in this order (a dict literal evaluates in order): seeded studies replay it
        drawn: dict[str, Any] = {
            "epochs": int(space.suggest_int("finetune.epochs", 1, MAX_EPOCHS)),
            "lr": float(space.suggest_float("finetune.lr", 1e-4, 1e-1, log=True)),
            "batch_size": int(space.suggest_categorical("finetune.batch_size", [32, 64, 128])),
            "optimizer": space.suggest_categorical(
                "finetune.optimizer", [o.value for o in OptimizerKind]
            ),
            "weight_decay": float(
                space.suggest_float("finetune.weight_decay", 1e-6, 1e-2, log=True)
            ),
            "schedule": space.suggest_categorical("finetune.schedule", [s.value for s in Schedule]),
            "label_smoothing": round(
                float(space.suggest_float("finetune.label_smoothing", 0.0, 0.2, step=0.05)), 4
            ),
            "augment": image and bool(space.suggest_categorical("finetune.augment", [True, False])),
            "distill": bool(space.suggest_categorical("finetune.distill", [False, True])),
        }
        if drawn["distill"]:
            drawn["temperature"] = float(
                space.suggest_float("finetune.temperature", 1.0, 8.0, log=True)
            )
            drawn["alpha"] = float(space.suggest_float("finetune.alpha", 0.3, 0.95))
            if facts.of(self.name).get("blocks"):
                drawn["hidden_distill"] = bool(
                    space.suggest_categorical("finetune.hidden_distill", [False, True])
                )
        return FinetuneConfig(patience=PATIENCE, **drawn)

    def probe(self, model: ProbeInput) -> dict[str, Any]:
        """The fine-tune round (``finetune_probe``): ``sample_s`` measured seconds per
        training sample (with a distillation teacher) on this machine, ``round_s`` what a
        round may cost, ``round_samples`` the samples it draws, ``epoch_s`` its measured
        cost; ``image``: the model takes one float image, what ``finetune.augment`` augments;
        ``blocks``: it has a block stack, what ``finetune.hidden_distill`` matches.
        Recorded once in the baseline: a resumed run keeps its rounds."""
        if model.module is None:
            return {}
        inputs = model.inputs if model.inputs is not None else tuple(model.input_shape)
        sample_s, n_round = float_round(model)
        round_s = round_seconds(model.search_timeout_s)
        return {
            "image": is_float_image(inputs),
            "blocks": block_stack(model.module, inputs) is not None,
            "epoch_s": round(sample_s * n_round, 3),
            "sample_s": sample_s,
            "round_s": round_s,
            "round_samples": n_round,
        }

    def probe_notes(self, facts: Mapping[str, Any]) -> list[str]:
        """The measured cost of a round, and its samples when that is less than an epoch."""
        if facts.get("epoch_s") is None:
            return []
        n = facts.get("round_samples")
        what = "epoch" if n is None else f"round ({n} samples)"
        return [f"one fine-tune {what}: {facts['epoch_s']:.1f}s (measured on this host)"]

    def trial_seconds(self, facts: Mapping[str, Any]) -> float | None:
        """``TIMEOUT_EPOCHS`` measured rounds (the longest fine-tune the search draws,
        with room for a loaded machine)."""
        epoch_s = facts.get("epoch_s")
        return None if epoch_s is None else trial_seconds(float(epoch_s))

    def identity(self, profile: HardwareProfile) -> FinetuneConfig:
        """No training (``epochs=0``)."""
        return FinetuneConfig(epochs=0)

    def describe(self, config: FinetuneConfig) -> str:
        """``finetune 4ep``, with `` kd`` when distilling (`` kd+hidden`` with the
        hidden-state loss)."""
        kd = " kd+hidden" if config.hidden_distill else " kd" if config.distill else ""
        return f"finetune {config.epochs}ep{kd}"

    def is_identity(self, config: FinetuneConfig) -> bool:
        """Zero epochs train nothing."""
        return config.epochs == 0

    def apply(
        self, artifact: nn.Module, config: FinetuneConfig, ctx: StageContext
    ) -> StageOutput[nn.Module]:
        """Fine-tune a deep copy of ``artifact``; returns it in eval mode with its best weights.

        Raises CandidateError("finetune", ...) when distillation is asked for (or needed, with
        no data) but ``ctx.teacher`` is None, or when even the best weights are non-finite (a
        divergence after a good epoch keeps that epoch's weights).
        """
        model = copy.deepcopy(artifact)
        if self.is_identity(config):
            return StageOutput(model)
        if ctx.teacher is None and (config.distill or ctx.data is None):
            raise CandidateError(
                "finetune",
                "distillation needs the original model as teacher"
                + (" (no data: data-free distillation)" if ctx.data is None else ""),
            )
        teacher = ctx.teacher if (config.distill or ctx.data is None) else None
        checkpoints = None
        if ctx.cache_dir is not None and stable_epochs(config) > 0:
            key = prefix_key(model, teacher, ctx.data, config, ctx.seed, ctx.round_samples)
            checkpoints = CheckpointStore(ctx.cache_dir / CHECKPOINTS / key)
        result: TrainResult = fit(
            model,
            ctx.data,
            config,
            teacher=teacher,
            seed=ctx.seed,
            on_epoch=ctx.on_epoch,
            input_shape=ctx.inputs if ctx.inputs is not None else tuple(ctx.input_shape),
            checkpoints=checkpoints,
            round_samples=ctx.round_samples,
        )
        tensors = model.state_dict().values()
        if not all(bool(t.isfinite().all()) for t in tensors if t.is_floating_point()):
            raise CandidateError(
                "finetune", "training diverged: non-finite weights (learning rate too high?)"
            )
        log.info(
            "fine-tuned %d epochs (%d restored from a shorter run): val accuracy %.4f -> %.4f",
            result.epochs_run,
            result.resumed_epochs,
            result.initial_val_accuracy,
            result.best_val_accuracy,
        )
        return StageOutput(model, {"train_result": dataclasses.asdict(result)})
