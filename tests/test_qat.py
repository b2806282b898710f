"""Quantization-aware fine-tuning: a real fx-prepared model, real training, a real export and
real ORT sessions running int8 kernels with the learned ranges."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from model_facts import facts as model_facts
from onnx import numpy_helper

from edgeopt import zoo
from edgeopt.data import DataBundle, NpzSource
from edgeopt.measure.session import ort_session
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import load_profile
from edgeopt.stages import STAGES, QatConfig, StageContext
from edgeopt.training import fake_quant

SHAPE = (1, 16, 16)
# ORT's int8 graph also quantizes the Conv/Gemm outputs (the logits and the residual
# branch before an Add) with calibrated ranges; the torch model does not, so the two agree to
# a few output quanta, not bit for bit
TOLERANCE = 0.05  # max |ORT int8 - torch fake-quant| / (max |torch output|)


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _data(seed: int = 0) -> DataBundle:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((384, *SHAPE)).astype(np.float32)
    y = (x[:, 0, :8].mean(axis=(1, 2)) > 0).astype(np.int64)  # learnable: a bright top half
    return DataBundle(x[:256], y[:256], x[256:], y[256:])


def _ctx(
    tmp_path: Path, model: torch.nn.Module, data: DataBundle | None, target: str = "cpu"
) -> StageContext:
    return StageContext(
        workdir=tmp_path / "work",
        profile=load_profile(target),
        data=None if data is None else NpzSource(tmp_path / "in-memory.npz", data),
        teacher=model,
        input_shape=SHAPE,
        cache_dir=tmp_path / "cache",
    )


def _kernels(path: Path, tmp_path: Path) -> Counter[str]:
    opt = tmp_path / "ort_optimized.onnx"
    ort_session(path, threads=1, optimized_model_path=opt)
    return Counter(n.op_type for n in onnx.load(str(opt)).graph.node)


def test_prepare_folds_batchnorm_and_shares_one_range_per_tensor() -> None:
    torch.manual_seed(0)
    model = zoo.BUILDERS["resnet_small"](width=8).eval()
    gm = fake_quant.prepare_qat(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gm.modules())
    weighted = [m for m in gm.modules() if isinstance(m, fake_quant.QuantWeight)]
    assert len(weighted) == 16  # 15 Conv + 1 Linear
    # 27 tensors are read by Conv/Linear/pool/Add; each has exactly one observer
    assert len(fake_quant.observers(gm)) == 27
    x = np.random.default_rng(0).standard_normal((16, *SHAPE)).astype(np.float32)
    fake_quant.calibrate(gm, x)
    first = fake_quant.observers(gm)[0]  # the graph input: its range is the data's
    assert float(first.rmin) == pytest.approx(float(x.min()))
    assert float(first.rmax) == pytest.approx(float(x.max()))


def test_scale_zero_point_match_ort() -> None:
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    for lo, hi in [(-1.3, 2.7), (0.0, 5.0), (0.2, 0.9), (-4.0, -1.0)]:
        zp, scale = compute_scale_zp(
            np.array(lo, np.float32), np.array(hi, np.float32), np.uint8(0), np.uint8(255)
        )
        ours = fake_quant.scale_zero_point(np.float32(lo), np.float32(hi), signed=False)
        assert ours == (float(scale), int(zp))


def test_symmetric_scale_zero_point_match_ort() -> None:
    # ORT's ActivationSymmetric (a TensorRT target's activations): what QAT must learn
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    for signed, qtype in [(True, onnx.TensorProto.INT8), (False, onnx.TensorProto.UINT8)]:
        qmin, qmax = get_qmin_qmax_for_qType(qtype, symmetric=True)
        for lo, hi in [(-1.3, 2.7), (0.0, 5.0), (0.2, 0.9), (-4.0, -1.0)]:
            zp, scale = compute_scale_zp(
                np.array(lo, np.float32), np.array(hi, np.float32), qmin, qmax, symmetric=True
            )
            ours = fake_quant.scale_zero_point(np.float32(lo), np.float32(hi), signed, True)
            assert ours == (float(scale), int(zp)), (signed, lo, hi)


def test_qat_model_runs_int8_in_ort_with_its_learned_ranges(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.BUILDERS["plain_cnn"](width=8).eval()
    data = _data()
    ctx = _ctx(tmp_path, model, data)
    out = STAGES["qat"].apply(model, QatConfig(epochs=1, lr=1e-3), ctx)
    qat, rel_error = out.artifact, out.export_rel_error
    assert "history" in out.info["train_result"]
    fp = export_onnx(
        qat, SHAPE, tmp_path / "qat.onnx", check_inputs=data.x_val[:8], rel_error=rel_error
    )
    quantize = STAGES["quantize"]
    config = quantize.by_hand(load_profile("cpu"), model_facts()).config  # type: ignore[union-attr]
    int8_out = quantize.apply(fp, config, ctx)
    int8 = int8_out.artifact

    kernels = _kernels(int8, tmp_path)
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert kernels["QLinearConv"] == n_conv and kernels["Conv"] == 0

    # every learned activation range is the one ORT quantizes that tensor with
    learned = {o.qparams() for o in fake_quant.observers(qat)}
    g = onnx.load(str(int8)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    used = {
        (float(inits[n.input[1]]), int(inits[n.input[2]]))
        for n in g.node
        if n.op_type == "QuantizeLinear" and inits[n.input[1]].size == 1
    }
    assert learned <= used
    assert int8_out.info["learned_ranges"] == len(learned)

    x = data.x_val[:64]
    torch_out = qat(torch.from_numpy(x)).detach().numpy()
    ort_out = ort_session(int8, threads=1).run(None, {"input": x})[0]
    err = np.abs(ort_out - torch_out).max() / np.abs(torch_out).max()
    assert err < TOLERANCE
    assert (ort_out.argmax(1) == torch_out.argmax(1)).mean() >= 0.95


def test_qat_learns_symmetric_ranges_for_a_tensorrt_target(tmp_path: Path) -> None:
    # jetson: s8 activations with zero point 0, in training and in the int8 file ORT writes
    torch.manual_seed(0)
    model = zoo.BUILDERS["plain_cnn"](width=4).eval()
    data = _data()
    ctx = _ctx(tmp_path, model, data, "jetson")
    qat = STAGES["qat"].apply(model, QatConfig(epochs=1, lr=1e-3), ctx).artifact
    learned = {o.qparams() for o in fake_quant.observers(qat)}
    assert learned and {zp for _, zp in learned} == {0}
    fp = export_onnx(qat, SHAPE, tmp_path / "qat.onnx")
    quantize = STAGES["quantize"]
    config = quantize.by_hand(load_profile("jetson"), model_facts()).config  # type: ignore[union-attr]
    int8 = quantize.apply(fp, config, ctx).artifact
    g = onnx.load(str(int8)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    zps = [inits[n.input[2]] for n in g.node if n.op_type == "QuantizeLinear"]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)


def test_qat_data_free_needs_and_uses_the_teacher(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.BUILDERS["plain_cnn"](width=4).eval()
    result = STAGES["qat"].apply(model, QatConfig(epochs=1, lr=1e-3), _ctx(tmp_path, model, None))
    out = result.artifact
    assert result.info["train_result"]["data_free"] is True
    assert all(m.snapped for m in out.modules() if isinstance(m, fake_quant.QuantWeight))


def test_qat_space_is_conditional_and_identity_params_draw_nothing() -> None:
    from edgeopt.search.strategy.space import DefaultSuggester

    stage = STAGES["qat"]
    cpu = load_profile("cpu")
    assert stage.identity_params(cpu) == {"qat.epochs": 0}
    rec = DefaultSuggester({"qat.epochs": 0})
    assert stage.is_identity(stage.suggest(rec, cpu, None))  # type: ignore[arg-type]
    assert set(rec.params) == {"qat.epochs"}
    rec = DefaultSuggester({"qat.epochs": 2})
    config = stage.suggest(rec, cpu, None)  # type: ignore[arg-type]
    assert config.epochs == 2 and set(rec.params) == {"qat.epochs", "qat.lr", "qat.distill"}


def test_qat_candidate_labelled_fp32_is_a_float_model(tmp_path: Path) -> None:
    """A QAT torch phase followed by the identity quantize step (fp32) must not ship its
    fake-quant pairs, which ORT would run as int8 under an fp32 label."""
    from edgeopt.candidate import Candidate, Step
    from edgeopt.loading.spec import LoadedModel, ModelFormat
    from edgeopt.pipeline import PipelineInputs, build

    torch.manual_seed(0)
    model = zoo.BUILDERS["plain_cnn"](width=8).eval()
    profile = load_profile("cpu")
    stages = {name: stage.identity(profile) for name, stage in STAGES.items()}
    stages["qat"] = QatConfig(epochs=1, lr=1e-3)
    candidate = Candidate(tuple(Step(n, c) for n, c in stages.items() if not STAGES[n].requires))
    inputs = PipelineInputs(
        model=LoadedModel(tmp_path / "m.pt", ModelFormat.BUNDLE, SHAPE, module=model),
        data=NpzSource(tmp_path / "in-memory.npz", _data()),
        profile=profile,
        seed=0,
        cache_dir=tmp_path / "cache",
        salt="qat-fp32",
    )
    result = build(candidate, inputs, tmp_path / "trial")
    assert candidate.describe().endswith("fp32")
    nodes = Counter(n.op_type for n in onnx.load(str(result.onnx_path)).graph.node)
    assert nodes["QuantizeLinear"] == 0 and nodes["DequantizeLinear"] == 0
    kernels = _kernels(result.onnx_path, tmp_path)
    assert kernels["QLinearConv"] == 0 and kernels["Conv"] + kernels["FusedConv"] > 0


class _Shuffle(torch.nn.Module):
    """A ShuffleNetV2 unit as public CIFAR code writes it: the split and the channel shuffle
    read sizes as Python ints, which ``torch.fx`` cannot trace (``int(Proxy)``)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        half = width // 2
        self.stem = torch.nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(width)
        self.branch = torch.nn.Conv2d(half, half, 3, padding=1, groups=half)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        c = int(x.size(1) * 0.5)
        x = torch.cat([x[:, :c], x[:, c:] + self.branch(x[:, c:])], 1)
        b, c, h, w = x.size()
        x = x.view(b, 2, c // 2, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)
        return self.fc(self.pool(x).flatten(1))


def test_qat_captures_with_torch_export_where_fx_cannot_trace(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Shuffle(8).eval()
    with pytest.raises(TypeError, match="Proxy"):
        torch.fx.symbolic_trace(model)
    data = _data()
    ctx = _ctx(tmp_path, model, data)
    out = STAGES["qat"].apply(model, QatConfig(epochs=1, lr=1e-3), ctx)
    qat = out.artifact
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in qat.modules())
    weighted = [m for m in qat.modules() if isinstance(m, fake_quant.QuantWeight)]
    assert len(weighted) == 3  # 2 Conv + 1 Linear
    fp = export_onnx(
        qat,
        SHAPE,
        tmp_path / "qat.onnx",
        check_inputs=data.x_val[:8],
        rel_error=out.export_rel_error,
    )
    quantize = STAGES["quantize"]
    config = quantize.by_hand(load_profile("cpu"), model_facts()).config  # type: ignore[union-attr]
    int8 = quantize.apply(fp, config, ctx).artifact
    assert _kernels(int8, tmp_path)["QLinearConv"] == 2
    # any batch size: the export follows the sizes the forward reads
    session = ort_session(int8, threads=1)
    for n in (1, 64):
        x = data.x_val[:n]
        torch_out = qat(torch.from_numpy(x)).detach().numpy()
        ort_out = session.run(None, {"input": x})[0]
        assert ort_out.shape == (n, 2)
        assert np.abs(ort_out - torch_out).max() / np.abs(torch_out).max() < TOLERANCE


class _Annotated(torch.nn.Module):
    """A forward annotated as in most model code; this module's ``from __future__ import
    annotations`` makes the annotation the string "torch.Tensor"."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_a_qat_model_of_annotated_code_survives_torch_save(tmp_path: Path) -> None:
    # a LiteRT target's converter process gets the QAT model as torch.save bytes: fx named the
    # string annotation as a global it could not pickle, and every QAT trial of a pruned
    # MobileNetV2 failed its LiteRT conversion
    torch.manual_seed(0)
    model = fake_quant.prepare_qat(_Annotated().eval(), input_shape=SHAPE)
    x = torch.from_numpy(_data().x_train[:16])
    fake_quant.calibrate(model, x.numpy())
    fake_quant.finalize(model)
    plain = fake_quant.float_copy(model.eval())
    for name, m in (("qat", model), ("float", plain)):
        torch.save(m, tmp_path / f"{name}.pt")
        back = torch.load(tmp_path / f"{name}.pt", weights_only=False).eval()
        with torch.no_grad():
            assert torch.equal(back(x), m(x)), name
