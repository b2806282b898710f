"""One truth per closed set: each table's names are the same wherever a layer lists them, and
each member builds what it names (a member added in one place only fails here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import optuna
import pytest

from edgeopt.budgets import BUDGETS
from edgeopt.cli.bench_cmd import bench
from edgeopt.cli.check_cmd import check
from edgeopt.cli.optimize_cmd import optimize
from edgeopt.config import SAMPLERS
from edgeopt.errors import ConfigError
from edgeopt.measure.runners import RUNNER_FACTORIES, Runner
from edgeopt.measure.task_metrics import FORMULAS, task_metric, task_metrics
from edgeopt.metrics import TASK_METRICS
from edgeopt.profiles import RUNNER_SPECS, shipped_profile_dir, validate_profile_file
from edgeopt.search.strategy.samplers import SAMPLER_FACTORIES


def _option(command: click.Command, name: str) -> click.Option:
    (opt,) = [p for p in command.params if isinstance(p, click.Option) and p.name == name]
    return opt


def _choices(command: click.Command, name: str) -> tuple[Any, ...]:
    kind = _option(command, name).type
    assert isinstance(kind, click.Choice)
    return tuple(kind.choices)


def test_every_sampler_is_a_choice_of_optimize_and_builds_a_seeded_sampler() -> None:
    assert tuple(SAMPLER_FACTORIES) == SAMPLERS
    assert _choices(optimize, "sampler") == SAMPLERS
    for name, factory in SAMPLER_FACTORIES.items():
        sampler = factory(7, lambda: {"prune.ratio": [0.0, 0.5]})
        assert isinstance(sampler, optuna.samplers.BaseSampler), name


def test_every_task_metric_is_a_choice_of_each_metric_option_and_has_a_formula() -> None:
    names = tuple(TASK_METRICS)
    assert tuple(FORMULAS) == names
    for command in (optimize, check, bench):
        assert _choices(command, "metric") == names, command.name
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    y = np.array([0, 1, 2, 1])
    values = task_metrics(logits, y)
    assert tuple(values) == names
    for name in names:
        assert 0.0 <= task_metric(name, logits, y) == values[name] <= 1.0, name


def _flags(command: click.Command) -> set[str]:
    return {o for p in command.params if isinstance(p, click.Option) for o in p.opts}


def test_every_budget_is_a_check_flag_and_every_searchable_one_an_optimize_flag() -> None:
    for key, spec in BUDGETS.items():
        flag = "--" + key.replace("_", "-")
        assert flag in _flags(check), flag
        # the search evaluates a budget as an Optuna constraint: then optimize offers it
        assert (spec.constraint is not None) == (spec.search_help is not None), key
        assert (flag in _flags(optimize)) == (spec.search_help is not None), flag
        if spec.search_help is not None:
            assert _option(optimize, key).help == spec.search_help
        assert _option(check, key).help == spec.help


# the smallest [runner] table of each kind (a kind without one here fails the test below)
RUNNER_EXAMPLES = {"local": "", "ssh": 'host = "board"\n'}


def _profile_with_runner(tmp_path: Path, table: str) -> Any:
    base = (shipped_profile_dir() / "host-cpu.toml").read_text()
    path = tmp_path / "p.toml"
    path.write_text(base + "\n[runner]\n" + table)
    return validate_profile_file(path)


def test_every_runner_kind_parses_its_own_spec_and_builds_its_runner(tmp_path: Path) -> None:
    assert tuple(RUNNER_FACTORIES) == tuple(RUNNER_SPECS) == tuple(RUNNER_EXAMPLES)
    for kind, spec_type in RUNNER_SPECS.items():
        assert spec_type.kind == kind
        spec = _profile_with_runner(tmp_path, f'kind = "{kind}"\n' + RUNNER_EXAMPLES[kind]).runner
        assert type(spec) is spec_type, kind
        runner = RUNNER_FACTORIES[kind](spec)  # builds without reaching any device
        assert isinstance(runner, Runner), kind
        runner.close()
        for other, other_type in RUNNER_SPECS.items():
            for key in other_type.KEYS if other != kind else ():
                with pytest.raises(ConfigError) as exc:
                    _profile_with_runner(tmp_path, f'kind = "{kind}"\n{key} = "x"\n')
                assert f'runner.{key}: only for kind = "{other}"' in exc.value.message
