"""Options shared by several commands, and the helpers that turn them into library inputs."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from edgeopt.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def model_options(func: F) -> F:
    """--arch, --arch-kwargs, --input-shape, --trust-pickle."""
    for opt in reversed(
        [
            click.option(
                "--arch",
                metavar="MODULE:CALLABLE",
                help="Builds the architecture for a state_dict file.",
            ),
            click.option(
                "--arch-kwargs", metavar="JSON", help="Keyword arguments for --arch, as JSON."
            ),
            click.option(
                "--input-shape",
                metavar="C,H,W",
                help="One sample's shape without batch, when the file does not record it.",
            ),
            click.option(
                "--trust-pickle",
                is_flag=True,
                help="Allow loading a full pickled model (runs code from the file).",
            ),
        ]
    ):
        func = opt(func)
    return func


@dataclass(frozen=True)
class ModelOptions:
    """The values of ``model_options``, for commands that only load models with them."""

    arch: str | None
    arch_kwargs: str | None
    input_shape: str | None
    trust_pickle: bool

    def load(self, model: str) -> Any:
        """Load ``model`` with these options; returns an ``edgeopt.loading.LoadedModel``."""
        return load_model_from_options(
            model, self.arch, self.arch_kwargs, self.input_shape, self.trust_pickle
        )


def packed_model_options(func: F) -> F:
    """``model_options``, passed to the command as one ``model_opts: ModelOptions``."""

    @functools.wraps(func)
    def command(
        *args: Any,
        arch: str | None,
        arch_kwargs: str | None,
        input_shape: str | None,
        trust_pickle: bool,
        **kwargs: Any,
    ) -> Any:
        opts = ModelOptions(arch, arch_kwargs, input_shape, trust_pickle)
        return func(*args, model_opts=opts, **kwargs)

    return model_options(command)  # type: ignore[arg-type]


def budget_options(func: F) -> F:
    """One ``--max-...``/``--min-...`` option per budget of ``edgeopt.budgets.BUDGETS``, passed
    to the command as one ``budgets: dict[str, Any]`` (unset ones None; relative budgets as
    the text given, e.g. ``5%``)."""
    from edgeopt.budgets import BUDGETS

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        budgets = {key: kwargs.pop(key) for key in BUDGETS}
        return func(*args, budgets=budgets, **kwargs)

    for spec in reversed(BUDGETS.values()):
        flag = "--" + spec.key.replace("_", "-")
        command = click.option(flag, type=str if spec.relative else float, help=spec.help)(command)
    return command  # type: ignore[return-value]


def load_model_from_options(
    model: str,
    arch: str | None,
    arch_kwargs: str | None,
    input_shape: str | None,
    trust_pickle: bool,
) -> Any:
    """Load MODEL with the shared options; returns an ``edgeopt.loading.LoadedModel``."""
    from edgeopt.loading import load_model, parse_shape

    kwargs = parse_arch_kwargs(arch_kwargs)
    shape = parse_shape(input_shape) if input_shape else None
    return load_model(
        Path(model), arch=arch, arch_kwargs=kwargs, input_shape=shape, trust_pickle=trust_pickle
    )


def parse_arch_kwargs(text: str | None) -> dict[str, Any]:
    """Parse ``--arch-kwargs`` JSON into a dict (empty when not given)."""
    if not text:
        return {}
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"--arch-kwargs is not valid JSON: {exc.msg}",
            hint="e.g. --arch-kwargs '{\"num_classes\": 10}'",
        ) from exc
    if not isinstance(kwargs, dict):
        raise ConfigError("--arch-kwargs must be a JSON object")
    return kwargs


def parse_int_list(text: str, option: str) -> list[int]:
    """Parse ``"1,2"`` into ``[1, 2]`` (positive integers)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{option} expects positive integers like 1,2; got {text!r}")
    return values
