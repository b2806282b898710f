"""The one training loop, ``fit``: fine-tuning with optional knowledge distillation, on a
``DataBundle`` or data-free on synthetic inputs, with augmentation, learning-rate schedules
and checkpoints a longer fine-tune resumes from (``edgeopt.training.resume``)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.data import NpzSource
from edgeopt.errors import ConfigError
from edgeopt.training.augment import augment_training
from edgeopt.training.batch import (
    Batch,
    Inputs,
    example,
    forward,
    is_float_image,
    size,
    synthetic,
    take,
    to,
)
from edgeopt.training.config import (
    HIDDEN_WEIGHT,
    MAX_EPOCH_SAMPLES,
    SYNTHETIC_TRAIN,
    OptimizerKind,
    Schedule,
    TrainConfig,
    TrainResult,
)
from edgeopt.training.device import module_device
from edgeopt.training.distill import distillation_loss, teacher_logits
from edgeopt.training.evaluate import predict
from edgeopt.training.hidden import HiddenTransfer
from edgeopt.training.micro_batch import (
    ACTIVATION_BUDGET_BYTES,
    activation_bytes_per_sample,
    chunks,
    micro_batch_size,
)
from edgeopt.training.resume import CheckpointStore, FitState, stable_epochs
from edgeopt.training.splits import Split, split_of

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeopt.data import DataBundle, DataSource


def _batches(
    n: int, batch: int, gen: torch.Generator, cap: int = MAX_EPOCH_SAMPLES
) -> list[torch.Tensor]:
    """One epoch's (round's) index lists: the first ``cap`` of a seeded permutation of ``n``
    (the same draw from ``gen`` whatever ``cap``)."""
    import torch

    perm = torch.randperm(n, generator=gen)[: min(cap, MAX_EPOCH_SAMPLES)]
    n = len(perm)
    if n % batch == 1 and n > 1:  # a batch of one breaks BatchNorm in train mode
        perm = perm[:-1]
    return list(perm.split(batch))


def lr_factor(schedule: Schedule, step: int, total: int, stable: int = 0) -> float:
    """The learning rate's factor at ``step`` of ``total``; ``stable``: the steps before the
    ``wsd`` schedule starts decaying."""
    if schedule is Schedule.CONSTANT or total <= 0:
        return 1.0
    if schedule is Schedule.WSD:
        return 1.0 if step < stable else max(0.0, (total - step) / max(1, total - stable))
    frac = step / total
    if schedule is Schedule.STEP:
        return 1.0 if frac < 0.5 else (0.1 if frac < 0.75 else 0.01)
    return 0.5 * (1.0 + math.cos(math.pi * frac))


def fit(
    model: nn.Module,
    data: DataBundle | DataSource | None,
    config: TrainConfig,
    *,
    teacher: nn.Module | None = None,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    input_shape: Inputs | None = None,
    checkpoints: CheckpointStore | None = None,
    round_samples: int | None = None,
    activation_budget_bytes: int = ACTIVATION_BUDGET_BYTES,
) -> TrainResult:
    """Train ``model`` in place and leave its best-validation weights in it.

    ``data``: arrays (a ``DataBundle``, or an npz source's), or a streamed source (an image
    folder) whose training batches are decoded per step, drawn by the same seeded index lists,
    and whose validation accuracy is on its fixed scoring subset. With ``data``: labels from
    the training split, accuracy on the validation split; the
    teacher (required when ``config.distill``) supplies soft targets. With ``data=None``:
    data-free distillation, ``teacher`` required, on fresh standard Gaussian inputs of the
    teacher's input shape each epoch (hard targets = the teacher's top-1), and "accuracy" is
    top-1 agreement with the teacher on a fixed synthetic set. A model with several inputs
    takes structured sample arrays (``edgeopt.inputs``): its batches are tuples
    (``edgeopt.training.batch``), its synthetic inputs ``ModelInputs.synthetic``'s, and image
    augmentation is off. The initial weights count as
    epoch 0, so the result is never worse on validation than the input.

    ``on_epoch(epoch, val_accuracy)`` runs after each epoch (1-based); an exception it raises
    propagates (the search abandons hopeless candidates that way). The model ends in eval
    mode; the teacher is not modified (its train/eval mode is restored).

    Training runs on ``model``'s device (``module_device``; the teacher must be on it too):
    batches move there as they are drawn, the random streams stay on the CPU, so a seed
    draws the same batches and augmentations on every device.

    ``input_shape`` (one sample, no batch dim, or the ``ModelInputs`` of a multi-input
    model) is needed only when ``data`` is None.
    ``checkpoints`` (for the ``wsd`` and ``constant`` schedules): the run starts from the
    latest saved state it shares with a shorter fine-tune and saves its own at the end of its
    constant part (``edgeopt.training.resume``); ``on_epoch`` is called for the epochs
    restored too, so a caller sees the same sequence as from scratch.
    ``round_samples``: the samples one of ``config.epochs`` draws (a fine-tune round,
    ``stages.finetune_probe``); None or more than an epoch: one epoch (``MAX_EPOCH_SAMPLES``
    at most). A data-free round draws at most ``SYNTHETIC_TRAIN`` fresh inputs.
    ``activation_budget_bytes``: a step whose batch would keep more layer outputs than this
    runs as micro-batches with accumulated gradients (``edgeopt.training.micro_batch``).
    Raises ConfigError when a required teacher or input shape is missing.
    """
    import torch

    t0 = time.perf_counter()
    if isinstance(data, NpzSource):
        data = data.bundle  # in memory: exactly the arrays fit always trained on
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
        split = split_of(data, teacher, input_shape, seed, module_device(model))
        run = _Run(model, teacher, split, config, gen, round_samples or MAX_EPOCH_SAMPLES)
        if config.epochs > 0:
            per_sample = activation_bytes_per_sample(model, split.inputs)
            run.micro = micro_batch_size(per_sample, activation_budget_bytes)
        run.train(on_epoch, checkpoints if stable_epochs(config) > 0 else None)
    finally:
        if teacher is not None:
            teacher.train(teacher_was_training)
    return TrainResult(
        best_val_accuracy=run.best_acc,
        best_epoch=run.best_epoch,
        initial_val_accuracy=run.initial,
        epochs_run=len(run.history),
        stopped_early=run.stopped,
        history=tuple(run.history),
        seconds=time.perf_counter() - t0,
        data_free=data is None,
        resumed_epochs=run.resumed_epochs,
        steps=run.step,
        data_wait_s=split.stream.waits.seconds if split.stream is not None else 0.0,
    )


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer is OptimizerKind.SGD:
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


class _Run:
    """One ``fit`` call's state: the best weights so far, the history, the step count."""

    def __init__(
        self,
        model: nn.Module,
        teacher: nn.Module | None,
        split: Split,
        config: TrainConfig,
        gen: torch.Generator,
        cap: int = MAX_EPOCH_SAMPLES,
    ) -> None:
        self.model, self.teacher, self.split = model, teacher, split
        self.config, self.gen, self.cap = config, gen, cap
        self.device = module_device(model)
        real = split.x_train is not None or split.stream is not None
        self.augment = config.augment and real and is_float_image(split.inputs)
        self.images = split.stream.augmentation if split.stream is not None else None
        self.initial = self.val_accuracy()
        self.best_acc, self.best_epoch = self.initial, 0
        self.best_state = copy.deepcopy(model.state_dict())
        self.history: list[tuple[int, float, float]] = []
        self.stopped = False
        self.step = 0
        self.micro: int | None = None  # the most samples one forward holds (None: all)
        self.resumed_epochs = 0
        self.stable_steps = 0
        # without augmentation the teacher sees the same training inputs every epoch: its
        # logits are computed once (in eval mode, as per batch) instead of once per epoch
        self.teacher_logits: torch.Tensor | None = None
        # the hidden-state loss needs the teacher's blocks on every batch: no cached logits
        self.hidden: HiddenTransfer | None = None
        if config.hidden_distill and teacher is not None:
            self.hidden = HiddenTransfer(model, teacher, example(split.inputs, self.device))
        repeats = config.distill and config.epochs > 1 and not self.augment
        if teacher is not None and split.x_train is not None and repeats and self.hidden is None:
            self.teacher_logits = teacher_logits(teacher, split.x_train)

    def val_accuracy(self) -> float:
        self.model.eval()
        if self.split.stream is not None:
            return self.split.stream.val_accuracy(self.model)
        assert self.split.x_val is not None
        logits = predict(self.model, self.split.x_val)
        return float((logits.argmax(1) == self.split.y_val).float().mean())

    def train(
        self,
        on_epoch: Callable[[int, float], None] | None,
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        """Run the epochs (stopping early on ``patience``), then load the best weights."""
        import torch

        config = self.config
        if config.epochs > 0:
            opt = _optimizer(self.model, config)
            n_train = self.split.n_train
            # the batch count only: a throwaway generator leaves ``gen``'s stream alone
            steps_per_epoch = len(_batches(n_train, config.batch_size, torch.Generator(), self.cap))
            total_steps = steps_per_epoch * config.epochs
            stable = stable_epochs(config)
            self.stable_steps = steps_per_epoch * stable
            since_best, first = 0, 1
            state = checkpoints.latest(stable) if checkpoints is not None else None
            if state is not None:
                since_best = self.restore(state, opt)
                first = state.epoch + 1
                for epoch, _loss, acc in self.history:
                    if on_epoch is not None:
                        on_epoch(epoch, acc)
                # the shorter run ended at state.epoch, where this one may stop on patience
                if config.patience and since_best >= config.patience:
                    self.stopped, first = True, config.epochs + 1
            for epoch in range(first, config.epochs + 1):
                loss = self.epoch(opt, total_steps)
                acc = self.val_accuracy()
                self.history.append((epoch, loss, acc))
                if acc > self.best_acc:
                    self.best_acc, self.best_epoch, since_best = acc, epoch, 0
                    self.best_state = copy.deepcopy(self.model.state_dict())
                else:
                    since_best += 1
                if on_epoch is not None:
                    on_epoch(epoch, acc)
                if config.patience and since_best >= config.patience and epoch < config.epochs:
                    self.stopped = True
                    break
                if checkpoints is not None and epoch == stable:
                    checkpoints.save(self.snapshot(epoch, opt, since_best))
        self.model.load_state_dict(self.best_state)
        self.model.eval()

    def snapshot(self, epoch: int, opt: torch.optim.Optimizer, since_best: int) -> FitState:
        """This run's state after ``epoch`` epochs, to continue from."""
        import torch

        current = copy.deepcopy(self.model.state_dict())
        return FitState(
            epoch=epoch,
            step=self.step,
            model=current,
            optimizer=copy.deepcopy(opt.state_dict()),
            generator=self.gen.get_state(),
            torch_rng=torch.get_rng_state(),  # dropout draws from the global stream
            cuda_rng=(
                torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
            ),
            best_acc=self.best_acc,
            best_epoch=self.best_epoch,
            best_model=None if self.best_epoch == epoch else self.best_state,
            initial=self.initial,
            since_best=since_best,
            history=list(self.history),
        )

    def restore(self, state: FitState, opt: torch.optim.Optimizer) -> int:
        """Continue from ``state`` (saved by a run with the same settings); returns the
        epochs since the best one."""
        import torch

        self.model.load_state_dict(state.model)
        opt.load_state_dict(state.optimizer)
        self.gen.set_state(state.generator)
        torch.set_rng_state(state.torch_rng)
        if state.cuda_rng is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state.cuda_rng, self.device)
        self.step = state.step
        self.best_acc, self.best_epoch = state.best_acc, state.best_epoch
        self.best_state = copy.deepcopy(
            state.best_model if state.best_model is not None else state.model
        )
        self.initial = state.initial
        self.history = [tuple(h) for h in state.history]  # type: ignore[misc]
        self.resumed_epochs = state.epoch
        return state.since_best

    def epoch(self, opt: torch.optim.Optimizer, total_steps: int) -> float:
        """One pass over the training inputs; returns the mean loss."""

        self.model.train()
        stream = self.split.stream
        if stream is not None:
            xe, ye = None, None
        elif self.split.x_train is None:
            # drawn on the CPU generator (the same stream on every device), moved per batch
            xe = synthetic(self.split.inputs, min(SYNTHETIC_TRAIN, self.cap), self.gen)
            ye = None
        else:
            xe, ye = self.split.x_train, self.split.y_train
        n = size(xe) if xe is not None else self.split.n_train
        losses: list[float] = []
        batches = _batches(n, self.config.batch_size, self.gen, self.cap)
        read = stream.epoch(batches) if stream is not None else None
        for idx in batches:
            if read is not None:
                xb, yb = next(read)
                if size(xb) < 2:  # every file of the batch unreadable (BatchNorm needs two)
                    continue
            else:
                assert xe is not None
                xb, yb = take(xe, idx), ye[idx] if ye is not None else None
            xb = to(xb, self.device, non_blocking=True)
            yb = yb.to(self.device, non_blocking=True) if yb is not None else None
            if self.augment:
                xb = augment_training(xb, self.gen, self.split.noise_std, self.images)
            cached = self.teacher_logits[idx] if self.teacher_logits is not None else None
            for group in opt.param_groups:
                factor = lr_factor(self.config.schedule, self.step, total_steps, self.stable_steps)
                group["lr"] = self.config.lr * factor
            opt.zero_grad(set_to_none=True)
            losses.append(self.backward(xb, yb, cached))
            opt.step()
            self.step += 1
        return float(np.mean(losses)) if losses else 0.0

    def backward(self, xb: Batch, yb: torch.Tensor | None, cached: torch.Tensor | None) -> float:
        """The batch's loss and its gradients, in ``chunks`` micro-batches whose losses are
        weighted by their share of the batch (so the gradients add up to the batch's)."""
        import torch

        n = size(xb)
        k = chunks(n, self.micro)
        if k == 1:
            loss = self.loss(xb, yb, cached)
            loss.backward()
            return float(loss.detach())
        total = 0.0
        for part in torch.tensor_split(torch.arange(n, device=self.device), k):
            y = yb[part] if yb is not None else None
            t = cached[part] if cached is not None else None
            loss = self.loss(take(xb, part), y, t) * (len(part) / n)
            loss.backward()
            total += float(loss.detach())
        return total

    def loss(
        self, xb: Batch, yb: torch.Tensor | None, t_out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-entropy on ``yb`` (the teacher's top-1 when None), blended with the
        distillation loss when distilling; ``t_out``: the teacher's logits for ``xb`` when
        already known."""
        import torch
        from torch.nn import functional as F

        config = self.config
        with self.hidden.capture() if self.hidden is not None else nullcontext():
            out = forward(self.model, xb)
            if t_out is None and self.teacher is not None and (config.distill or yb is None):
                with torch.no_grad():
                    t_out = forward(self.teacher, xb)
        if yb is None:
            assert t_out is not None
            yb = t_out.argmax(1)
        ce = F.cross_entropy(out, yb, label_smoothing=config.label_smoothing)
        if config.distill and t_out is not None:
            kd = distillation_loss(out, t_out, config.temperature)
            blended = config.alpha * kd + (1 - config.alpha) * ce
            if self.hidden is not None:
                return blended + HIDDEN_WEIGHT * self.hidden.loss()
            return blended
        return ce
