"""The torch phase on a model with two integer inputs (a tiny BERT-class classifier fed
``input_ids`` and ``attention_mask``): training, distillation, evaluation and the fine-tune
probe take structured samples as tuple batches, image augmentation stays off for them; its
heads are pruned end to end and the pruning pre-flight finds them."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt import zoo
from edgeopt.data import DataBundle
from edgeopt.inputs import InputSpec, ModelInputs
from edgeopt.profiles import load_profile
from edgeopt.search.strategy.user_space import _Recorder, declared_params
from edgeopt.stages import ModelFacts, ProbeInput, StageContext
from edgeopt.stages.attention import AttentionPruning
from edgeopt.stages.finetune import FinetuneConfig, FinetuneStage
from edgeopt.stages.finetune_probe import sample_seconds
from edgeopt.stages.prune import PruneStage
from edgeopt.stages.prune_config import Importance, PruneConfig
from edgeopt.stages.prune_preflight import preflight
from edgeopt.training import TrainConfig, evaluate, fit, teacher_logits
from edgeopt.training import batch as B
from edgeopt.training.capture import exported
from edgeopt.training.fake_quant import calibrate, observers, prepare_qat
from edgeopt.training.micro_batch import activation_bytes_per_sample

SEQ, VOCAB, TOKEN = 16, 64, 5
TEXT = ModelInputs(
    (
        InputSpec.of("input_ids", (SEQ,), "int64", vocab_size=VOCAB),
        InputSpec.of("attention_mask", (SEQ,), "int64"),
    )
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def test_fine_tunes_of_token_models_do_not_search_image_augmentation(tmp_path: Path) -> None:
    # finetune.augment was drawn for every model: a dead search dimension on token ids, which
    # the training loop never augments
    stage, cpu = FinetuneStage(), load_profile("cpu")
    onnx = tmp_path / "m.onnx"  # not read: both are torch models
    text = stage.probe(
        ProbeInput(module=tiny_bert(), onnx_path=onnx, input_shape=TEXT.first_shape, inputs=TEXT)
    )
    cnn = zoo.plain_cnn(in_channels=1, num_classes=10, width=4).eval()
    image = stage.probe(ProbeInput(module=cnn, onnx_path=onnx, input_shape=(1, 16, 16)))
    assert (text["image"], image["image"]) == (False, True)
    answers = {"finetune.augment": True}
    for found, asked in ((text, False), (image, True), ({}, True)):  # {}: probed before the fact
        rec = _Recorder(answers)
        config = stage.suggest(rec, cpu, ModelFacts(onnx_input=False, stages={"finetune": found}))
        assert ("finetune.augment" in rec.seen, config.augment) == (asked, asked)
    text_facts = ModelFacts(onnx_input=False, stages={"finetune": text})
    assert "finetune.augment" not in declared_params(cpu, text_facts)["finetune"]
    widest = ModelFacts(onnx_input=False, stages={"finetune": stage.widest_facts})
    assert declared_params(cpu, widest)["finetune"]["finetune.augment"].choices == (True, False)


def _ctx(tmp_path: Path, data: DataBundle | None = None) -> StageContext:
    return StageContext(
        workdir=tmp_path,
        profile=load_profile("cpu"),
        data=data,
        teacher=None,
        input_shape=TEXT.first_shape,
        inputs=TEXT,
    )


@pytest.mark.parametrize("importance", [Importance.L2, Importance.TAYLOR])
def test_heads_of_a_two_input_bert_are_pruned_end_to_end(
    tmp_path: Path, importance: Importance
) -> None:
    model = tiny_bert()
    config = PruneConfig(
        ratio=0.25, attention=AttentionPruning.HEADS, head_ratio=0.5, importance=importance
    )
    out = PruneStage().apply(model, config, _ctx(tmp_path))  # equivalence checked in there
    pruned, report = out.artifact, out.info["prune_report"]
    for block in pruned.blocks:
        a = block.attn
        assert a.query.out_features == a.key.out_features == a.value.out_features == 16
        assert (a.num_attention_heads, a.attention_head_size, a.all_head_size) == (2, 8, 16)
        assert block.fc1.out_features == 48
    assert pruned.tok.embedding_dim == 32  # the residual stream is left whole
    assert report["macs_ratio"] < 0.9
    x = B.tensors(TEXT.synthetic(3, seed=2))
    with torch.no_grad():
        assert tuple(pruned(*x).shape) == (3, 2)


def test_preflight_finds_the_bert_heads() -> None:
    result = preflight(tiny_bert(), TEXT, time_limit_s=120)
    assert result.prunable, result.reason
    att = result.attention
    assert att["sites"] == ["blocks.0.attn", "blocks.1.attn"] and att["pruning"] == "heads"
    assert att["heads"] == {"blocks.0.attn": 4, "blocks.1.attn": 4}


def test_pruned_bert_is_fine_tuned_data_free_by_the_stage(tmp_path: Path) -> None:
    teacher = tiny_bert()
    ctx = dataclasses.replace(_ctx(tmp_path), teacher=teacher)
    pruned = PruneStage().apply(teacher, PruneConfig(ratio=0.25), ctx).artifact
    config = FinetuneConfig(epochs=1, batch_size=32, lr=1e-3, augment=True)
    out = FinetuneStage().apply(pruned, config, ctx)
    result = out.info["train_result"]
    assert result["data_free"] and result["epochs_run"] == 1


def test_two_input_bert_is_captured_by_torch_export_and_calibrated() -> None:
    model = tiny_bert()
    gm = exported(model, TEXT)  # the fallback capture where torch.fx cannot trace
    for seq in (SEQ, 8):  # batch and sequence axes stay dynamic
        x = B.tensors(TEXT.with_seq_len(seq).synthetic(3, seed=4))
        with torch.no_grad():
            assert torch.allclose(gm(*x), model(*x), atol=1e-5)
    qat = prepare_qat(model, input_shape=TEXT)
    calibrate(qat, TEXT.synthetic(8, seed=5))
    ranges = [(float(o.rmin), float(o.rmax)) for o in observers(qat)]
    assert ranges and all(lo <= hi for lo, hi in ranges)
