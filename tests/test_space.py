"""The composed search space: stages' own spaces walked in pipeline order, model facts,
baselines, the grid, and a new stage joining without a change to
``edgeopt.search.strategy.space``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import onnx
import pytest
from model_facts import facts
from onnx import TensorProto, helper

from edgeopt.candidate import Candidate, Step
from edgeopt.profiles import load_profile
from edgeopt.search.strategy.space import (
    INT8,
    UNCHANGED,
    baseline_params,
    grid_space,
    identity_candidate,
    suggest_candidate,
)
from edgeopt.stages import (
    STAGES,
    ByHandBaseline,
    ModelFacts,
    Phase,
    ProbeInput,
    Stage,
    StageConfig,
    StageContext,
    Suggester,
    register,
)
from edgeopt.stages.recipes import RECIPES

if TYPE_CHECKING:
    from edgeopt.profiles import HardwareProfile

CONV = facts()
MATMUL = facts(matmul_heavy=True)
UNPRUNABLE = facts(prunable=False)
ONNX_INPUT = facts(onnx_input=True)


class Answers:
    """A Suggester answering from ``answers``, else the first choice / the low end; it
    records every name asked with its choices (or bounds)."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.answers = dict(answers or {})
        self.asked: dict[str, Any] = {}

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        self.asked[name] = (low, high)
        return float(self.answers.get(name, low))

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        self.asked[name] = (low, high)
        return int(self.answers.get(name, low))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.asked[name] = list(choices)
        value = self.answers.get(name, choices[0])
        assert value in choices, (name, value, choices)
        return value


def _stages(c: Candidate) -> list[str]:
    return [s.stage for s in c.steps]


@pytest.mark.parametrize("facts", [UNPRUNABLE, ONNX_INPUT])
def test_unprunable_model_never_draws_prune_params(facts: ModelFacts) -> None:
    space = Answers({"prune.ratio": 0.5, "quantize.mode": "int8_static"})
    c = suggest_candidate(space, load_profile("cpu"), facts)
    assert not [n for n in space.asked if n.startswith(("prune.", "finetune."))]
    assert _stages(c) == ["prune", "qat", "quantize"]
    assert STAGES["prune"].is_identity(c.steps[0].config)
    assert "quantize.calibration" in space.asked  # the ONNX stages are still searched


def test_matmul_heavy_controls_dynamic_int8() -> None:
    cpu = load_profile("cpu")
    assert "int8_dynamic" in cpu.quantization.modes
    heavy, conv = Answers(), Answers()
    suggest_candidate(heavy, cpu, MATMUL)
    suggest_candidate(conv, cpu, CONV)
    assert heavy.asked["quantize.mode"] == ["fp32", "fp32_opt", "int8_static", "int8_dynamic"]
    assert conv.asked["quantize.mode"] == ["fp32", "fp32_opt", "int8_static"]
    assert "int8_dynamic" in grid_space(cpu, MATMUL)["quantize.mode"]
    assert "int8_dynamic" not in grid_space(cpu, CONV)["quantize.mode"]


def test_finetune_params_only_for_a_pruned_candidate() -> None:
    cpu = load_profile("cpu")
    pruned = Answers({"prune.ratio": 0.5})
    c = suggest_candidate(pruned, cpu, CONV)
    assert _stages(c) == ["prune", "finetune", "qat", "quantize"]
    assert {"finetune.epochs", "finetune.lr", "finetune.distill"} <= set(pruned.asked)
    assert c.describe() == "prune 0.50 l1 + finetune 1ep + fp32"
    unpruned = Answers({"prune.ratio": 0.0})
    c = suggest_candidate(unpruned, cpu, CONV)
    assert _stages(c) == ["prune", "qat", "quantize"]
    assert not [n for n in unpruned.asked if n.startswith("finetune.")]
    assert c.describe() == "unchanged (fp32)"


def test_identity_candidate_is_every_stage_unchanged() -> None:
    c = identity_candidate(load_profile("fpga"))
    assert _stages(c) == ["prune", "qat", "quantize"]
    assert all(STAGES[s.stage].is_identity(s.config) for s in c.steps)
    assert c.steps[0].config.round_to == 16  # the profile is still recorded


PLAIN_INT8 = {
    "prune.ratio": 0.0,
    "qat.epochs": 0,
    "quantize.mode": "int8_static",
    "quantize.calibration": "minmax",
    "quantize.calibration_samples": 128,
    "quantize.exclude_first_last": False,
    "quantize.fp32_nodes": 0,
}


@pytest.mark.parametrize(
    ("profile", "unchanged", "per_channel"),
    [
        ("cpu", {"prune.ratio": 0.0, "qat.epochs": 0, "quantize.mode": "fp32"}, True),
        ("mobile", {"prune.ratio": 0.0, "qat.epochs": 0, "quantize.mode": "fp32"}, True),
        ("fpga", {"prune.ratio": 0.0, "qat.epochs": 0}, False),  # int8 only: no fp32 mode
    ],
)
@pytest.mark.parametrize("facts", [CONV, ONNX_INPUT])
def test_baseline_params_are_todays(
    profile: str, unchanged: dict[str, Any], per_channel: bool, facts: ModelFacts
) -> None:
    # every stage's param is pinned (a param left out would be sampled for the baseline);
    # resumed studies recognize their baselines by their tag, so new stages may add params
    got = baseline_params(load_profile(profile), facts)
    int8 = {**PLAIN_INT8, "quantize.per_channel": per_channel}
    assert got == [(UNCHANGED, unchanged), (INT8, int8)]
    assert list(got[1][1]) == [
        "prune.ratio",
        "qat.epochs",
        "quantize.mode",
        "quantize.calibration",
        "quantize.calibration_samples",
        "quantize.per_channel",
        "quantize.exclude_first_last",
        "quantize.fp32_nodes",
    ]


@pytest.mark.parametrize(
    ("profile", "mode"),
    [("cpu", "int8_dynamic"), ("mobile", "int8_dynamic"), ("gpu", "int8_static")],
)
def test_a_matmul_heavy_models_plain_int8_is_dynamic_where_offered(profile: str, mode: str) -> None:
    # what a user types by hand for a transformer (ORT: dynamic for transformers, static for
    # CNNs); a target without dynamic int8 keeps static QDQ
    prof = load_profile(profile)
    (_, _), (tag, int8) = baseline_params(prof, MATMUL)
    assert tag == INT8 and int8["quantize.mode"] == mode
    hand = STAGES["quantize"].by_hand(prof, MATMUL)
    assert hand is not None and hand.config.mode.value == mode
    assert suggest_candidate(Answers(int8), prof, MATMUL).steps[-1].config == hand.config
    assert dict(hand.params) in STAGES["quantize"].variants(prof, MATMUL)


@pytest.mark.parametrize("profile", ["cpu", "mobile", "fpga", "gpu"])
def test_baseline_params_replay_to_their_configs(profile: str) -> None:
    prof = load_profile(profile)
    (_, unchanged), (_, int8) = baseline_params(prof, CONV)
    if "quantize.mode" in unchanged:
        assert suggest_candidate(Answers(unchanged), prof, CONV) == identity_candidate(prof)
    hand = STAGES["quantize"].by_hand(prof, CONV)
    assert hand is not None and hand.tag == INT8
    want = Candidate(
        (
            Step("prune", STAGES["prune"].identity(prof)),
            Step("qat", STAGES["qat"].identity(prof)),
            Step("quantize", hand.config),
        )
    )
    assert suggest_candidate(Answers(int8), prof, CONV) == want


def test_grid_space() -> None:
    cpu = load_profile("cpu")
    grid = grid_space(cpu, CONV)
    assert grid["prune.ratio"] == [0.0, 0.25, 0.5]
    assert grid["quantize.mode"] == ["fp32", "fp32_opt", "int8_static"]
    fixed = {k: v for k, v in grid.items() if k not in ("prune.ratio", "quantize.mode")}
    assert all(len(v) == 1 for v in fixed.values())
    # the probe reached the conditional params: fine-tuning and calibration are fixed too
    assert {"finetune.epochs", "quantize.calibration", "quantize.per_channel"} <= set(fixed)
    assert grid["finetune.epochs"] == [4] and grid["quantize.calibration"] == ["minmax"]
    onnx_grid = grid_space(cpu, ONNX_INPUT)
    assert not [k for k in onnx_grid if k.startswith(("prune.", "finetune."))]
    assert "quantize.mode" not in grid_space(load_profile("fpga"), CONV)  # one mode: no axis


# ------------------------------------------------------------------ a stage added by a test
@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyConfig(StageConfig):
    level: int = 0

    def __post_init__(self) -> None:
        self._check_types()


class ToyStage(Stage[ToyConfig, Path]):
    """An ONNX-phase stage with a space, a by-hand baseline and a grid axis."""

    name = "toy"
    phase = Phase.ONNX
    config_type = ToyConfig
    grid_probe: ClassVar[dict[str, Any]] = {"toy.level": 3}

    def suggest(self, space: Suggester, profile: HardwareProfile, facts: ModelFacts) -> ToyConfig:
        return ToyConfig(level=int(space.suggest_int("toy.level", 0, 3)))

    def identity(self, profile: HardwareProfile) -> ToyConfig:
        return ToyConfig()

    def identity_params(self, profile: HardwareProfile) -> dict[str, Any]:
        return {"toy.level": 0}

    def by_hand(self, profile: HardwareProfile, facts: ModelFacts) -> ByHandBaseline[ToyConfig]:
        return ByHandBaseline("toy2", ToyConfig(level=2), {"toy.level": 2})

    def grid_axes(self, profile: HardwareProfile, facts: ModelFacts) -> dict[str, list[Any]]:
        return {"toy.level": [0, 1, 2, 3]}

    def is_identity(self, config: ToyConfig) -> bool:
        return config.level == 0

    def apply(self, artifact: Path, config: ToyConfig, ctx: StageContext) -> Path:
        return artifact


class ToyFollower(ToyStage):
    """Follows ``toy`` the way fine-tuning follows pruning."""

    name = "toy_follower"
    requires = frozenset({"toy"})
    grid_probe: ClassVar[dict[str, Any]] = {}

    def suggest(self, space: Suggester, profile: HardwareProfile, facts: ModelFacts) -> ToyConfig:
        return ToyConfig(level=int(space.suggest_int("toy_follower.level", 1, 2)))

    def identity_params(self, profile: HardwareProfile) -> dict[str, Any]:
        return {}

    def by_hand(self, profile: HardwareProfile, facts: ModelFacts) -> None:
        return None

    def grid_axes(self, profile: HardwareProfile, facts: ModelFacts) -> dict[str, list[Any]]:
        return {}


@pytest.fixture
def toy_stages() -> Iterator[None]:
    """Register the toy stages after the real ones; restore the registry afterwards."""
    saved = dict(STAGES)
    try:
        register(ToyStage())
        register(ToyFollower())
        yield
    finally:
        STAGES.clear()
        STAGES.update(saved)


@pytest.mark.usefixtures("toy_stages")
def test_a_registered_stage_joins_the_search() -> None:
    cpu = load_profile("cpu")
    space = Answers({"prune.ratio": 0.5, "toy.level": 1})
    c = suggest_candidate(space, cpu, CONV)
    assert _stages(c) == ["prune", "finetune", "qat", "quantize", "toy", "toy_follower"]
    assert c.to_dict()["toy"] == {"level": 1}
    assert {"toy.level", "toy_follower.level"} <= set(space.asked)
    assert Candidate.from_dict(c.to_dict()) == c
    assert c.describe().endswith(" + toy + toy_follower")
    # its follower is left out while it is at its identity
    idle = Answers({"toy.level": 0})
    assert _stages(suggest_candidate(idle, cpu, CONV)) == ["prune", "qat", "quantize", "toy"]
    assert "toy_follower.level" not in idle.asked

    assert _stages(identity_candidate(cpu)) == ["prune", "qat", "quantize", "toy"]
    tags = baseline_params(cpu, CONV)
    assert [t for t, _ in tags] == [UNCHANGED, INT8, "toy2"]
    assert tags[0][1]["toy.level"] == 0 and tags[1][1]["toy.level"] == 0
    assert tags[2][1] == {
        "prune.ratio": 0.0,
        "qat.epochs": 0,
        "quantize.mode": "fp32",
        "toy.level": 2,
    }
    grid = grid_space(cpu, CONV)
    assert grid["toy.level"] == [0, 1, 2, 3] and grid["toy_follower.level"] == [1]


def test_the_registry_is_restored() -> None:
    assert list(STAGES) == ["prune", "finetune", "qat", "quantize"]


def test_register_keeps_pipeline_order() -> None:
    saved = dict(STAGES)

    class Early(ToyStage):
        name = "early"
        requires = frozenset({"nope"})

    class LateTorch(ToyStage):
        name = "late_torch"
        phase = Phase.TORCH

    try:
        for stage in (STAGES["prune"], Early(), LateTorch()):
            with pytest.raises(ValueError):
                register(stage)
        assert list(STAGES) == list(saved)
    finally:
        STAGES.clear()
        STAGES.update(saved)


# ------------------------------------------------------------------ model facts
def _graph_file(path: Path, op: str) -> Path:
    """A one-node ONNX graph: a 3x3 Conv over 1x1x8x8, or a MatMul of 1x4 by 4x3."""
    if op == "Conv":
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 6, 6])
        w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3, 3], [0.1] * 9)
    else:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
        w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [0.1] * 12)
    node = helper.make_node(op, ["x", "w"], ["y"], name=op.lower())
    graph = helper.make_graph([node], op.lower(), [x], [y], initializer=[w])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_model_facts_of(tmp_path: Path) -> None:
    conv = _graph_file(tmp_path / "conv.onnx", "Conv")
    matmul = _graph_file(tmp_path / "matmul.onnx", "MatMul")

    def probed(path: Path) -> Mapping[str, Any]:
        return STAGES["quantize"].probe(ProbeInput(module=None, onnx_path=path, input_shape=(4,)))

    assert probed(conv) == {"matmul_heavy": False}
    assert probed(matmul) == {"matmul_heavy": True}
    # an ONNX input is never pruned, whatever its facts say
    assert not STAGES["prune"].enabled(ModelFacts(onnx_input=True, stages=CONV.stages))
    assert STAGES["prune"].enabled(CONV) and not STAGES["prune"].enabled(UNPRUNABLE)
    # an inconclusive pre-flight leaves pruning on; the search may switch it off later
    assert STAGES["prune"].enabled(facts(prunable=None))
    assert not STAGES["prune"].enabled(ModelFacts(onnx_input=False, disabled=frozenset({"prune"})))


def test_expert_seeds_prune_heads_only_where_the_probe_found_them() -> None:
    from edgeopt.search.strategy.seeds import expert_seeds

    cpu = load_profile("cpu")
    prune = {
        "prunable": True,
        "ignored": [],
        "attention": {"pruning": "heads"},
        "blocks": {"stack": "blocks", "count": 6},
    }
    stages = {"prune": prune, "finetune": {"blocks": True}, "quantize": {"matmul_heavy": True}}
    vit = ModelFacts(onnx_input=False, stages=stages)
    seeds = expert_seeds(cpu, vit)
    assert [tag for tag, _ in seeds] == [r.tag for r in RECIPES]
    got = [suggest_candidate(Answers(p), cpu, vit) for _, p in seeds]
    assert [c.steps[0].config.attention.value for c in got] == ["heads"] * 3
    # a by-hand recipe keeps every block and distils logits only: neither is left to the sampler
    assert all(p["prune.depth"] == 0 and p["finetune.hidden_distill"] is False for _, p in seeds)
    # channel ratios 0.5, 0.3, 0.7 -> heads on the 0.125 grid, at most half
    assert [c.steps[0].config.head_ratio for c in got] == [0.5, 0.25, 0.5]
    assert {c.steps[-1].config.mode.value for c in got} == {"int8_dynamic"}
    for _, params in expert_seeds(cpu, CONV):
        cnn = Answers(params)
        c = suggest_candidate(cnn, cpu, CONV)
        assert c.steps[0].config.attention.value == "none"
        assert "prune.attention" not in cnn.asked and c.steps[-1].config.mode.value == "int8_static"
