"""Depth pruning (``stages.prune_depth``): whole blocks of a transformer's block stack removed,
the least damaging first, through the prune stage, into ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from edgeopt import zoo
from edgeopt.errors import CandidateError, ConfigError
from edgeopt.inputs import InputSpec, ModelInputs
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import load_profile
from edgeopt.search.strategy.user_space import _Recorder, declared_params
from edgeopt.stages import ModelFacts, ProbeInput, StageContext
from edgeopt.stages.attention import AttentionPruning
from edgeopt.stages.prune import PruneStage
from edgeopt.stages.prune_config import PruneConfig
from edgeopt.stages.prune_depth import rank_blocks
from edgeopt.stages.skipped_block import SkippedBlock
from edgeopt.training.blocks import find_block_stack
from edgeopt.zoo_transformers import bert_text

SHAPE = (1, 32, 32)
SEQ, VOCAB = 12, 50
TEXT = ModelInputs(
    (
        InputSpec.of("input_ids", (SEQ,), "int64", vocab_size=VOCAB),
        InputSpec.of("attention_mask", (SEQ,), "int64"),
    )
)


def _vit(depth: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return zoo.vit_cifar(in_channels=1, width_mult=1 / 6, depth=depth, heads=4).eval()


def _ctx(tmp_path: Path, inputs: ModelInputs | None = None) -> StageContext:
    return StageContext(
        workdir=tmp_path,
        profile=load_profile("cpu"),
        data=None,
        teacher=None,
        input_shape=SHAPE,
        inputs=inputs,
    )


def _x(n: int = 4) -> Tensor:
    return torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(1))


def _assert_ort_matches_torch(path: Path, model: nn.Module, x: np.ndarray) -> None:
    """The exported ``path`` run in ONNX Runtime gives ``model``'s outputs on ``x``."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), atol=1e-4)


def _make_identity(block: nn.Module) -> None:
    """Zero what a pre-LN block adds to the residual stream: it then returns its input."""
    with torch.no_grad():
        for layer in (block.attn.proj, block.fc2):
            layer.weight.zero_()
            layer.bias.zero_()


def test_the_stack_is_found_by_a_forward_and_a_cnn_has_none() -> None:
    stack = find_block_stack(_vit(4), _x(1))
    assert stack is not None and (stack.name, stack.count) == ("blocks", 4)
    # two blocks are not a depth to prune
    assert find_block_stack(_vit(2), _x(1)) is None
    cnn = zoo.BUILDERS["resnet_small"](width=8).eval()
    assert find_block_stack(cnn, torch.zeros(1, 1, 16, 16)) is None


def test_the_least_damaging_block_goes_and_the_output_is_unchanged(tmp_path: Path) -> None:
    model = _vit(4)
    _make_identity(model.blocks[2])
    stack = find_block_stack(model, _x(1))
    assert stack is not None
    damage = rank_blocks(model, stack, _x())
    assert damage[2] == pytest.approx(0.0, abs=1e-9) and min(damage[:2] + damage[3:]) > 1e-6
    out = PruneStage().apply(model, PruneConfig(depth=1), _ctx(tmp_path))
    pruned, report = out.artifact, out.info["prune_report"]
    assert isinstance(pruned.blocks[2], SkippedBlock)
    assert not isinstance(model.blocks[2], SkippedBlock)  # a copy was pruned
    assert report["depth"]["removed"] == [2] and report["depth"]["blocks"] == 4
    assert report["params_ratio"] < 0.9 and report["macs_ratio"] < 0.85
    with torch.no_grad():
        torch.testing.assert_close(pruned(_x()), model(_x()), rtol=1e-5, atol=1e-6)


def test_depth_and_heads_together_export_with_fewer_blocks(tmp_path: Path) -> None:
    model = _vit(4)
    config = PruneConfig(ratio=0.5, attention=AttentionPruning.HEADS, head_ratio=0.5, depth=2)
    pruned = PruneStage().apply(model, config, _ctx(tmp_path)).artifact
    kept = [b for b in pruned.blocks if not isinstance(b, SkippedBlock)]
    assert len(kept) == 2 and all(b.attn.num_heads == 2 for b in kept)
    x = _x().numpy()
    path = export_onnx(pruned, SHAPE, tmp_path / "pruned.onnx", check_inputs=x)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    full = export_onnx(model, SHAPE, tmp_path / "full.onnx", check_inputs=x)
    assert ops.count("Softmax") == 2
    assert [n.op_type for n in onnx.load(str(full)).graph.node].count("Softmax") == 4
    _assert_ort_matches_torch(path, pruned, x)


def test_a_bert_block_that_takes_the_mask_is_skipped_too(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = bert_text(vocab_size=VOCAB, max_len=SEQ, hidden=32, depth=3, heads=2, intermediate=64)
    pruned = PruneStage().apply(model.eval(), PruneConfig(depth=1), _ctx(tmp_path, TEXT)).artifact
    assert sum(isinstance(b, SkippedBlock) for b in pruned.blocks) == 1
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert pruned(ids, torch.ones_like(ids)).shape == (2, 2)


def test_depth_that_cannot_be_removed_fails_the_candidate(tmp_path: Path) -> None:
    with pytest.raises(CandidateError, match="removes every block of blocks"):
        PruneStage().apply(_vit(3), PruneConfig(depth=3), _ctx(tmp_path))
    with pytest.raises(CandidateError, match="this model has none"):
        PruneStage().apply(_vit(2), PruneConfig(depth=1), _ctx(tmp_path))
    with pytest.raises(ConfigError, match="prune.depth"):
        PruneConfig(depth=-1)
    config = PruneConfig(ratio=0.2, depth=2)
    assert config.prunes and PruneConfig(depth=1).prunes and not PruneConfig(depth=1).prunes_width
    assert PruneConfig.from_dict(config.to_dict()) == config


def test_depth_is_searched_where_the_probe_found_a_stack() -> None:
    cpu = load_profile("cpu")
    facts = PruneStage().probe(ProbeInput(module=_vit(4), onnx_path=None, input_shape=SHAPE))
    assert facts["blocks"] == {"stack": "blocks", "count": 4}
    found = ModelFacts(onnx_input=False, stages={"prune": facts, "quantize": {}})
    assert declared_params(cpu, found)["prune"]["prune.depth"].describe() == "int in [0, 2] step 1"
    rec = _Recorder({"prune.ratio": 0.3, "prune.attention": "heads", "prune.depth": 2})
    config = PruneStage().suggest(rec, cpu, found)
    assert config.depth == 2
    assert PruneStage().describe(config).endswith(" -2 blocks")
    cnn = zoo.BUILDERS["plain_cnn"](width=8).eval()
    cnn_facts = PruneStage().probe(ProbeInput(module=cnn, onnx_path=None, input_shape=(1, 16, 16)))
    assert "blocks" not in cnn_facts
    no_stack = ModelFacts(onnx_input=False, stages={"prune": cnn_facts, "quantize": {}})
    assert "prune.depth" not in declared_params(cpu, no_stack)["prune"]


def _mobilenetv2() -> nn.Module:
    torch.manual_seed(0)
    return zoo.mobilenetv2_cifar(in_channels=1, width_mult=0.25).eval()


def test_a_mobilenetv2_stack_is_its_residual_blocks() -> None:
    model = _mobilenetv2()
    x = _x(1)
    # its features mix a stem, strided and widening blocks: no uniform stack
    assert find_block_stack(model, x) is None
    stack = find_block_stack(model, x, partial=True)
    assert stack is not None and stack.name == "features"
    residual = [i for i, b in enumerate(model.features) if getattr(b, "use_res", False)]
    assert list(stack.positions) == residual and stack.count == len(residual) >= 8


def test_mobilenetv2_loses_whole_residual_blocks_and_exports_fewer_convs(tmp_path: Path) -> None:
    model = _mobilenetv2()
    config = PruneConfig(ratio=0.5, round_to=8, depth=3)
    out = PruneStage().apply(model, config, _ctx(tmp_path))
    pruned, depth = out.artifact, out.info["prune_report"]["depth"]
    skipped = [i for i, b in enumerate(pruned.features) if isinstance(b, SkippedBlock)]
    assert skipped == depth["removed"] and len(skipped) == 3
    assert all(model.features[i].use_res for i in skipped)  # only residual blocks go
    x = _x(8).numpy()
    path = export_onnx(pruned, SHAPE, tmp_path / "pruned.onnx", check_inputs=x)
    full = export_onnx(model, SHAPE, tmp_path / "full.onnx", check_inputs=x)

    def convs(p: Path) -> int:
        return [n.op_type for n in onnx.load(str(p)).graph.node].count("Conv")

    removed = [model.features[i] for i in skipped]
    assert convs(full) - convs(path) == sum(
        sum(isinstance(m, nn.Conv2d) for m in b.modules()) for b in removed
    )
    _assert_ort_matches_torch(path, pruned, x)


def test_depth_is_searched_on_a_cnn_with_residual_blocks() -> None:
    cpu = load_profile("cpu")
    facts = PruneStage().probe(ProbeInput(module=_mobilenetv2(), onnx_path=None, input_shape=SHAPE))
    count = facts["blocks"]["count"]
    assert facts["blocks"]["stack"] == "features" and count >= 8
    found = ModelFacts(onnx_input=False, stages={"prune": facts, "quantize": {}})
    drawn = declared_params(cpu, found)["prune"]["prune.depth"].describe()
    assert drawn == f"int in [0, {count // 2}] step 1"
