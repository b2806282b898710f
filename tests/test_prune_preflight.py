"""The pruning pre-flight: real graphs either prune (with the layers Torch-Pruning cannot
follow left whole) or are declared unprunable with a reason, and never hang the caller."""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from model_facts import facts
from torch import Tensor, nn

from edgeopt import zoo
from edgeopt.errors import CandidateError
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import load_profile
from edgeopt.stages import PruneConfig, StageContext, prune_trace
from edgeopt.stages import prune_apply as prune_mod
from edgeopt.stages.prune import PruneStage
from edgeopt.stages.prune_preflight import PreflightResult, _split_coupled, preflight
from edgeopt.stages.prune_trace import _regroups_channels, build_dependency_graph, trace_forward
from edgeopt.zoo_transformers import FusedQkvAttention

SHAPE = (3, 32, 32)
TINY = 0.125
MARGIN_S = 5.0  # killing and joining a child, and a loaded machine


class SliceShuffleUnit(zoo.ShuffleUnit):
    """The ShuffleNetV2 unit with the channel split written as slices, ``x[:, :c]``: on this
    graph Torch-Pruning 1.6 builds the dependency graph, then never returns from grouping
    (traced as is) or mis-maps channels and raises (traced by ``trace_forward``)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            c = x.shape[1] // 2
            out = torch.cat((x[:, :c], self.branch2(x[:, c:])), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return zoo.channel_shuffle(out, 2)


def _slice_shufflenet() -> nn.Module:
    torch.manual_seed(0)
    model = zoo.shufflenetv2_cifar(width_mult=TINY)
    for unit in model.modules():
        if isinstance(unit, zoo.ShuffleUnit):
            unit.__class__ = SliceShuffleUnit
    return model.eval()


def _shufflenet(width_mult: float = TINY) -> nn.Module:
    """The zoo's ShuffleNetV2 (``chunk`` split) with random BN statistics, so that channels
    differ and a misplaced one shows in the output."""
    torch.manual_seed(0)
    model = zoo.shufflenetv2_cifar(width_mult=width_mult)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


class SleepsInChild(nn.Module):
    """A model whose forward sleeps in a child process (as the pre-flight's is): a stand-in
    for any hang, so the test does not depend on how slow a real hang is."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: Tensor) -> Tensor:
        if multiprocessing.parent_process() is not None:
            time.sleep(60)
        return self.fc(self.conv(x).mean((2, 3)))


class _Unpicklable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.fn = lambda t: t  # a lambda attribute: torch.save cannot pickle the module

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.fn(x))


@contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""

    def expire(_sig: int, _frame: object) -> None:
        raise TimeoutError(f"still running after {seconds}s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _optype(name: str) -> object:
    """Torch-Pruning's ``OPTYPE`` member ``name``."""
    from torch_pruning.ops import OPTYPE

    return OPTYPE[name]


def _ctx(tmp_path: Path) -> StageContext:
    return StageContext(
        workdir=tmp_path, profile=load_profile("cpu"), data=None, teacher=None, input_shape=SHAPE
    )


def _timed(model: nn.Module, limit_s: float) -> PreflightResult:
    t0 = time.monotonic()
    result = preflight(model, SHAPE, time_limit_s=limit_s)
    elapsed = time.monotonic() - t0
    assert elapsed < limit_s + MARGIN_S, (elapsed, result)
    assert result.seconds <= elapsed
    return result


def test_resnet18_is_prunable_whole() -> None:
    torch.manual_seed(0)
    model = zoo.resnet18_cifar(width_mult=TINY).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = _timed(model, 60)
    assert result.prunable, result.reason
    assert result.ignored_layers == ()
    assert "pruned 10%" in result.reason
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # untouched


def test_split_coupled_layers_found_in_the_graph() -> None:
    resnet = zoo.resnet18_cifar(width_mult=TINY).eval()
    assert _split_coupled(resnet, SHAPE) == []  # adds and the flatten before fc are fine
    model = _slice_shufflenet()
    units = {n: u for n, u in model.named_modules() if isinstance(u, zoo.ShuffleUnit)}
    want = {f"{n}.branch2.5" for n in units}  # every unit's last conv feeds the cat
    want |= {f"{n}.branch1.2" for n, u in units.items() if u.stride == 2}
    # a stride-2 unit's depthwise conv keeps its input's channels: a shuffled tensor, except
    # in the first unit, whose input is the stem's
    want |= {f"{n}.branch1.0" for n, u in units.items() if u.stride == 2 and n != "stages.0.0"}
    assert set(_split_coupled(model, SHAPE)) == want


def test_chunk_shufflenet_traces_with_the_model_s_values() -> None:
    model = _shufflenet()
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(trace_forward(model, x), model(x))
    graph = build_dependency_graph(model, torch.zeros(1, *SHAPE))  # TP alone: ZeroDivisionError
    splits = [n for n in graph.module2node.values() if type(n.module).__name__ == "_SplitOp"]
    assert splits and all(  # each chunk in two equal halves, not guessed from consumers
        len(set(n.module.split_sizes)) == 1 and len(n.module.split_sizes) == 2 for n in splits
    )


def test_only_channel_regrouping_reshapes_are_opaque() -> None:
    x = torch.zeros(2, 8, 4, 4, requires_grad=True)
    assert _regroups_channels(x, x.view(2, 2, 4, 4, 4))  # the shuffle's view
    assert _regroups_channels(x.view(2, 4, 2, 4, 4), x.view(2, 4, 2, 4, 4).reshape(2, 8, 4, 4))
    assert not _regroups_channels(x, x.flatten(1))  # a flatten into a Linear
    assert not _regroups_channels(x.flatten(1), x.flatten(1).view(2, 8, 4, 4))
    assert not _regroups_channels(x, x.view(2, 8, 16))  # channels kept
    assert not _regroups_channels(x.detach(), x.detach().view(2, 2, 4, 4, 4))  # not traced


def test_chunk_shufflenet_is_pruned_around_its_shuffles(tmp_path: Path) -> None:
    model = _shufflenet()
    result = _timed(model, 30)
    assert result.prunable, result.reason
    # the whole graph fails (channels mis-mapped through the shuffles); without the layers
    # whose channels reach a split, concatenation or shuffle it prunes
    assert "Torch-Pruning failed" in result.reason and "left whole" in result.reason
    assert set(result.ignored_layers) == set(_split_coupled(model, SHAPE))
    config = PruneConfig(ratio=0.3, ignored_layers=result.ignored_layers)
    with _alarm(30):
        out = PruneStage().apply(model, config, _ctx(tmp_path))
    pruned, report = out.artifact, out.info.get("prune_report")
    assert report is not None and report["macs_ratio"] < 0.8
    names = dict(pruned.named_modules())
    assert names["stages.0.1.branch2.0"].out_channels < model.stages[0][1].branch2[0].out_channels
    for name in result.ignored_layers:
        assert names[name].out_channels == dict(model.named_modules())[name].out_channels
    x = np.random.default_rng(0).standard_normal((2, *SHAPE)).astype(np.float32)
    onnx_path = export_onnx(pruned, SHAPE, tmp_path / "pruned.onnx", check_inputs=x)
    assert onnx_path.stat().st_size > 0


def test_pruned_shufflenet_computes_what_its_kept_channels_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _shufflenet()
    ignored = tuple(_split_coupled(model, SHAPE))
    checked: list[int] = []
    check = prune_trace.check_equivalent

    def counted(*args: object) -> None:
        check(*args)  # type: ignore[arg-type]
        checked.append(1)

    # check every prune, not only groups through channel-moving ops
    monkeypatch.setattr(prune_trace, "moves_channels", lambda node: True)
    monkeypatch.setattr(prune_mod, "check_equivalent", counted)
    for extra in ({}, {"iterative_steps": 2}, {"global_pruning": True}):
        config = PruneConfig(ratio=0.4, ignored_layers=ignored, **extra)  # type: ignore[arg-type]
        PruneStage().apply(model, config, _ctx(tmp_path))
    assert len(checked) == 3


def test_misplaced_channels_fail_the_equivalence_check(tmp_path: Path) -> None:
    model = _shufflenet()
    ignored = tuple(_split_coupled(model, SHAPE))
    pruned = (
        PruneStage()
        .apply(model, PruneConfig(ratio=0.4, ignored_layers=ignored), _ctx(tmp_path))
        .artifact
    )
    conv = pruned.stages[0][1].branch2[5]  # its input channels were pruned
    record = [prune_trace.PrunedGroup(((conv, _optype("CONV"), False, (0, 1, 2)),), True)]
    with pytest.raises(CandidateError, match="computes something else"):
        prune_trace.check_equivalent(model, pruned, record, SHAPE)


def test_slice_shufflenet_is_pruned_around_its_slices(tmp_path: Path) -> None:
    model = _slice_shufflenet()
    limit = 16.0
    result = _timed(model, limit)
    assert result.prunable, result.reason
    assert "Torch-Pruning failed" in result.reason  # the first try, the whole graph, failed
    assert set(result.ignored_layers) == set(_split_coupled(model, SHAPE))
    # the prune stage with those layers left whole returns at once and passes its exact
    # channel-count check (uniform: every remaining group keeps int(C * 0.7) channels)
    config = PruneConfig(ratio=0.3, ignored_layers=result.ignored_layers)
    t0 = time.monotonic()
    with _alarm(30):
        out = PruneStage().apply(model, config, _ctx(tmp_path))
    assert time.monotonic() - t0 < 10
    pruned, report = out.artifact, out.info.get("prune_report")
    assert report is not None and report["macs_ratio"] < 0.95
    assert report["channels"]  # the branch-internal groups were pruned
    names = dict(pruned.named_modules())
    for name in result.ignored_layers:  # ... and every ignored layer kept its width
        assert names[name].out_channels == dict(model.named_modules())[name].out_channels
    with torch.no_grad():
        assert tuple(pruned(torch.zeros(2, *SHAPE)).shape) == (2, 10)


def test_a_hang_is_killed_at_the_time_limit() -> None:
    # 8 s, not 3: the spawned child imports torch and Torch-Pruning before it reaches the
    # dependency graph, which took over 3 s on a loaded 2-core machine (two test workers)
    result = _timed(SleepsInChild().eval(), 8.0)
    assert not result.prunable
    assert "timed out" in result.reason and "dependency graph" in result.reason
    assert result.ignored_layers == ()


def test_an_unpicklable_model_is_reported_not_raised() -> None:
    result = preflight(_Unpicklable(), (4,), time_limit_s=5)
    assert not result.prunable and "could not copy the model" in result.reason


def test_prune_stage_puts_the_ignored_layers_in_its_configs() -> None:
    class Answers:
        def suggest_float(self, name: str, low: float, high: float, **_: object) -> float:
            return 0.5

        def suggest_int(self, name: str, low: int, high: int, **_: object) -> int:
            return low

        def suggest_categorical(self, name: str, choices: list[object]) -> object:
            return choices[0]

    with_ignored = facts(prune_ignored=("a.conv", "b"))
    config = PruneStage().suggest(Answers(), load_profile("cpu"), with_ignored)
    assert config.ratio == 0.5 and config.ignored_layers == ("a.conv", "b")
    assert PruneConfig.from_dict(config.to_dict()) == config  # recorded with the trial
    default = facts()
    assert PruneStage().suggest(Answers(), load_profile("cpu"), default).ignored_layers == ()


def test_no_time_at_all_is_a_timeout() -> None:
    result = _timed(zoo.resnet18_cifar(width_mult=TINY).eval(), 0.0)
    assert not result.prunable and "timed out" in result.reason


def _vit(qkv: str) -> nn.Module:
    torch.manual_seed(0)
    return zoo.vit_cifar(in_channels=3, width_mult=1 / 6, depth=2, heads=4, qkv=qkv).eval()


def test_fused_qkv_vit_is_pruned_by_heads() -> None:
    # before attention sites were known: "nothing was pruned" and pruning switched off
    result = _timed(_vit("fused"), 60)
    assert result.prunable, result.reason
    assert result.ignored_layers == ()
    att = result.attention
    assert att["sites"] == ["blocks.0.attn", "blocks.1.attn"] and att["pruning"] == "heads"
    assert att["heads"] == {"blocks.0.attn": 4, "blocks.1.attn": 4} and att["head_dims"]
    assert att["note"].startswith("attention: 2 sites (fused qkv), heads prunable")
    # the cpu target rounds channels to 8: head dims are offered only where it is 1
    assert att["note"].endswith(
        "head dims prunable (scale stored; searched where channel_multiple is 1)"
    )
    notes = PruneStage().probe_notes({"prunable": True, "ignored": [], "attention": att})
    assert notes == [att["note"]]


class ScaleFromHeadDim(FusedQkvAttention):
    """timm before its stored ``scale``: the softmax scale computed from ``head_dim``."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        self.scale = self.head_dim**-0.5
        return super().forward(x, mask)


def test_head_dims_refused_by_a_computed_scale_say_why() -> None:
    # the note said "head dims not prunable" and left the user guessing
    model = _vit("fused")
    for block in model.blocks:
        block.attn.__class__ = ScaleFromHeadDim
    att = _timed(model, 60).attention
    assert att["pruning"] == "heads" and att["head_dims"] is False
    assert att["note"] == (
        "attention: 2 sites (fused qkv), heads prunable; "
        "head dims not prunable (the softmax scale is computed from head_dim)"
    )


def test_chunk_qkv_vit_is_pruned_in_its_mlp_only() -> None:
    result = _timed(_vit("chunk"), 60)
    assert result.prunable, result.reason
    assert result.attention["pruning"] == "mlp_only"
    assert result.attention["note"] == "qkv split by chunk: attention left whole, MLP width pruned"
