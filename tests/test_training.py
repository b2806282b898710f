"""The training loop and the fine-tune stage, on the digits data (real training, tiny models)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt import zoo
from edgeopt.data import DataBundle, load_npz
from edgeopt.errors import CandidateError, ConfigError
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import load_profile
from edgeopt.stages import STAGES, FinetuneConfig, PruneConfig, StageContext, StageOutput
from edgeopt.training import (
    Schedule,
    TrainConfig,
    augment_batch,
    distillation_loss,
    evaluate,
    evaluate_onnx,
    fit,
)
from edgeopt.training.loop import lr_factor
from edgeopt.training.resume import stable_epochs

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits.npz"
SHAPE = (1, 16, 16)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: small convs gain nothing from two, and a busy box makes two slow."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> DataBundle:
    if DIGITS.exists():
        return load_npz(DIGITS)
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images / 16.0, np.ones((2, 2)))[:, None].astype(np.float32)
    y = d.target.astype(np.int64)
    return DataBundle(x[:1200], y[:1200], x[1200:], y[1200:])


@pytest.fixture(scope="module")
def teacher(data: DataBundle) -> nn.Module:
    torch.manual_seed(0)
    m = zoo.plain_cnn(width=16)
    fit(m, data, TrainConfig(epochs=6, lr=0.05), seed=0)
    return m


def _ctx(tmp_path: Path, data: DataBundle | None, teacher: nn.Module | None) -> StageContext:
    return StageContext(
        workdir=tmp_path,
        profile=load_profile("cpu"),
        data=data,
        teacher=teacher,
        input_shape=SHAPE,
    )


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_teacher_learns(teacher: nn.Module, data: DataBundle) -> None:
    assert evaluate(teacher, data.x_val, data.y_val) > 0.9


@pytest.mark.parametrize("distill", [False, True])
def test_prune_then_finetune_recovers(
    tmp_path: Path, teacher: nn.Module, data: DataBundle, distill: bool
) -> None:
    ctx = _ctx(tmp_path, data, teacher)
    before = _state(teacher)
    pruned = STAGES["prune"].apply(teacher, PruneConfig(ratio=0.5, round_to=8), ctx).artifact
    pruned_acc = evaluate(pruned, data.x_val, data.y_val)
    cfg = FinetuneConfig(epochs=5, lr=0.02, distill=distill, temperature=2.0, alpha=0.5)
    out = STAGES["finetune"].apply(pruned, cfg, ctx)
    tuned = out.artifact
    acc = evaluate(tuned, data.x_val, data.y_val)
    teacher_acc = evaluate(teacher, data.x_val, data.y_val)
    assert pruned_acc < 0.5  # structured pruning without fine-tuning collapses
    assert acc > teacher_acc - 0.06, (pruned_acc, acc, teacher_acc)
    result = out.info["train_result"]
    assert result["best_val_accuracy"] == pytest.approx(acc)
    assert result["epochs_run"] == 5 and len(result["history"]) == 5
    assert evaluate(pruned, data.x_val, data.y_val) == pruned_acc  # input not trained
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


class Permuted(nn.Module):
    """The teacher with its outputs relabelled: class c is reported as class (c+1) % 10."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("perm", torch.tensor([(c - 1) % 10 for c in range(10)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[:, self.perm]


def test_distillation_follows_teacher_logits_not_labels(
    teacher: nn.Module, data: DataBundle
) -> None:
    odd = Permuted(teacher).eval()
    with torch.no_grad():
        odd_pred = odd(torch.from_numpy(data.x_val)).argmax(1).numpy()
    assert (odd_pred == (data.y_val + 1) % 10).mean() > 0.9
    # training labels are the true ones; validation is scored against the teacher's mapping,
    # so the kept (best-validation) weights show which of the two the student learned
    bundle = DataBundle(data.x_train, data.y_train, data.x_val, odd_pred)
    torch.manual_seed(1)
    student = zoo.plain_cnn(width=8)
    cfg = TrainConfig(epochs=6, lr=0.05, distill=True, alpha=1.0, temperature=2.0)
    result = fit(student, bundle, cfg, teacher=odd, seed=0)
    assert result.best_val_accuracy > 0.7
    assert evaluate(student, data.x_train, data.y_train) < 0.3
    # the same run on labels only (no distillation) learns the labels instead
    torch.manual_seed(1)
    plain = zoo.plain_cnn(width=8)
    control = fit(plain, bundle, TrainConfig(epochs=6, lr=0.05), seed=0)
    assert control.best_val_accuracy < 0.3


def test_data_free_distillation(teacher: nn.Module) -> None:
    torch.manual_seed(3)
    student = zoo.plain_cnn(width=8)
    seen: list[tuple[int, float]] = []
    result = fit(
        student,
        None,
        TrainConfig(epochs=3, lr=0.05, distill=True, alpha=0.9),
        teacher=teacher,
        seed=0,
        on_epoch=lambda e, a: seen.append((e, a)),
        input_shape=SHAPE,
    )
    assert result.data_free and [e for e, _ in seen] == [1, 2, 3]
    assert result.best_val_accuracy > result.initial_val_accuracy + 0.2
    with pytest.raises(ConfigError):
        fit(zoo.plain_cnn(width=8), None, TrainConfig(epochs=1), seed=0)


def test_deterministic_under_seed(data: DataBundle) -> None:
    small = DataBundle(data.x_train[:256], data.y_train[:256], data.x_val[:64], data.y_val[:64])
    states = []
    for seed in (0, 0, 1):
        torch.manual_seed(123)
        m = zoo.resnet_small(width=8)
        fit(m, small, TrainConfig(epochs=2, lr=0.05, batch_size=32), seed=seed)
        states.append(_state(m))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_on_epoch_can_abort_and_patience_stops(data: DataBundle) -> None:
    small = DataBundle(data.x_train[:128], data.y_train[:128], data.x_val[:64], data.y_val[:64])

    class Hopeless(Exception):
        pass

    def abort(epoch: int, acc: float) -> None:
        if epoch == 2:
            raise Hopeless

    with pytest.raises(Hopeless):
        fit(zoo.plain_cnn(width=8), small, TrainConfig(epochs=5, lr=0.01), on_epoch=abort)

    r = fit(zoo.plain_cnn(width=8), small, TrainConfig(epochs=6, lr=1e-9, patience=2))
    assert r.stopped_early and r.epochs_run == 2 and r.best_epoch == 0


def test_optimizers_and_schedules(data: DataBundle) -> None:
    small = DataBundle(data.x_train[:96], data.y_train[:96], data.x_val[:32], data.y_val[:32])
    for opt in ("sgd", "adamw"):
        for sched in ("constant", "step", "cosine"):
            m = zoo.plain_cnn(width=8)
            r = fit(
                m,
                small,
                TrainConfig(
                    epochs=1,
                    lr=1e-3,
                    optimizer=opt,
                    schedule=sched,
                    label_smoothing=0.1,
                    batch_size=32,
                ),
            )
            assert r.epochs_run == 1 and np.isfinite(r.history[0][1])
    assert lr_factor(Schedule.STEP, 60, 100) == 0.1
    assert lr_factor(Schedule.COSINE, 50, 100) == pytest.approx(0.5)
    assert lr_factor(Schedule.CONSTANT, 99, 100) == 1.0


def test_kd_loss_and_augment() -> None:
    s = torch.tensor([[2.0, 0.0, -1.0]])
    assert float(distillation_loss(s, s.clone(), 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(s, -s, 4.0)) > 0
    x = torch.zeros(8, 1, 16, 16)
    x[:, 0, 8, 8] = 1.0
    out = augment_batch(x, torch.Generator().manual_seed(0), noise_std=0.0)
    for img in out:
        r, c = divmod(int(img.argmax()), 16)
        assert abs(r - 8) <= 2 and abs(c - 8) <= 2 and float(img.sum()) == 1.0
    flat = torch.zeros(4, 10)
    assert augment_batch(flat, torch.Generator(), 0.1) is flat  # not image-like: unchanged


def test_finetune_stage_contract(tmp_path: Path, teacher: nn.Module, data: DataBundle) -> None:
    stage = STAGES["finetune"]
    base = stage.identity(load_profile("cpu"))
    assert stage.is_identity(base)
    m = copy.deepcopy(teacher)
    assert stage.apply(m, base, _ctx(tmp_path, data, None)).artifact is not m
    with pytest.raises(CandidateError) as info:
        stage.apply(m, FinetuneConfig(epochs=1, distill=True), _ctx(tmp_path, data, None))
    assert info.value.stage == "finetune"


def test_evaluate_onnx_matches_torch(tmp_path: Path, teacher: nn.Module, data: DataBundle) -> None:
    path = export_onnx(teacher, SHAPE, tmp_path / "t.onnx")
    acc_t = evaluate(teacher, data.x_val, data.y_val)
    assert evaluate_onnx(path, data.x_val, data.y_val, threads=1) == pytest.approx(acc_t)


@pytest.mark.parametrize(
    "kw",
    [
        {"lr": 0.0},
        {"lr": True},
        {"epochs": -1},
        {"epochs": 2.5},
        {"batch_size": 0},
        {"optimizer": "adam"},
        {"schedule": "linear"},
        {"weight_decay": -1e-4},
        {"label_smoothing": 1.0},
        {"patience": -1},
        {"augment": "no"},
        {"temperature": 0.0},
        {"alpha": 1.5},
    ],
)
def test_invalid_config(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        TrainConfig(**kw)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        FinetuneConfig(**kw)  # type: ignore[arg-type]


def test_teacher_logits_are_computed_once_without_augmentation(
    teacher: nn.Module, data: DataBundle
) -> None:
    """Without augmentation every epoch shows the teacher the same inputs: it runs once over
    the training split, and the student still learns the teacher's mapping from the cache."""
    odd = Permuted(teacher).eval()
    with torch.no_grad():
        odd_pred = odd(torch.from_numpy(data.x_val)).argmax(1).numpy()
    bundle = DataBundle(data.x_train, data.y_train, data.x_val, odd_pred)
    seen: list[int] = []
    hook = odd.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    try:
        for augment in (False, True):
            seen.clear()
            torch.manual_seed(1)
            student = zoo.plain_cnn(width=8)
            cfg = TrainConfig(
                epochs=3, lr=0.05, distill=True, alpha=1.0, temperature=2.0, augment=augment
            )
            result = fit(student, bundle, cfg, teacher=odd, seed=0)
            if not augment:
                assert sum(seen) == len(data.x_train)  # one pass, not one per epoch
                assert result.best_val_accuracy > 0.7  # learnt from the cached logits
            else:
                assert sum(seen) >= 2 * len(data.x_train)  # new inputs each epoch
    finally:
        hook.remove()


def test_wsd_schedule_decays_only_at_the_end() -> None:
    assert lr_factor(Schedule.WSD, 74, 100, 75) == 1.0
    assert lr_factor(Schedule.WSD, 90, 100, 80) == pytest.approx(0.5)
    assert lr_factor(Schedule.WSD, 99, 100, 80) == pytest.approx(0.05)
    cfg = {e: TrainConfig(epochs=e, schedule="wsd") for e in (1, 2, 3, 4, 8)}
    assert [stable_epochs(c) for c in cfg.values()] == [0, 1, 2, 3, 6]
    assert stable_epochs(TrainConfig(epochs=5, schedule="constant")) == 5
    assert stable_epochs(TrainConfig(epochs=5, schedule="cosine")) == 0


def test_longer_finetune_continues_exactly_from_a_shorter_ones_checkpoint(
    tmp_path: Path, teacher: nn.Module, data: DataBundle
) -> None:
    """A 4-epoch wsd fine-tune that starts from a 3-epoch one's checkpoint (its first 2
    epochs) ends with the weights, history and callbacks of a 4-epoch run from scratch,
    augmentation and distillation included; the shorter run's own result is unaffected."""
    ctx = _ctx(tmp_path, data, teacher)
    pruned = STAGES["prune"].apply(teacher, PruneConfig(ratio=0.5, round_to=8), ctx).artifact
    kw = dict(lr=0.02, schedule="wsd", distill=True, augment=True, batch_size=64)

    def run(
        epochs: int, cache: Path | None
    ) -> tuple[StageOutput[nn.Module], list[tuple[int, float]]]:
        seen: list[tuple[int, float]] = []
        c = _ctx(tmp_path, data, teacher)
        c = StageContext(
            **{**c.__dict__, "cache_dir": cache, "on_epoch": lambda e, a: seen.append((e, a))}
        )
        return STAGES["finetune"].apply(pruned, FinetuneConfig(epochs=epochs, **kw), c), seen

    scratch, scratch_seen = run(4, None)
    short, _ = run(3, tmp_path / "cache")
    assert short.info["train_result"]["resumed_epochs"] == 0
    assert len(list((tmp_path / "cache").rglob("epoch-2.pt"))) == 1
    cont, cont_seen = run(4, tmp_path / "cache")
    result = cont.info["train_result"]
    assert result["resumed_epochs"] == 2 and result["epochs_run"] == 4
    assert cont_seen == scratch_seen
    for k, v in scratch.artifact.state_dict().items():
        torch.testing.assert_close(cont.artifact.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    assert [h[2] for h in result["history"]] == [
        h[2] for h in scratch.info["train_result"]["history"]
    ]
    # other settings (a cosine schedule, another lr) never continue from it
    other = StageContext(
        **{**_ctx(tmp_path, data, teacher).__dict__, "cache_dir": tmp_path / "cache"}
    )
    for change in ({"schedule": "cosine"}, {"lr": 0.03}):
        cfg = FinetuneConfig(epochs=4, **{**kw, **change})
        tuned = STAGES["finetune"].apply(pruned, cfg, other)
        assert tuned.info["train_result"]["resumed_epochs"] == 0


def test_teacher_logits_are_remembered_across_fine_tunes(
    teacher: nn.Module, data: DataBundle
) -> None:
    """A second fine-tune from the same teacher on the same un-augmented inputs runs the
    teacher not at all (a persistent trial child distils many candidates)."""
    twin = copy.deepcopy(teacher).eval()
    twin.fc_extra = nn.Identity()  # type: ignore[attr-defined]  # a different object, same weights
    seen: list[int] = []
    hook = twin.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    try:
        cfg = TrainConfig(epochs=2, lr=0.02, distill=True, augment=False)
        fit(zoo.plain_cnn(width=8), data, cfg, teacher=twin, seed=0)
        first = sum(seen)
        fit(zoo.plain_cnn(width=8), data, cfg, teacher=copy.deepcopy(twin), seed=1)
        assert first == len(data.x_train) and sum(seen) == first
    finally:
        hook.remove()
