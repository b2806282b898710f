"""The labelled data of ``bench`` and ``check``, with the models it is scored on: an
``.npz`` (arrays in memory), or an image folder (``--data DIR``) read through the
preprocessing recipe the model carries, else the flags', else the default for its input
shape (said on stderr)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from edgeopt.check import project_recipe
from edgeopt.cli.options import ModelOptions


def load_models_and_data(
    data: str | None,
    models: Sequence[str],
    model_opts: ModelOptions,
    flags: Any,
    check: Callable[[Any], None] = lambda data: None,
    table: Any = None,
) -> tuple[Any, list[Any]]:
    """``(data, loaded models)``: ``data`` an ``edgeopt.data.ScoringData``, a
    ``FolderScoring`` (``data`` is a folder) or None; ``flags`` the command's
    ``RecipeFlags``, which apply to a folder only (ConfigError otherwise), over ``table``
    (the config file's ``[data]`` table; None: read from the nearest one, for a folder
    only, so that a project's table never stands in the way of an npz). ``check(data)``
    runs as soon as the data is open: before the models load for an npz, after for a folder
    (whose recipe depends on the model)."""
    from edgeopt.data import load_scoring_npz

    flags = folder_recipe_flags(data, flags, table)
    if data is not None and Path(data).is_dir():
        folder, loaded = _folder(Path(data), models, model_opts, flags)
        check(folder)
        return folder, loaded
    bundle = load_scoring_npz(data) if data else None
    check(bundle)
    return bundle, [model_opts.load(m, bundle) for m in models]


def folder_recipe_flags(data: str | None, flags: Any, table: Any = None) -> Any:
    """The preprocessing settings of a command reading ``data``: for an image folder, the
    flags over ``table`` (None: the nearest config file's ``[data]`` table); else none, and
    flags given are a ConfigError (they say how image files are read)."""
    from edgeopt.errors import ConfigError

    if data is not None and Path(data).is_dir():
        merged = flags.over(project_recipe() if table is None else table)
        merged.augmentation()  # a bad --augment: exit 2 before any work
        return merged
    if flags.any() or flags.augment is not None:
        raise ConfigError(
            f"{flags.flags()}: these say how image files are read, and --data is "
            + (f"no image folder ({data})" if data else "not given"),
            hint="drop them, or pass --data DIR (a folder of class folders of images)",
        )
    return flags


def _folder(
    root: Path, models: Sequence[str], model_opts: ModelOptions, flags: Any
) -> tuple[Any, list[Any]]:
    from edgeopt.data.folder import FolderSource
    from edgeopt.data.folder_scoring import FolderScoring
    from edgeopt.data.metadata import read_recipe
    from edgeopt.data.recipe_choice import choose_recipe

    loaded = [model_opts.load(m) for m in models]  # the shape comes from the model
    carried = [
        (name, read_recipe(m.onnx_path) if m.is_onnx else None)
        for name, m in zip(models, loaded, strict=True)
    ]
    chosen = choose_recipe(loaded[0].input_shape, carried, flags)
    click.echo(chosen.note(), err=True)
    return FolderScoring(FolderSource(root, chosen.recipe)), loaded


def echo_skipped_images(data: Any) -> None:
    """On stderr: the images of a folder that could not be read and were skipped."""
    from edgeopt.data.folder_scoring import FolderScoring

    if not isinstance(data, FolderScoring):
        return
    bad = data.source.bad_images
    if bad:
        first = ", ".join(f"{b.relpath} ({b.reason})" for b in bad[:3])
        click.echo(
            f"note: {len(bad)} image(s) of {data.source.root} could not be read and were "
            f"skipped: {first}" + (" ..." if len(bad) > 3 else ""),
            err=True,
        )
