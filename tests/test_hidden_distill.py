"""Hidden-state distillation (``training.hidden``): a depth-pruned tiny ViT's kept blocks
matched to the original's, through ``fit`` and the fine-tune stage's search space."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt import zoo
from edgeopt.data import DataBundle
from edgeopt.errors import ConfigError
from edgeopt.profiles import load_profile
from edgeopt.search.strategy.user_space import _Recorder, declared_params
from edgeopt.stages import ModelFacts, StageContext
from edgeopt.stages.finetune import FinetuneStage
from edgeopt.stages.prune import PruneStage
from edgeopt.stages.prune_config import PruneConfig
from edgeopt.stages.skipped_block import SkippedBlock
from edgeopt.training import TrainConfig, fit
from edgeopt.training.hidden import HiddenTransfer

SHAPE = (1, 16, 16)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return zoo.vit_cifar(in_channels=1, img_size=16, width_mult=1 / 6, depth=4, heads=4).eval()


def _data() -> DataBundle:
    g = np.random.default_rng(0)
    x = g.standard_normal((192, *SHAPE)).astype(np.float32)
    y = (x[:, 0, :8].mean(axis=(1, 2)) > 0).astype(np.int64)  # which half is brighter
    return DataBundle(x[:128], y[:128], x[128:], y[128:])


def _x(n: int = 8) -> torch.Tensor:
    return torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(1))


def _hidden_loss(student: nn.Module, teacher: nn.Module) -> float:
    pairs = HiddenTransfer(student, teacher, _x(1))
    with torch.no_grad(), pairs.capture():
        student(_x())
        teacher(_x())
    return float(pairs.loss())


def _depth_pruned(teacher: nn.Module, tmp_path: Path) -> nn.Module:
    ctx = StageContext(
        workdir=tmp_path, profile=load_profile("cpu"), data=None, teacher=None, input_shape=SHAPE
    )
    return PruneStage().apply(teacher, PruneConfig(depth=1), ctx).artifact


def _second_block_removed(teacher: nn.Module) -> nn.Module:
    """Blocks 2 and 3 then see another input than the teacher's (the prune stage may well
    remove the last block, after which the kept ones match the teacher exactly)."""
    student = copy.deepcopy(teacher)
    student.blocks[1] = SkippedBlock("EncoderBlock")
    return student


def test_kept_blocks_are_paired_and_a_copy_matches_exactly(tmp_path: Path) -> None:
    teacher = _vit()
    assert _hidden_loss(copy.deepcopy(teacher), teacher) == 0.0
    student = _second_block_removed(teacher)
    pairs = HiddenTransfer(student, teacher, _x(1))
    assert pairs.stack == "blocks" and len(pairs.pairs) == 3  # the removed block is not paired
    assert [t for _, t in pairs.pairs] == [teacher.blocks[i] for i in (0, 2, 3)]
    assert _hidden_loss(student, teacher) > 1e-4
    # the prune stage's removal is paired alike
    assert len(HiddenTransfer(_depth_pruned(teacher, tmp_path), teacher, _x(1)).pairs) == 3


def test_hidden_distillation_pulls_the_kept_blocks_to_the_teacher() -> None:
    teacher = _vit()
    data = _data()
    base = {"epochs": 3, "lr": 1e-3, "optimizer": "adamw", "batch_size": 32, "distill": True}
    losses = {}
    for hidden in (False, True):
        student = _second_block_removed(teacher)
        config = TrainConfig(**base, hidden_distill=hidden, augment=False)
        fit(student, data, config, teacher=teacher, seed=0)
        losses[hidden] = _hidden_loss(student, teacher)
    assert losses[True] < 0.8 * losses[False], losses


def test_hidden_distillation_needs_distillation_and_a_block_stack() -> None:
    with pytest.raises(ConfigError, match="needs finetune.distill"):
        TrainConfig(epochs=1, hidden_distill=True)
    cnn = zoo.BUILDERS["resnet_small"](width=8).eval()
    with pytest.raises(ConfigError, match="needs a model with a block stack"):
        HiddenTransfer(copy.deepcopy(cnn), cnn, torch.zeros(1, *SHAPE))


def test_hidden_distill_is_searched_with_kd_on_models_with_a_stack() -> None:
    cpu = load_profile("cpu")
    probe = {"image": True, "blocks": True}
    facts = ModelFacts(onnx_input=False, stages={"prune": {}, "finetune": probe})
    assert "finetune.hidden_distill" in declared_params(cpu, facts)["finetune"]
    no_stack = ModelFacts(onnx_input=False, stages={"prune": {}, "finetune": {"image": True}})
    assert "finetune.hidden_distill" not in declared_params(cpu, no_stack)["finetune"]
    rec = _Recorder({"finetune.distill": True, "finetune.hidden_distill": True})
    config = FinetuneStage().suggest(rec, cpu, facts)
    assert config.hidden_distill and FinetuneStage().describe(config).endswith(" kd+hidden")
    off = FinetuneStage().suggest(_Recorder({"finetune.distill": False}), cpu, facts)
    assert not off.hidden_distill
