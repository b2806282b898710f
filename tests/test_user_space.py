"""The user's own search space (``[space]``, ``--space FILE``) and recipes (``--enqueue FILE``):
checked against the stages' own declarations before any work, honoured by the sampler, the
expert seeds, the siblings and the promotions, recorded for a resume. Real Optuna studies in
temp SQLite files, real tiny runs through the command line."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from edgeopt.cli import main
from edgeopt.profiles import load_profile
from edgeopt.search.run.collect import load_run
from edgeopt.search.strategy.halving import history_key
from edgeopt.search.strategy.narrowed import NarrowedSampler, narrowed_grid
from edgeopt.search.strategy.samplers import SAMPLER_FACTORIES
from edgeopt.search.strategy.seeds import SEED_ATTR, SIBLING_ATTR
from edgeopt.search.strategy.space import baseline_params, grid_space, suggest_candidate
from edgeopt.search.strategy.user_space import RECIPE_ATTR, inside, parse_space, project
from edgeopt.search.study.lifecycle import _enqueue_next_promotion
from edgeopt.stages import ModelFacts

HISTORY = history_key()
SPACE = """
[space]
prune.ratio = {low = 0.3, high = 0.4}
finetune.epochs = 1
qat = false
quantize.mode = ["int8_static"]
"""
RECIPES = """
[[recipe]]
name = "mine"
prune.ratio = 0.35
finetune.epochs = 1
finetune.distill = false
quantize.mode = "int8_static"
"""


def _study(run: Path) -> optuna.Study:
    return optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run / 'study.db'}")


def _invoke(model: Path, data: Path, run: Path, *extra: object) -> object:
    args = ["optimize", model, "--data", data, "--target", "cpu", "--out", run, *extra]
    return CliRunner().invoke(main, [str(a) for a in args])


def _space(profile: str = "cpu", text: str = SPACE) -> dict:
    facts = ModelFacts(onnx_input=False)
    return parse_space(tomllib.loads(text)["space"], "test", load_profile(profile), facts)


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("prunee.ratio = 0.3", "unknown stage 'prunee'", "did you mean 'prune'?"),
        ("prune.ratoi = 0.3", "unknown param 'prune.ratoi'", "did you mean 'prune.ratio'?"),
        ("prune.ratio = {low = 0.3, high = 0.9}", "0.9 is outside the declared range", "[0, 0.7]"),
        ("prune.ratio = 0.33", "0.33 is off the declared step 0.05", "step 0.05"),
        ("prune.ratio = {low = 0.6, high = 0.3}", "low 0.6 is above high 0.3", "swap"),
        ('quantize.mode = ["int4"]', '"int4" is not among the declared choices', '"int8_static"'),
        ("qat.epochs = {low = 0, high = 2}", "a range must be a value or a list", "one of 0"),
        ("finetune = false", "cannot be switched off on its own", "qat = false"),
        ('finetune.epochs = "4"', "must be a number", "int in [1, 8]"),
    ],
)
def test_a_bad_space_is_refused_before_any_work(
    tmp_path: Path, model_files: dict, tiny_data: Path, text: str, message: str, hint: str
) -> None:
    space = tmp_path / "space.toml"
    space.write_text(f"[space]\n{text}\n")
    run = tmp_path / "run"
    result = _invoke(model_files["bundle_wide"], tiny_data, run, "--space", space)
    assert result.exit_code == 2, result.output
    assert message in result.output and hint in result.output
    assert not run.exists()  # before any set-up work


def test_a_bad_recipe_is_refused_before_any_work(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    space, recipes, run = tmp_path / "space.toml", tmp_path / "mine.toml", tmp_path / "run"
    space.write_text(SPACE)
    cases = {
        "[[recipe]]\nprune.ratoi = 0.3\n": "did you mean 'prune.ratio'?",
        "[[recipe]]\nprune.ratio = {low = 0.3, high = 0.4}\n": "must be one value",
        "[[recipe]]\nprune.ratio = 0.5\n": "prune.ratio = 0.5 is outside your space",
        "[recipe]\nprune.ratio = 0.3\n": "must hold [[recipe]] tables only",
    }
    for text, message in cases.items():
        recipes.write_text(text)
        args = ("--space", space, "--enqueue", recipes)
        result = _invoke(model_files["bundle_wide"], tiny_data, run, *args)
        assert result.exit_code == 2, result.output
        assert message in result.output
    assert not run.exists()


def test_the_config_files_space_table_is_read(
    tmp_path: Path, model_files: dict, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """[tool.edgeopt.space] in pyproject.toml, found as [tool.edgeopt] budgets are."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "pyproject.toml").write_text("[tool.edgeopt.space]\nprune.ratio = 0.9\n")
    monkeypatch.chdir(tmp_path)
    result = _invoke(model_files["bundle_wide"], tiny_data, tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "[tool.edgeopt.space] in" in result.output and "outside the declared" in result.output


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_the_sampler_draws_only_inside_the_space(tmp_path: Path, sampler: str) -> None:
    """A real study: the baselines (queued, outside the space) keep their params; every
    drawn trial lies inside it, its joint draw (multivariate TPE) included."""
    profile, facts = load_profile("cpu"), ModelFacts(onnx_input=False)
    space = _space()
    inner = SAMPLER_FACTORIES[sampler](0, dict)
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        sampler=NarrowedSampler(inner, space, 0),
        directions=["maximize", "minimize"],
    )
    for tag, params in baseline_params(profile, facts):
        study.enqueue_trial(params, user_attrs={"baseline": tag})
    for _ in range(14):
        trial = study.ask()
        candidate = suggest_candidate(trial, profile, facts)
        ratio = candidate.steps[0].config.ratio
        study.tell(trial, [ratio, float(trial.number % 3)])
    trials = study.get_trials()
    assert [t.params["quantize.mode"] for t in trials[:2]] == ["fp32", "int8_static"]
    drawn = trials[2:]
    assert all(inside(t.params, space) for t in drawn), [t.params for t in drawn]
    assert all(t.params["finetune.epochs"] == 1 and t.params["qat.epochs"] == 0 for t in drawn)
    assert len({t.params["prune.ratio"] for t in drawn}) >= 2  # a range, not one clamped end


def test_project_clamps_numbers_and_replaces_choices() -> None:
    space = _space()
    seed = {"prune.ratio": 0.7, "finetune.epochs": 5, "quantize.mode": "fp32", "qat.epochs": 2}
    assert project(seed, space) == {
        "prune.ratio": 0.4,
        "finetune.epochs": 1,
        "quantize.mode": "int8_static",
        "qat.epochs": 0,
    }


def test_a_run_stays_inside_the_space_runs_the_users_recipe_first_and_resumes(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    space, recipes, run = tmp_path / "space.toml", tmp_path / "mine.toml", tmp_path / "run"
    space.write_text(SPACE)
    recipes.write_text(RECIPES)
    flags = ("--space", space, "--enqueue", recipes, "--no-report")
    model = model_files["bundle_wide"]
    result = _invoke(model, tiny_data, run, "--trials", 5, *flags)
    assert result.exit_code in (0, 1), result.output
    trials = [t for t in _study(run).get_trials() if t.state != TrialState.WAITING]
    assert [t.user_attrs.get("baseline") for t in trials[:2]] == ["unchanged", "int8"]
    mine = trials[2]
    assert (
        mine.user_attrs[RECIPE_ATTR] == "mine"
        and "your recipe 'mine'" in (mine.user_attrs["describe"])
    )
    assert mine.params["prune.ratio"] == 0.35 and mine.params["finetune.distill"] is False
    # its by-hand int8 sibling is inside the space (its fp32 ones are not: never queued)
    assert trials[3].user_attrs[SIBLING_ATTR] == mine.number
    # the first expert seed (prune 0.5, 3 epochs) moved into the space
    seed = trials[4]
    assert SEED_ATTR in seed.user_attrs
    assert seed.params["prune.ratio"] == 0.4 and seed.params["finetune.epochs"] == 1
    space_table = json.loads((run / "run.json").read_text())["space"]
    assert space_table["prune.ratio"] == {"low": 0.3, "high": 0.4}
    # a resume keeps both: no second run of the recipe, and still inside the space
    result = _invoke(model, tiny_data, run, "--trials", 7, *flags)
    assert result.exit_code in (0, 1), result.output
    trials = [t for t in _study(run).get_trials() if t.state != TrialState.WAITING]
    assert len(trials) == 7
    assert [t.number for t in trials if RECIPE_ATTR in t.user_attrs] == [mine.number]
    for t in trials[2:]:
        assert inside(t.params, _space()), t.params
    records = {r["number"]: r for r in load_run(run)["trials"]}
    assert records[mine.number]["user_recipe"] == "mine"
    # a resume with another space (or without it) is refused, as other changed settings are
    space.write_text(SPACE.replace("high = 0.4", "high = 0.5"))
    for extra in (flags, ("--enqueue", recipes)):
        result = _invoke(model, tiny_data, run, "--trials", 8, *extra)
        assert result.exit_code == 2, result.output
        assert "space" in result.output


@pytest.mark.parametrize(("high", "queued"), [(3, [3]), (2, [])])
def test_a_promotion_is_moved_into_the_space_or_not_queued(
    tmp_path: Path, high: int, queued: list[int]
) -> None:
    """On a real study: a 2-epoch trial on the front earns 4 epochs; with epochs at most 3
    it is promoted to 3, with at most 2 (its own budget) to nothing."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}", directions=["maximize", "minimize"]
    )
    dists = {
        "prune.ratio": FloatDistribution(0.0, 0.7, step=0.05),
        "finetune.epochs": IntDistribution(1, 8),
        "finetune.schedule": CategoricalDistribution(["wsd", "cosine"]),
    }
    study.add_trial(
        optuna.trial.create_trial(
            params={"prune.ratio": 0.5, "finetune.epochs": 2, "finetune.schedule": "wsd"},
            distributions=dists,
            values=[0.9, 1.0],
            user_attrs={HISTORY: [0.8, 0.9], "val_accuracy": 0.9},
        )
    )
    space = {"finetune.epochs": {"low": 1, "high": high}}
    _enqueue_next_promotion(study, study.get_trials(), 0.99, space)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"]["finetune.epochs"] for t in waiting] == queued


def test_a_grid_search_walks_only_the_grid_inside_the_space(tmp_path: Path) -> None:
    profile, facts = load_profile("cpu"), ModelFacts(onnx_input=False)
    space = _space()
    grid = narrowed_grid(grid_space(profile, facts), space)
    assert grid["quantize.mode"] == ["int8_static"] and grid["finetune.epochs"] == [1]
    assert len(grid["prune.ratio"]) >= 2 and all(0.3 <= r <= 0.4 for r in grid["prune.ratio"])
    inner = SAMPLER_FACTORIES["grid"](0, lambda: grid)
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}", sampler=NarrowedSampler(inner, space, 0)
    )
    for _ in range(len(grid["prune.ratio"]) - 1):  # the last tell stops the study (optimize)
        trial = study.ask()
        suggest_candidate(trial, profile, facts)
        study.tell(trial, 0.0)
    assert all(inside(t.params, space) for t in study.get_trials())
