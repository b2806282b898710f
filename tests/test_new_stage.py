"""The proof that a stage owns everything about itself: weight clustering
(``toy_cluster.py``) joins through one ``register`` line and is probed at setup, drawn,
built and switched off after a failure of the model by the search's own code, which
knows nothing about it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
from onnx import numpy_helper
from toy_cluster import ClusterConfig, ClusterStage

from edgeopt import zoo
from edgeopt.candidate import Step
from edgeopt.config import RunConfig
from edgeopt.errors import CandidateError
from edgeopt.loading import ModelSpec, load_spec, save_bundle
from edgeopt.pipeline import PipelineInputs, build
from edgeopt.search.run.collect import disabled_notes
from edgeopt.search.run.setup import prepare
from edgeopt.search.strategy.space import DefaultSuggester, suggest_candidate
from edgeopt.search.study.context import SearchContext
from edgeopt.search.trial.objective import TrialRunner
from edgeopt.search.trial.policy import disable_after_failure
from edgeopt.search.trial.protocol import FailureKind
from edgeopt.stages import STAGES, Phase, register

SHAPE = (1, 16, 16)
DRAW = {"prune.ratio": 0.0, "qat.epochs": 0, "quantize.mode": "fp32", "cluster.levels": 4}


@pytest.fixture
def with_cluster() -> Iterator[None]:
    """The registry with the new stage at its place in pipeline order (the one line a new
    stage adds to ``edgeopt/stages/__init__.py``), restored afterwards."""
    saved = dict(STAGES)
    STAGES.clear()
    for stage in saved.values():
        if stage.phase is Phase.ONNX and "cluster" not in STAGES:
            register(ClusterStage())
        register(stage)
    yield
    STAGES.clear()
    STAGES.update(saved)


def _inputs(ctx: SearchContext, model: Path, tmp_path: Path) -> PipelineInputs:
    """The run's inputs for ``model`` (its own cache: the salt names the run's model)."""
    return PipelineInputs(
        model=load_spec(ModelSpec(path=str(model))),
        data=ctx.data,
        profile=ctx.merged,
        seed=ctx.config.seed,
        cache_dir=tmp_path / "cache",
        salt=ctx.baseline.salt,
    )


def test_a_new_stage_is_one_module_and_one_register_line(
    with_cluster: None, tmp_path: Path, model_files: dict[str, Path], tiny_data: Path
) -> None:
    run = tmp_path / "run"
    config = RunConfig(
        model=ModelSpec(path=str(model_files["bundle"])), data=str(tiny_data), targets=("cpu",)
    )
    baseline = prepare(config, run)
    # its probe ran at setup and is stored with the run
    assert baseline.stage_facts["cluster"] == {"weights": 6}
    ctx = SearchContext.open(run)
    assert ctx.facts.of("cluster") == {"weights": 6}
    assert STAGES["cluster"].probe_notes(ctx.facts.of("cluster")) == [
        "clustering: 6 weight tensor(s)"
    ]

    # the search draws it in its place (before the ONNX phase) ...
    space = DefaultSuggester(DRAW)
    candidate = suggest_candidate(space, ctx.merged, ctx.facts)
    assert "cluster.levels" in space.params
    assert [s.stage for s in candidate.steps][-2:] == ["cluster", "quantize"]
    assert Step("cluster", ClusterConfig(levels=4)) in candidate.steps
    assert candidate.describe() == "cluster 4 + fp32"

    # ... and the pipeline applies it: every weight of the exported model takes 4 values
    built = build(candidate, _inputs(ctx, model_files["bundle"], tmp_path), tmp_path / "t0")
    assert built.info["cluster.levels_used"] == 4
    graph = onnx.load(str(built.onnx_path)).graph
    weights = [numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("weight")]
    assert weights and all(len(np.unique(w)) <= 4 for w in weights)

    # a model it cannot handle fails it once; its policy switches it off for the study
    depthwise = save_bundle(
        zoo.mobilenet_small(width=8).eval(),
        tmp_path / "mobilenet.pt",
        arch="edgeopt.zoo:mobilenet_small",
        arch_kwargs={"width": 8},
        input_shape=SHAPE,
    )
    with pytest.raises(CandidateError) as failed:
        build(candidate, _inputs(ctx, depthwise, tmp_path / "other"), tmp_path / "t1")
    assert failed.value.stage == "cluster"
    study = optuna.load_study(study_name="edgeopt", storage=ctx.storage_url)
    assert disable_after_failure(study, "cluster", failed.value.reason, FailureKind.ERROR)
    runner = TrialRunner(ctx, study)
    try:
        facts = runner.facts()
    finally:
        runner.close()
    assert "cluster" in facts.disabled and not STAGES["cluster"].enabled(facts)
    space = DefaultSuggester(DRAW)
    assert Step("cluster", ClusterConfig()) in suggest_candidate(space, ctx.merged, facts).steps
    assert "cluster.levels" not in space.params
    assert disabled_notes(study.user_attrs) == [
        {
            "stage": "cluster",
            "title": "Weight clustering",
            "reason": "6 grouped convolution(s): not shared",
        }
    ]
