"""Sensitivity-guided mixed precision: a real ranking from real ORT sessions, a real
quantized graph with exactly the chosen nodes left in float, a real CLI search drawing both
new levers."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from model_facts import facts as model_facts

from edgeopt import zoo
from edgeopt.inputs import ModelInputs
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import load_profile
from edgeopt.stages import STAGES, QuantizeConfig, StageContext
from edgeopt.stages.onnx_graph import compute_nodes
from edgeopt.stages.sensitivity import ranking

SHAPE = (1, 16, 16)
ONE = ModelInputs.single(SHAPE)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("mp")
    return export_onnx(zoo.BUILDERS["resnet_small"](width=8).eval(), SHAPE, d / "r.onnx")


def _ctx(tmp_path: Path, cache: str = "cache") -> StageContext:
    return StageContext(
        workdir=tmp_path / "work",
        profile=load_profile("cpu"),
        data=None,
        teacher=None,
        input_shape=SHAPE,
        cache_dir=tmp_path / cache,
    )


def _plain() -> QuantizeConfig:
    hand = STAGES["quantize"].by_hand(load_profile("cpu"), model_facts())
    assert hand is not None
    return hand.config


def test_ranking_is_stable_across_runs_and_cached(model_onnx: Path, tmp_path: Path) -> None:
    config = _plain()
    first = ranking(model_onnx, config, _ctx(tmp_path, "a"), ONE, {})
    second = ranking(model_onnx, config, _ctx(tmp_path, "b"), ONE, {})  # recomputed
    assert first == second
    names = [n.name for n in compute_nodes(onnx.load(str(model_onnx)))]
    assert sorted(first) == sorted(names)
    cached = list((tmp_path / "a" / "sensitivity").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["ranking"] == first
    # another calibration setting is another ranking file
    ranking(
        model_onnx,
        dataclasses.replace(config, calibration_samples=64),
        _ctx(tmp_path, "a"),
        ONE,
        {},
    )
    assert len(list((tmp_path / "a" / "sensitivity").glob("*.json"))) == 2


@pytest.mark.parametrize("k", [1, 3])
def test_top_k_nodes_stay_float_exactly(model_onnx: Path, tmp_path: Path, k: int) -> None:
    ctx = _ctx(tmp_path)
    result = STAGES["quantize"].apply(model_onnx, dataclasses.replace(_plain(), fp32_nodes=k), ctx)
    out = result.artifact
    ranked = json.loads(next((tmp_path / "cache" / "sensitivity").glob("*.json")).read_text())
    want = set(ranked["ranking"][:k])
    g = onnx.load(str(out)).graph
    producers = {o: n.op_type for n in g.node for o in n.output}
    floats = {
        n.name
        for n in compute_nodes(onnx.load(str(out)))
        if producers.get(n.input[1]) != "DequantizeLinear"
    }
    assert floats == want
    assert set(result.info["fp32_nodes"]) == want


def test_fp32_nodes_is_drawn_only_for_int8_static_and_plain_int8_keeps_zero() -> None:
    from edgeopt.search.strategy.space import DefaultSuggester

    stage = STAGES["quantize"]
    cpu = load_profile("cpu")
    facts = model_facts()
    hand = stage.by_hand(cpu, facts)
    assert hand is not None and hand.params["quantize.fp32_nodes"] == 0
    rec = DefaultSuggester({"quantize.mode": "fp32"})
    stage.suggest(rec, cpu, facts)
    assert "quantize.fp32_nodes" not in rec.params
    rec = DefaultSuggester({"quantize.mode": "int8_static", "quantize.fp32_nodes": 2})
    assert stage.suggest(rec, cpu, facts).fp32_nodes == 2
    assert stage.describe(dataclasses.replace(_plain(), fp32_nodes=2)) == "int8_static +2 fp32"


def test_cli_search_completes_a_qat_int8_candidate(tmp_path: Path) -> None:
    """Through the CLI on the example model: a candidate fine-tuned quantization-aware and
    then quantized to int8 completes, and its int8 model used the learned ranges (in its
    info). The candidate is queued with those two params fixed (the rest drawn by the
    sampler), so the test does not depend on which path a random search happens to take."""
    import optuna

    run = tmp_path / "run"
    base = [
        str(Path(sys.executable).parent / "edgeopt"),
        "optimize",
        str(ROOT / "models" / "plain_cnn.pt"),
        "--target",
        "cpu",
        "--data",
        str(ROOT / "models" / "digits.npz"),
        "--sampler",
        "random",
        "--plain-search",
        "--out",
        str(run),
        "--no-report",
    ]
    first = subprocess.run([*base, "--trials", "2"], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    study = optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run / 'study.db'}")
    fixed = {"qat.epochs": 1, "quantize.mode": "int8_static", "quantize.fp32_nodes": 0}
    study.enqueue_trial(fixed)
    done = subprocess.run([*base, "--trials", "3"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    trial = optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run / 'study.db'}").trials[
        2
    ]
    assert trial.state.name == "COMPLETE", trial.user_attrs
    assert {k: trial.params[k] for k in fixed} == fixed
    assert trial.user_attrs["info"].get("quantize.learned_ranges", 0) > 0  # QAT + int8
