"""Options shared by several commands, and the helpers that turn them into library inputs."""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import click

from edgeopt.budgets import BUDGETS
from edgeopt.errors import ConfigError
from edgeopt.metrics import DEFAULT_TASK_METRIC, TASK_METRICS

F = TypeVar("F", bound=Callable[..., Any])


def model_options(func: F) -> F:
    """--arch, --arch-kwargs, --input-shape, --trust-pickle, --trust-arch."""
    for opt in reversed(
        [
            click.option(
                "--arch",
                metavar="MODULE:CALLABLE",
                help="Builds the architecture for a state_dict file, or instead of the one a "
                "bundle records (imports and runs MODULE).",
            ),
            click.option(
                "--arch-kwargs",
                metavar="JSON",
                help="Keyword arguments for --arch, as JSON (with a bundle: override the "
                "recorded ones).",
            ),
            click.option(
                "--input-shape",
                metavar="C,H,W|NAME=DIMS[:DTYPE]",
                multiple=True,
                help="One sample's shape without batch, when the file does not record it; "
                "for a model with several inputs, once per input: NAME=DIMS[:DTYPE] (DTYPE "
                "float32, int64 or int32), e.g. input_ids=32:int64.",
            ),
            click.option(
                "--trust-pickle",
                is_flag=True,
                help="Allow loading a full pickled model, or a .pt2 with pickled payloads "
                "(runs code from the file).",
            ),
            click.option(
                "--trust-arch",
                is_flag=True,
                help="Build the architecture a bundle records even outside edgeopt.zoo "
                "(imports and runs the module the file names).",
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
    input_shape: tuple[str, ...]
    trust_pickle: bool
    trust_arch: bool = False

    def load(self, model: str, data: Any = None) -> Any:
        """Load ``model`` with these options; returns an ``edgeopt.loading.LoadedModel``.

        ``data`` (an ``edgeopt.data.DataBundle``, ``ScoringData`` or None) gives the input
        shape of a file that records none when ``--input-shape`` is not given, and says so on
        stderr."""
        held = getattr(data, "inputs", None)  # several inputs: they name the model's
        loaded = load_model_from_options(
            model,
            self.arch,
            self.arch_kwargs,
            self.input_shape,
            self.trust_pickle,
            trust_arch=self.trust_arch,
            data_shape=data.input_shape if data is not None and not held else None,
            data_inputs=held,
        )
        echo_shape_source(loaded)
        return loaded


def echo_shape_source(loaded: Any) -> None:
    """Say on stderr when a model's input shape was taken from ``--data``."""
    if loaded.shape_from_data:
        shape = ",".join(str(d) for d in loaded.input_shape)
        click.echo(f"input shape {shape} taken from --data", err=True)


TARGET_HELP = "Profile(s), comma-separated: {profiles}; or a TOML file."


class TargetOption(click.Option):
    """A ``--target`` option whose help lists the shipped profiles and their aliases, read
    from the shipped profile files when the help is shown (and only then)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        if self.help is not None and "{profiles}" in self.help:
            self.help = self.help.replace("{profiles}", shipped_profiles_text())
        return super().get_help_record(ctx)


def shipped_profiles_text() -> str:
    """``"coral-edgetpu-usb (edgetpu, tpu), ..."``: every shipped profile with its aliases."""
    from edgeopt.errors import EdgeoptError
    from edgeopt.profiles import list_profiles

    try:
        profiles = list_profiles()
    except EdgeoptError:
        return "see 'edgeopt profiles list'"
    return ", ".join(
        f"{p.name} ({', '.join(p.aliases)})" if p.aliases else p.name for p in profiles
    )


class Utf8Path(click.Path):
    """A ``click.Path`` whose name must be valid UTF-8: a run records its paths in run.json,
    the study and the ONNX files' metadata, none of which can hold a stray byte (it failed
    deep in the export, after the run directory was half made)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = os.fsdecode(value) if isinstance(value, bytes) else str(value)
        try:
            os.path.abspath(text).encode("utf-8")  # the run records it absolute
        except UnicodeEncodeError:
            shown = os.fsencode(os.path.abspath(text)).decode("utf-8", "backslashreplace")
            self.fail(
                f"{shown} is not valid UTF-8 (a byte from another encoding); rename it, or "
                "pass a link to it whose name is UTF-8",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


def packed_model_options(func: F) -> F:
    """``model_options``, passed to the command as one ``model_opts: ModelOptions``."""

    @functools.wraps(func)
    def command(
        *args: Any,
        arch: str | None,
        arch_kwargs: str | None,
        input_shape: tuple[str, ...],
        trust_pickle: bool,
        trust_arch: bool,
        **kwargs: Any,
    ) -> Any:
        opts = ModelOptions(arch, arch_kwargs, input_shape, trust_pickle, trust_arch)
        return func(*args, model_opts=opts, **kwargs)

    return model_options(command)  # type: ignore[arg-type]


def preprocess_options(func: F) -> F:
    """--resize, --crop, --mean, --std, --channel-order: how image files become model inputs
    (``--data DIR``), passed to the command as one ``recipe_flags``
    (``edgeopt.data.recipe_choice.RecipeFlags``, each flag as typed or None)."""

    @functools.wraps(func)
    def command(
        *args: Any,
        resize: str | None,
        crop: str | None,
        mean: str | None,
        std: str | None,
        channel_order: str | None,
        **kwargs: Any,
    ) -> Any:
        from edgeopt.data.recipe_choice import RecipeFlags

        flags = RecipeFlags(resize, crop, mean, std, channel_order)
        return func(*args, recipe_flags=flags, **kwargs)

    for opt in reversed(
        [
            click.option(
                "--resize",
                metavar="N",
                help="--data DIR: resize the shorter side of each image to N pixels "
                "(default: crop / 0.875).",
            ),
            click.option(
                "--crop",
                metavar="N|HxW",
                help="--data DIR: center crop (default: the model's input height x width).",
            ),
            click.option(
                "--mean",
                metavar="imagenet|A,B,C",
                help="--data DIR: per-channel mean subtracted after scaling to 0..1 "
                "(default: imagenet for 3 channels, 0.5 for 1).",
            ),
            click.option(
                "--std",
                metavar="imagenet|A,B,C",
                help="--data DIR: per-channel std divided by (default: as --mean).",
            ),
            click.option(
                "--channel-order",
                type=click.Choice(("rgb", "bgr", "gray")),
                help="--data DIR: channel order of the model input (default: rgb for 3 "
                "channels, gray for 1).",
            ),
        ]
    ):
        command = opt(command)
    return command  # type: ignore[return-value]


def augment_option(func: F) -> F:
    """--augment (``optimize``; below ``preprocess_options``): the training augmentation of an
    image folder's fine-tunes, set on the ``recipe_flags`` as typed (checked with them)."""

    @functools.wraps(func)
    def command(*args: Any, augment: str | None, recipe_flags: Any, **kwargs: Any) -> Any:
        flags = replace(recipe_flags, augment=augment)
        return func(*args, recipe_flags=flags, **kwargs)

    return click.option(  # type: ignore[return-value]
        "--augment",
        metavar="crop,flip|crop|flip|none",
        help="--data DIR: what fine-tuning does to its training images on top of the "
        "noise: random resized crop (35-100 %% of the area, aspect 3/4-4/3) and/or horizontal "
        "flip (default crop,flip). Never applied to scoring, nor part of the exported "
        "preprocessing.",
    )(command)


def budget_options(func: F) -> F:
    """One ``--max-...``/``--min-...`` option per budget of ``edgeopt.budgets.BUDGETS``, passed
    to the command as one ``budgets: dict[str, Any]`` (unset ones None; relative budgets as
    the text given, e.g. ``5%``): ``edgeopt check``'s flags."""
    return _budget_flags(func, search=False)


def search_budget_options(func: F) -> F:
    """``budget_options`` for ``edgeopt optimize``: the budgets the search evaluates (those
    with a ``search_help``), each a number, with the search's help text."""
    return _budget_flags(func, search=True)


def _budget_flags(func: F, *, search: bool) -> F:
    specs = [s for s in BUDGETS.values() if s.search_help is not None or not search]

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        budgets = {spec.key: kwargs.pop(spec.key) for spec in specs}
        return func(*args, budgets=budgets, **kwargs)

    for spec in reversed(specs):
        flag = "--" + spec.key.replace("_", "-")
        kind = float if search or not spec.relative else str
        command = click.option(flag, type=kind, help=spec.search_help if search else spec.help)(
            command
        )
    return command  # type: ignore[return-value]


def metric_option(help: str, *, default: str | None = DEFAULT_TASK_METRIC) -> Callable[[F], F]:
    """``--metric``: one of ``edgeopt.metrics.TASK_METRICS``; ``help`` says what it does in
    this command, ``default`` None leaves it unset (``check`` then reads its config file)."""
    return click.option(
        "--metric",
        type=click.Choice(tuple(TASK_METRICS)),
        default=default,
        show_default=default is not None,
        help=help,
    )


def seq_lens_option(what: str) -> Callable[[F], F]:
    """``--seq-lens 16,32``: the sequence lengths a text model is also timed at; ``what``
    says what this command does with them (parsed by ``edgeopt.seq_lens.parse_seq_lens``)."""
    return click.option(
        "--seq-lens",
        "seq_lens",
        help="Sequence lengths, e.g. 16,32,64, a text model is also timed at (synthetic "
        f"inputs of each length); {what}",
    )


def load_model_from_options(
    model: str,
    arch: str | None,
    arch_kwargs: str | None,
    input_shape: tuple[str, ...],
    trust_pickle: bool,
    *,
    trust_arch: bool = False,
    data_shape: tuple[int, ...] | None = None,
    data_inputs: Any = None,
) -> Any:
    """Load MODEL with the shared options; returns an ``edgeopt.loading.LoadedModel``
    (``data_shape``, ``data_inputs``: see ``edgeopt.loading.load_model``)."""
    from edgeopt.inputs import parse_input_flags
    from edgeopt.loading import load_model

    kwargs = parse_arch_kwargs(arch_kwargs)
    given = parse_input_flags(input_shape)
    loaded = load_model(
        Path(model),
        arch=arch,
        arch_kwargs=kwargs,
        input_shape=given if isinstance(given, tuple) else None,
        inputs=given if not isinstance(given, tuple) else None,
        trust_pickle=trust_pickle,
        trust_arch=trust_arch,
        data_shape=data_shape,
        data_inputs=data_inputs,
    )
    return loaded


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


def parse_thread_counts(text: str, option: str = "--threads") -> list[int]:
    """``parse_int_list`` for thread counts, each at most ``max_threads()``: far more threads
    than cores only oversubscribes them (100000 ONNX Runtime threads run for minutes)."""
    values = parse_int_list(text, option)
    limit = max_threads()
    if max(values) > limit:
        raise ConfigError(
            f"{option} {max(values)} is more than {limit} threads (4x the "
            f"{os.cpu_count() or 1} CPUs of this machine)",
            hint=f"pass at most {option} {limit}",
        )
    return values


def max_threads() -> int:
    """The largest thread count edgeopt runs: 4x this machine's CPUs."""
    return 4 * (os.cpu_count() or 1)


MAX_TIME_BUDGET_S = 3600.0
"""The longest ``--time-budget``: an hour of timing per run (the timer's own deadlines are
derived from it, and a huge one overflows them)."""


def check_time_budget(seconds: float, option: str = "--time-budget") -> None:
    """ConfigError unless ``seconds`` is a positive, finite number of seconds up to
    ``MAX_TIME_BUDGET_S`` (NaN would stall the timer, infinity never end it)."""
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(
            f"{option} must be a positive number of seconds, got {seconds}",
            hint=f"e.g. {option} 5",
        )
    if seconds > MAX_TIME_BUDGET_S:
        raise ConfigError(
            f"{option} must be at most {MAX_TIME_BUDGET_S:.0f} seconds, got {seconds:g}",
            hint=f"e.g. {option} 5",
        )
