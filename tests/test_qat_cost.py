"""The QAT stage's measured cost: its probe times a few fake-quantized training steps at setup,
and the auto trial timeout covers the longest QAT the search draws on top of the longest
fine-tune. On a BERT-class model a QAT epoch cost ~2.4 fine-tune rounds, and "finetune 5ep +
qat 4ep" trials ran into a timeout made of fine-tune rounds only. Real setups (``prepare``)
of the tiny models on the tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from uncapturable import Net

from edgeopt import zoo
from edgeopt.config import RunConfig
from edgeopt.data import NpzSource
from edgeopt.loading import ModelSpec
from edgeopt.rundir import RunDir
from edgeopt.search.run.setup import auto_timeout, prepare, stage_seconds
from edgeopt.stages import STAGES, ProbeInput
from edgeopt.stages.qat import QAT_TIMEOUT_EPOCHS

SHAPE = (1, 16, 16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setup(model: Path, data: Path, run: Path) -> dict:
    config = RunConfig(
        model=ModelSpec(path=str(model)), data=str(data), targets=("mobile",), seed=0
    )
    prepare(config, run)
    return json.loads(RunDir(run).baseline_file.read_text())


def test_setup_measures_a_qat_epoch_and_the_auto_timeout_covers_it(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    baseline = _setup(model_files["bundle_wide"], tiny_data, tmp_path / "run")
    facts = baseline["stage_facts"]
    qat = facts["qat"]
    assert qat["sample_s"] > 0
    assert qat["epoch_samples"] == 200  # a QAT epoch is the whole (tiny) training split
    assert qat["epoch_samples"] == facts["finetune"]["round_samples"]  # a fine-tune round
    assert qat["epoch_s"] == pytest.approx(qat["sample_s"] * 200, abs=1e-3)
    qat_s = STAGES["qat"].trial_seconds(qat)
    assert qat_s is not None and qat_s > 0
    assert qat_s == pytest.approx(QAT_TIMEOUT_EPOCHS * qat["epoch_s"])
    finetune_s = STAGES["finetune"].trial_seconds(facts["finetune"])
    assert finetune_s is not None
    # the timeout's measured part is the longest fine-tune and the longest QAT, added up
    assert stage_seconds(facts) == pytest.approx(finetune_s + qat_s)
    assert baseline["auto_timeout_s"] == auto_timeout(finetune_s + qat_s)


def test_an_onnx_input_has_no_qat_cost(tmp_path: Path, model_files: dict, tiny_data: Path) -> None:
    baseline = _setup(model_files["onnx"], tiny_data, tmp_path / "run")
    assert baseline["stage_facts"]["qat"] == {}
    assert stage_seconds(baseline["stage_facts"]) is None
    assert baseline.get("auto_timeout_s") is None  # none recorded: no measured cost


def test_a_model_qat_cannot_prepare_has_no_qat_cost(tmp_path: Path, tiny_data: Path) -> None:
    """Its QAT draws fail as before (and switch QAT off); setup goes on with the fine-tune's
    cost alone."""
    torch.manual_seed(0)
    model = ProbeInput(
        module=Net().eval(),
        onnx_path=tmp_path / "model.onnx",
        input_shape=SHAPE,
        data=NpzSource(tiny_data),
        threads=1,
    )
    assert STAGES["qat"].probe(model) == {}
    assert STAGES["qat"].trial_seconds({}) is None
    assert STAGES["finetune"].probe(model)["epoch_s"] > 0
    # and a model it can prepare is measured the same way
    model = ProbeInput(
        module=zoo.plain_cnn(in_channels=1, num_classes=10, width=4).eval(),
        onnx_path=tmp_path / "model.onnx",
        input_shape=SHAPE,
        data=None,
        threads=1,
    )
    assert STAGES["qat"].probe(model)["epoch_s"] > 0
