"""The torch phase on a model with two integer inputs (a tiny BERT-class classifier fed
``input_ids`` and ``attention_mask``): training, distillation, evaluation and the fine-tune
probe take structured samples as tuple batches, image augmentation stays off for them."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt import zoo
from edgeopt.data import DataBundle
from edgeopt.inputs import InputSpec, ModelInputs
from edgeopt.stages.finetune_probe import sample_seconds
from edgeopt.training import TrainConfig, evaluate, fit, teacher_logits
from edgeopt.training import batch as B
from edgeopt.training.micro_batch import activation_bytes_per_sample

SEQ, VOCAB, TOKEN = 16, 64, 5
TEXT = ModelInputs(
    (
        InputSpec.of("input_ids", (SEQ,), "int64", vocab_size=VOCAB),
        InputSpec.of("attention_mask", (SEQ,), "int64"),
    )
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_bert(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return zoo.bert_text(
        vocab_size=VOCAB, max_len=SEQ, hidden=32, depth=2, heads=4, intermediate=64
    ).eval()


def token_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Label 1 when token ``TOKEN`` appears in the unmasked part; a label-0 sample may hold it
    in the padding, where only the mask says it does not count."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n, dtype=TEXT.record_dtype())
    y = rng.integers(0, 2, n).astype(np.int64)
    for i in range(n):
        length = int(rng.integers(4, SEQ + 1))
        ids = rng.integers(6, VOCAB, SEQ)
        ids[0] = 1
        if y[i]:
            ids[int(rng.integers(1, length))] = TOKEN
        elif length < SEQ and rng.random() < 0.5:
            ids[int(rng.integers(length, SEQ))] = TOKEN
        x[i]["input_ids"] = ids
        x[i]["attention_mask"][:length] = 1
    return x, y


def text_data() -> DataBundle:
    x, y = token_task(768, 0)
    xv, yv = token_task(256, 1)
    return DataBundle(x, y, xv, yv)


def test_fit_learns_a_two_input_task_with_tuple_batches() -> None:
    model, data = tiny_bert(), text_data()
    # augment=True: image augmentation must not touch token ids
    cfg = TrainConfig(lr=1e-2, epochs=6, batch_size=32, augment=True, schedule="constant")
    result = fit(model, data, cfg, seed=0)
    assert result.initial_val_accuracy < 0.65
    assert result.best_val_accuracy > 0.9, result.history
    assert evaluate(model, data.x_val, data.y_val) == pytest.approx(result.best_val_accuracy)


def test_micro_batches_split_tuple_batches_into_the_same_update() -> None:
    data = text_data()
    cfg = TrainConfig(lr=1e-3, epochs=1, batch_size=32, augment=False, schedule="constant")
    whole, parts = tiny_bert(), tiny_bert()
    fit(whole, data, cfg, seed=3)
    per_sample = activation_bytes_per_sample(parts, TEXT)
    assert per_sample > 0
    fit(parts, data, cfg, seed=3, activation_budget_bytes=per_sample * 8)
    for a, b in zip(whole.state_dict().values(), parts.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_distillation_and_data_free_fit_on_two_inputs() -> None:
    data = text_data()
    teacher = tiny_bert()
    cfg = TrainConfig(lr=1e-2, epochs=4, batch_size=32, augment=False, schedule="constant")
    fit(teacher, data, cfg, seed=0)
    xv = B.tensors(data.x_val)
    logits = teacher_logits(teacher, xv)
    assert logits.shape == (len(data.x_val), 2)
    other = copy.deepcopy(data.x_val)
    other["attention_mask"][:, 1:] = 0  # same ids, other mask: other logits, not the cached
    assert not torch.equal(teacher_logits(teacher, B.tensors(other)), logits)
    kd = TrainConfig(lr=1e-2, epochs=2, batch_size=32, augment=False, distill=True)
    student = tiny_bert(seed=1)
    assert fit(student, data, kd, teacher=teacher, seed=0).best_val_accuracy > 0.5
    free = fit(tiny_bert(seed=1), None, kd, teacher=teacher, seed=0, input_shape=TEXT)
    assert free.data_free and free.epochs_run == 2


def test_fine_tune_probe_times_two_input_steps() -> None:
    assert sample_seconds(tiny_bert(), TEXT, None, threads=1) > 0

