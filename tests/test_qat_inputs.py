"""Quantization-aware fine-tuning of transformers: the activation x activation MatMuls of
attention (``q @ k.T``, ``probs @ v``) are fake-quantized on both inputs as ORT's static QDQ
quantizes them, and a two-input BERT-class model goes through the QAT stage (calibration,
training and the export-parity peak on token ids and masks) and the quantize stage. Real fx
/ torch.export captures, real training, a real export and real ORT sessions."""

from __future__ import annotations

import dataclasses
import operator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from model_facts import facts as model_facts
from onnx import numpy_helper
from test_fuse import export_bert
from test_torch_inputs import TEXT, tiny_bert, token_task
from torch import fx, nn

from edgeopt import zoo
from edgeopt.measure.session import ort_session
from edgeopt.onnx_export import check_parity
from edgeopt.profiles import load_profile
from edgeopt.stages import STAGES, QatConfig, StageContext
from edgeopt.training import fake_quant
from edgeopt.training.capture import exported

_MATMULS = {torch.matmul, operator.matmul, torch.ops.aten.matmul.default}


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _matmul_inputs_observed(gm: fx.GraphModule) -> list[bool]:
    """For each MatMul of the graph: whether both its inputs come from an observer."""
    mods = dict(gm.named_modules())
    return [
        all(
            isinstance(a, fx.Node)
            and a.op == "call_module"
            and isinstance(mods[a.target], fake_quant.ActFakeQuant)
            for a in n.args[:2]
        )
        for n in gm.graph.nodes
        if n.op == "call_function" and n.target in _MATMULS
    ]


@pytest.mark.parametrize("route", ["fx", "export"])
def test_attention_matmuls_read_both_inputs_fake_quantized(route: str) -> None:
    torch.manual_seed(0)
    vit = zoo.vit_cifar(in_channels=1, width_mult=1 / 6, depth=2, heads=4, qkv="separate")
    model = vit.eval()
    if route == "export":  # the capture of a model torch.fx cannot trace
        model = exported(model, (1, 32, 32))
    gm = fake_quant.prepare_qat(model, input_shape=(1, 32, 32))
    assert _matmul_inputs_observed(gm) == [True] * 4  # 2 per block
    # 19 tensors read by Linear/Conv/Add (what was observed before) + per block both inputs
    # of q @ k.T and of probs @ v: 4 more tensors per block (q, k.T, probs, v)
    assert len(fake_quant.observers(gm)) == 19 + 2 * 4
    x = torch.randn(4, 1, 32, 32)
    fake_quant.calibrate(gm, x.numpy())
    with torch.no_grad():  # ranges set: the fake-quantized model stays near the float one
        err = (gm(x) - vit(x)).abs().max() / vit(x).abs().max()
    assert 0 < err < 0.1


class _Weighted(nn.Module):
    """A MatMul with a parameter (transposed) is a weight product, not an activation one."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.w.t()) + x.sum(-1, keepdim=True)


def test_a_matmul_with_a_weight_observes_nothing_new() -> None:
    gm = fake_quant.prepare_qat(_Weighted().eval())
    assert _matmul_inputs_observed(gm) == [False]
    assert len(fake_quant.observers(gm)) == 2  # the two inputs of the tensor Add only


def _ctx(tmp_path: Path, teacher: nn.Module) -> StageContext:
    return StageContext(
        workdir=tmp_path / "work",
        profile=load_profile("cpu"),
        data=None,
        teacher=teacher,
        input_shape=TEXT.first_shape,
        inputs=TEXT,
        cache_dir=tmp_path / "cache",
    )


def test_qat_of_a_two_input_bert_runs_through_the_stages(tmp_path: Path) -> None:
    teacher = tiny_bert()
    ctx = _ctx(tmp_path, teacher)
    out = STAGES["qat"].apply(teacher, QatConfig(epochs=1, lr=1e-3), ctx)  # data-free
    qat = out.artifact
    result = out.info["train_result"]
    assert result["data_free"] and result["epochs_run"] == 1
    assert len(fake_quant.observers(qat)) == 26  # 18 Linear/Add inputs + 4 per block
    ranges = [(float(o.rmin), float(o.rmax)) for o in fake_quant.observers(qat)]
    assert all(np.isfinite(r).all() and r[0] <= r[1] for r in ranges)
    x, _ = token_task(64, 9)
    args = tuple(torch.from_numpy(v) for v in TEXT.feeds(x).values())
    with torch.no_grad():
        torch_out = qat(*args).numpy()
    fp = export_bert(qat, tmp_path / "qat.onnx")
    # the export check the pipeline runs: within the stage's relative tolerance
    check_parity(qat, fp, x, atol=0.0, rtol=0.0, rel_error=out.export_rel_error, model_inputs=TEXT)

    quantize = STAGES["quantize"]
    hand = quantize.by_hand(load_profile("cpu"), model_facts())
    assert hand is not None
    config = dataclasses.replace(hand.config, static_ops="compute")
    int8_out = quantize.apply(fp, config, ctx)
    assert int8_out.info["learned_ranges"] > 0
    # the attention MatMuls run int8 on both inputs with the ranges QAT learned for them
    g = onnx.load(str(int8_out.artifact)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    made = {o: n for n in g.node for o in n.output}
    learned = {o.qparams() for o in fake_quant.observers(qat)}
    act_inputs = [
        made[made[i].input[0]]  # the QuantizeLinear behind each DequantizeLinear input
        for n in g.node
        if n.op_type == "MatMul" and not inits.keys() & {made[i].input[0] for i in n.input}
        for i in n.input
    ]
    assert len(act_inputs) == 8  # 2 MatMuls x 2 inputs per block
    assert {(float(inits[q.input[1]]), int(inits[q.input[2]])) for q in act_inputs} <= learned
    int8 = ort_session(int8_out.artifact, threads=1).run(None, TEXT.feeds(x))[0]
    # compute-only int8 leaves float the Add/LayerNorm inputs QAT quantized too: the two
    # agree to a few percent (7.5 % here), not to the CNN's few quanta
    assert np.abs(int8 - torch_out).max() <= 0.15 * np.abs(torch_out).max()
