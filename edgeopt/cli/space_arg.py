"""``--space FILE`` and ``--enqueue FILE`` of ``edgeopt optimize``: the user's own search
space (else the config file's ``[space]`` table) and recipes, checked before any work."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from edgeopt.cli.options import Utf8Path

if TYPE_CHECKING:
    from edgeopt.config import RunConfig
    from edgeopt.profiles import Targets

F = TypeVar("F", bound=Callable[..., Any])

SPACE_HELP = (
    "TOML file narrowing the search space per stage param (default: [tool.edgeopt.space] in "
    "pyproject.toml or [space] in edgeopt.toml): a value (finetune.epochs = 4), a range "
    '(prune.ratio = {low = 0.3, high = 0.6}) or choices (quantize.mode = ["int8_static"]); '
    "qat = false switches a stage off."
)
ENQUEUE_HELP = (
    "TOML file of your own recipes ([[recipe]] tables: an optional name and stage params), "
    "run right after the baselines and marked as yours in the report."
)


def space_options(func: F) -> F:
    """``--space`` and ``--enqueue``, handed to the command as ``user_space=(space, enqueue)``."""

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        files = (kwargs.pop("space_file"), kwargs.pop("enqueue_file"))
        return func(*args, user_space=files, **kwargs)

    command = click.option(
        "--enqueue", "enqueue_file", type=Utf8Path(dir_okay=False), help=ENQUEUE_HELP
    )(command)
    command = click.option("--space", "space_file", type=Utf8Path(dir_okay=False), help=SPACE_HELP)(
        command
    )
    return command  # type: ignore[return-value]


def with_user_space(
    config: RunConfig, files: tuple[str | None, str | None], targets: Targets
) -> RunConfig:
    """``config`` with the user's space and recipes, checked against the stages' own
    declarations on the run's profile; ConfigError (exit 2) naming the first bad entry."""
    from edgeopt.check import project_space
    from edgeopt.search.strategy.user_space import (
        parse_recipes,
        parse_space,
        read_toml,
        space_table,
    )
    from edgeopt.stages import STAGES, ModelFacts

    space_file, enqueue_file = files
    # before the probe: every param some model may get (attention heads, ...) is known
    widest = {name: dict(stage.widest_facts) for name, stage in STAGES.items()}
    profile, facts = targets.merged, ModelFacts(onnx_input=False, stages=widest)
    found = (
        (space_table(read_toml(Path(space_file), "--space")), f"--space {space_file}")
        if space_file
        else project_space()
    )
    space = parse_space(found[0], found[1], profile, facts) if found else None
    recipes: tuple[dict[str, Any], ...] = ()
    if enqueue_file:
        doc = read_toml(Path(enqueue_file), "--enqueue")
        recipes = parse_recipes(doc, f"--enqueue {enqueue_file}", profile, facts, space)
    return dataclasses.replace(config, space=space or None, recipes=recipes)
