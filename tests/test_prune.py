"""Structured pruning: exact channel counts, real smaller tensors, no mutation, failures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from edgeopt import zoo
from edgeopt.errors import CandidateError, ConfigError
from edgeopt.profiles import load_profile
from edgeopt.stages import STAGES, PruneConfig, StageContext, StageOutput
from edgeopt.stages.prune import PruneStage
from edgeopt.stages.prune_config import expected_channels, layer_ratio
from edgeopt.stages.prune_ops import count_macs_params

SHAPE = (1, 16, 16)


def _ctx(tmp_path: Path, data: object = None) -> StageContext:
    return StageContext(
        workdir=tmp_path, profile=load_profile("cpu"), data=data, teacher=None, input_shape=SHAPE
    )


def _model(name: str, width: int) -> nn.Module:
    torch.manual_seed(0)
    m = zoo.BUILDERS[name](width=width)
    # non-uniform BN scales so that bn_scale importance has something to rank
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            nn.init.uniform_(mod.weight, 0.1, 1.0)
    return m.eval()


def _prune(m: nn.Module, tmp_path: Path, **kw: object) -> nn.Module:
    return _prune_out(m, tmp_path, **kw).artifact


def _prune_out(m: nn.Module, tmp_path: Path, **kw: object) -> StageOutput[nn.Module]:
    return STAGES["prune"].apply(m, PruneConfig(**kw), _ctx(tmp_path))


def test_expected_channels_by_hand() -> None:
    assert expected_channels(16, 0.5, 1) == 8
    assert expected_channels(16, 0.3, 1) == 11  # int(11.2)
    assert expected_channels(16, 0.3, 4) == 8  # 11 -> 8
    assert expected_channels(64, 0.3, 4) == 44  # int(44.8) = 44
    # 3 -> 0: the group keeps the smallest multiple, 8, instead of all 16 (Torch-Pruning's
    # own rule), so a higher ratio never keeps more channels than a lower one
    assert expected_channels(16, 0.8, 8) == 8
    assert expected_channels(16, 0.5, 8) == 8
    assert expected_channels(64, 0.8, 8) == 8  # 12 -> 8
    assert expected_channels(8, 0.8, 8) == 8  # no multiple below the group's own width
    assert expected_channels(48, 0.7, 16) == 16  # int(14.4) -> 0: its own ratio keeps 16
    assert expected_channels(16, 0.7, 8, steps=3) == 8
    assert expected_channels(16, 0.7, 8, steps=1) == 8
    assert layer_ratio(64, 0.3, 16) == 0.3  # 44 -> 32: the config's ratio
    for channels in range(17, 200):  # monotone: more pruning never keeps more channels
        kept = [expected_channels(channels, r / 20, 16) for r in range(1, 19)]
        assert kept == sorted(kept, reverse=True), channels


def test_a_higher_ratio_never_saves_fewer_macs_on_a_16_lane_target(tmp_path: Path) -> None:
    """resnet_small(32) on the mobile profile's multiple of 16: with Torch-Pruning's rule
    ratio 0.7 left the 32-channel stage whole and kept more MACs than ratio 0.5."""
    macs = []
    for ratio in (0.3, 0.5, 0.7):
        out = _prune_out(_model("resnet_small", 32), tmp_path, ratio=ratio, round_to=16)
        assert out.artifact.stem[0].out_channels == 16
        macs.append(out.info["prune_report"]["macs_after"])
    assert macs[0] > macs[1] > macs[2]


def test_iterative_steps_exact(tmp_path: Path) -> None:
    out = _prune(_model("resnet_small", 16), tmp_path, ratio=0.7, round_to=8, iterative_steps=3)
    assert out.stem[0].out_channels == 8  # one-shot would keep 16 (see above)
    assert out.layers[5].conv2.out_channels == 16  # 64: 49 -> 48, 34 -> 32, 19 -> 16


# resnet_small(width=16): residual streams of 16/32/64 channels (stem + conv2 + shortcut of
# each stage) and each block's internal conv1 (16, 16, 32, 32, 64, 64 channels).
@pytest.mark.parametrize(
    ("ratio", "round_to", "stream", "inner"),
    [
        (0.5, 1, (8, 16, 32), (8, 8, 16, 16, 32, 32)),
        (0.5, 8, (8, 16, 32), (8, 8, 16, 16, 32, 32)),
        (0.25, 8, (8, 24, 48), (8, 8, 24, 24, 48, 48)),  # 12->8, 24, 48
        (0.3, 4, (8, 20, 44), (8, 8, 20, 20, 44, 44)),  # 11->8, 22->20, 44
        (0.8, 8, (8, 8, 8), (8, 8, 8, 8, 8, 8)),  # 3->0 and 6->0 keep 8; 12->8
    ],
)
def test_resnet_channels_exact(
    tmp_path: Path, ratio: float, round_to: int, stream: tuple[int, ...], inner: tuple[int, ...]
) -> None:
    m = _model("resnet_small", 16)
    out = _prune(m, tmp_path, ratio=ratio, round_to=round_to)
    assert out.stem[0].out_channels == stream[0]
    blocks = list(out.layers)
    assert tuple(b.conv1.out_channels for b in blocks) == inner
    assert tuple(blocks[i].conv2.out_channels for i in (1, 3, 5)) == stream
    assert out.fc.in_features == stream[2] and out.fc.out_features == 10
    assert out(torch.randn(2, *SHAPE)).shape == (2, 10)


@pytest.mark.parametrize(
    ("ratio", "round_to", "convs"),
    [
        (0.5, 1, [4, 4, 8, 8, 16]),
        (0.5, 8, [8, 8, 8, 8, 16]),  # 4 -> 0: the 8-channel group stays whole
        (0.75, 1, [2, 2, 4, 4, 8]),
        (0.3, 4, [4, 4, 8, 8, 20]),  # 5->4, 11->8, 22->20
    ],
)
def test_plain_channels_exact(
    tmp_path: Path, ratio: float, round_to: int, convs: list[int]
) -> None:
    out = _prune(_model("plain_cnn", 8), tmp_path, ratio=ratio, round_to=round_to)
    got = [c.out_channels for c in out.modules() if isinstance(c, nn.Conv2d)]
    # each conv-BN pair is its own group; conv[0]/conv[1] share nothing, but same width
    assert got == convs


def test_mobilenet_depthwise_channels(tmp_path: Path) -> None:
    m = _model("mobilenet_small", 8)
    out = _prune(m, tmp_path, ratio=0.5, round_to=8)
    block = out[3].block  # first inverted residual: 8 -> hidden 32 -> 8
    expand, dw, project = block[0], block[3], block[6]
    assert expand.out_channels == 16 and dw.out_channels == 16 and dw.groups == 16
    assert project.out_channels == 8  # residual stream of 8 channels: 4 -> 0 keeps whole
    assert out[-1].in_features == 32  # 64 -> 32
    assert out(torch.randn(2, *SHAPE)).shape == (2, 10)


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor", "bn_scale"])
@pytest.mark.parametrize("name", ["plain_cnn", "resnet_small", "mobilenet_small"])
def test_global_pruning_shrinks_and_rounds(tmp_path: Path, name: str, importance: str) -> None:
    m = _model(name, 16)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    result = _prune_out(
        m,
        tmp_path,
        ratio=0.5,
        global_pruning=True,
        importance=importance,
        round_to=8,
        iterative_steps=2,
    )
    out, report = result.artifact, result.info.get("prune_report")
    assert report is not None
    assert report["macs_after"] < report["macs_before"]
    assert report["params_after"] < report["params_before"]
    assert (report["macs_after"], report["params_after"]) == count_macs_params(out, SHAPE)
    for before_ch, after_ch in zip(
        [c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)],
        [c.out_channels for c in out.modules() if isinstance(c, nn.Conv2d)],
        strict=True,
    ):
        assert after_ch == before_ch or after_ch % 8 == 0
    # the input is untouched: same tensors, same shapes
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    assert not any(a.startswith("edgeopt_") for a in vars(m))


def test_real_smaller_tensors_not_masks(tmp_path: Path) -> None:
    m = _model("resnet_small", 16)
    out = _prune(m, tmp_path, ratio=0.5, round_to=8)
    n_before = sum(p.numel() for p in m.parameters())
    n_after = sum(p.numel() for p in out.parameters())
    assert n_after < 0.35 * n_before
    assert not any("mask" in k or "orig" in k for k in out.state_dict())


def test_ratio_zero_is_identity(tmp_path: Path) -> None:
    m = _model("plain_cnn", 8)
    stage = STAGES["prune"]
    cfg = stage.identity(load_profile("cpu"))
    assert stage.is_identity(cfg) and cfg.round_to == 8
    result = stage.apply(m, cfg, _ctx(tmp_path))
    out = result.artifact
    assert out is not m
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        assert torch.equal(out(x), m(x))
    assert result.info["prune_report"]["macs_ratio"] == 1.0


def test_taylor_with_data_and_ignored_layer(tmp_path: Path) -> None:
    from edgeopt.data import DataBundle, NpzSource

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, *SHAPE, generator=g).numpy()
    y = torch.randint(0, 10, (64,), generator=g).numpy()
    data = NpzSource(tmp_path / "in-memory.npz", DataBundle(x, y, x[:16], y[:16]))
    m = _model("plain_cnn", 8)
    cfg = PruneConfig(ratio=0.5, importance="taylor", ignored_layers=("0",))
    out = STAGES["prune"].apply(m, cfg, _ctx(tmp_path, data)).artifact
    assert out[0].out_channels == 8  # ignored: first conv keeps its 8 channels
    assert out[3].out_channels == 4


class HardCoded(nn.Module):
    """Flattens with a hard-coded feature count: breaks once channels change."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv(x))))
        return self.fc(x.reshape(-1, 8 * 16 * 16))


class SplitIndex(nn.Module):
    """Splits channels by fixed index ranges (what DepGraph cannot follow)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        a, b = h[:, :8], h[:, 8:]
        return self.fc((a * b).mean((2, 3)))


@pytest.mark.parametrize("model_cls", [HardCoded, SplitIndex])
def test_unprunable_architecture_is_candidate_error(tmp_path: Path, model_cls: type) -> None:
    torch.manual_seed(0)
    with pytest.raises(CandidateError) as info:
        _prune(model_cls(), tmp_path, ratio=0.5)
    assert info.value.stage == "prune"


@pytest.mark.parametrize(
    "kw",
    [
        {"ratio": -0.1},
        {"ratio": 0.95},
        {"ratio": "0.5"},
        {"iterative_steps": 0},
        {"round_to": 0},
        {"importance": "random"},
        {"global_pruning": 1},
        {"ignored_layers": ("",)},
    ],
)
def test_invalid_config(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        PruneConfig(**kw)  # type: ignore[arg-type]


def test_registry_instance() -> None:
    assert isinstance(STAGES["prune"], PruneStage)
