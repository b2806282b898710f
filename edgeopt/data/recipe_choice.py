"""Which preprocessing recipe a command that reads an image folder uses: the one the model
carries (its ONNX metadata), else the one the flags give, else the default for the model's
input shape; flags that contradict the model's own recipe are refused, naming both.

``RecipeFlags`` holds the flags as typed (``--resize 256 --crop 224 --mean imagenet ...``) and
parses them here, so ``bench``, ``check`` and ``optimize`` read them the same way.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from edgeopt.data.augmentation import Augmentation
from edgeopt.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Channels,
    Named,
    Preprocess,
    default_resize,
)
from edgeopt.errors import ConfigError

FLAG_NAMES = {
    "resize": "--resize",
    "crop": "--crop",
    "mean": "--mean",
    "std": "--std",
    "channels": "--channel-order",
}
"""Recipe field -> the flag that sets it."""
SETTING_FLAGS = {**FLAG_NAMES, "augment": "--augment"}
"""Every image-folder setting -> its flag: the recipe's, and the training augmentation
(``optimize`` only; no part of the recipe, which the exported models carry)."""
TABLE_KEYS = {f: flag.removeprefix("--").replace("-", "_") for f, flag in SETTING_FLAGS.items()}
"""Setting -> its key in a config file's ``[data]`` table (``channel_order``)."""
_NAMED = {"imagenet": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}}


@dataclass(frozen=True)
class RecipeFlags:
    """The preprocessing flags as given (None: not given): ``resize`` ``"256"``, ``crop``
    ``"224"`` or ``"224x192"`` (height x width), ``mean``/``std`` ``"imagenet"`` or
    ``"0.5,0.5,0.5"``, ``channels`` ``rgb|bgr|gray``; and ``augment`` (``crop,flip`` ...), the
    training augmentation, which is no part of the recipe (``augmentation``)."""

    resize: str | None = None
    crop: str | None = None
    mean: str | None = None
    std: str | None = None
    channels: str | None = None
    augment: str | None = None
    origin: tuple[tuple[str, str], ...] = ()
    """``(field, where)`` for the values that came from a config table, not a flag
    (``where`` e.g. ``[tool.edgeopt.data] in /p/pyproject.toml``): messages name it."""

    def given(self) -> dict[str, Any]:
        """The parsed value of each flag given, by recipe field (ConfigError naming the flag
        for a value that does not parse)."""
        out: dict[str, Any] = {}
        if self.resize is not None:
            out["resize"] = _int(self.resize, self.name("resize"))
        if self.crop is not None:
            out["crop"] = _crop(self.crop, self.name("crop"))
        for field in ("mean", "std"):
            text = getattr(self, field)
            if text is not None:
                out[field] = _per_channel(text, field, self.name(field))
        if self.channels is not None:
            try:
                out["channels"] = Channels(self.channels.strip().lower())
            except ValueError:
                raise ConfigError(
                    f"{self.name('channels')} {self.channels!r} is not rgb, bgr or gray",
                    hint="e.g. --channel-order rgb",
                ) from None
        return out

    def any(self) -> bool:
        """Whether any preprocessing setting is given (``augment`` is none)."""
        return any(getattr(self, f) is not None for f in FLAG_NAMES)

    def augmentation(self) -> Augmentation | None:
        """The training augmentation given (None: not given); ConfigError naming the flag or
        table key for a value that is not one of the choices."""
        return Augmentation.parse(self.augment, self.name("augment")) if self.augment else None

    def name(self, field: str) -> str:
        """How a message names the setting of ``field``: its flag (``--mean``), or its key
        and table (``mean in [tool.edgeopt.data] in /p/pyproject.toml``)."""
        where = dict(self.origin).get(field)
        return f"{TABLE_KEYS[field]} in {where}" if where else SETTING_FLAGS[field]

    def setting(self, field: str) -> str:
        """The setting of ``field`` as given: ``--mean 0.1`` or ``mean = 0.1 in [data] in
        /p/edgeopt.toml``."""
        where = dict(self.origin).get(field)
        value = getattr(self, field)
        if where:
            return f"{TABLE_KEYS[field]} = {value} in {where}"
        return f"{SETTING_FLAGS[field]} {value}"

    def flags(self) -> str:
        """The settings given, as typed: ``--mean 0.1,0.1,0.1 --crop 32`` (a table's as
        ``crop = 32 in [data] in /p/edgeopt.toml``, separated by commas)."""
        shown = [self.setting(f) for f in SETTING_FLAGS if getattr(self, f)]
        return (", " if self.origin else " ").join(shown)

    def over(self, table: RecipeFlags) -> RecipeFlags:
        """These flags over ``table`` (a config file's): each field the flags leave unset
        comes from the table, with its origin."""
        values = {f: getattr(self, f) for f in SETTING_FLAGS}
        origin = dict(self.origin)
        for f in SETTING_FLAGS:
            if values[f] is None and getattr(table, f) is not None:
                values[f] = getattr(table, f)
                if f in dict(table.origin):
                    origin[f] = dict(table.origin)[f]
        return RecipeFlags(**values, origin=tuple(sorted(origin.items())))


@dataclass(frozen=True)
class ChosenRecipe:
    """The recipe a command uses and where it came from: ``metadata`` (the model carries
    it), ``flags``, or ``default`` (assumed from the input shape: the command says so)."""

    recipe: Preprocess
    source: str
    model: str
    given_by: str = "the flags"
    """Where the settings of a ``flags`` recipe came from (the flags and/or a table)."""

    def note(self) -> str:
        """One line for the output."""
        where = {
            "metadata": f"from the preprocessing metadata of {self.model}",
            "flags": f"from {self.given_by}",
            "default": (
                f"default for a {'x'.join(map(str, self.recipe.input_shape))} input: "
                f"{self.model} carries no preprocessing metadata; set it with "
                "--resize/--crop/--mean/--std/--channel-order"
            ),
        }[self.source]
        return f"preprocess: {self.recipe.describe()} ({where})"


def choose_recipe(
    input_shape: Sequence[int],
    carried: Sequence[tuple[str, Preprocess | None]],
    flags: RecipeFlags,
) -> ChosenRecipe:
    """The recipe for models taking ``input_shape``; ``carried`` pairs each model (as named
    on the command line) with the recipe its file carries (None: none). Models that carry
    different recipes, or a flag that contradicts the carried one, are a ConfigError naming
    both; the recipe must fit ``input_shape`` (``Preprocess.check``)."""
    stamped = [(name, r) for name, r in carried if r is not None]
    for (name_a, a), (name_b, b) in zip(stamped, stamped[1:], strict=False):
        if a != b:
            raise ConfigError(
                f"{name_a} and {name_b} carry different preprocessing "
                f"({a.describe()} vs {b.describe()})",
                hint="compare models that read their inputs the same way",
            )
    given = flags.given()
    first = carried[0][0] if carried else "the model"
    if stamped:
        name, recipe = stamped[0]
        for field, value in given.items():
            have = getattr(recipe, field)
            if not _same(value, have):
                raise ConfigError(
                    f"{flags.setting(field)} contradicts the "
                    f"preprocessing that {name} carries ({field} {_show(have)})",
                    hint=f"drop {flags.name(field)}: the model's metadata says how it reads "
                    "its inputs",
                )
        recipe.check(input_shape)
        return ChosenRecipe(recipe, "metadata", name)
    base = Preprocess.default_for(input_shape)
    if not given:
        return ChosenRecipe(base, "default", first)
    recipe = _override(base, given)
    recipe.check(input_shape)
    tables = sorted({where for field, where in flags.origin if field in given})
    from_flags = set(given) - {field for field, _ in flags.origin}
    by = " and ".join([*(["the flags"] if from_flags else []), *tables])
    return ChosenRecipe(recipe, "flags", first, by)


def _override(base: Preprocess, given: dict[str, Any]) -> Preprocess:
    """``base`` with the flags' fields; a crop without a resize gets the default resize, and
    the ImageNet name is kept only while mean and std are ImageNet's."""
    values = dict(given)
    if "crop" in values and "resize" not in values:
        values["resize"] = default_resize(values["crop"])
    channels = values.get("channels", base.channels)
    if Channels(channels).count != base.channels.count and not {"mean", "std"} & set(values):
        # a 3-channel default mean/std cannot serve gray (nor the reverse): let the recipe's
        # own check name the channel count against the model
        base = Preprocess.default_for((Channels(channels).count, *base.crop))
    mean, std = values.get("mean", base.mean), values.get("std", base.std)
    imagenet = (tuple(mean), tuple(std)) == (IMAGENET_MEAN, IMAGENET_STD)
    named = Named.IMAGENET if imagenet and Channels(channels) is not Channels.GRAY else None
    return replace(base, **values, named=named)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return bool(a == b)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _int(text: str, flag: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"{flag} must be a positive whole number, not {text!r}", hint=f"{flag} 256"
        )
    return value


def _crop(text: str, name: str = "--crop") -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if m is None or int(m[1]) < 1 or (m[2] is not None and int(m[2]) < 1):
        raise ConfigError(
            f"{name} must be N or HxW (positive whole numbers), not {text!r}",
            hint="e.g. --crop 224 or --crop 224x192",
        )
    h = int(m[1])
    return (h, int(m[2]) if m[2] is not None else h)


def _per_channel(text: str, field: str, name: str) -> tuple[float, ...]:
    key = text.strip().lower()
    if key in _NAMED:
        return _NAMED[key][field]
    try:
        values = tuple(float(v) for v in key.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(
            f"{name} must be 'imagenet' or numbers, one per channel, not {text!r}",
            hint=f"e.g. --{field} imagenet or --{field} 0.5,0.5,0.5",
        )
    return values


def table_flags(table: Mapping[str, Any], where: str, known: Sequence[str] = ()) -> RecipeFlags:
    """The recipe keys of a config file's ``[data]`` table (``resize``, ``crop``, ``mean``,
    ``std``, ``channel_order``; TOML numbers, strings or lists of numbers) and ``augment`` (a
    string, ``crop,flip``, as ``--augment``) as flags whose
    messages name ``where``. Any other key but ``known`` is a ConfigError with the closest
    known key."""
    fields = {key: field for field, key in TABLE_KEYS.items()}
    values: dict[str, str] = {}
    for key, value in table.items():
        if key in known:
            continue
        if key not in fields:
            choices = [*known, *fields]
            close = difflib.get_close_matches(key, choices, n=1)
            raise ConfigError(
                f"unknown key {key!r} in {where}",
                hint=(f"did you mean {close[0]!r}? " if close else "")
                + f"known keys: {', '.join(choices)}",
            )
        values[fields[key]] = _as_text(value, key, where, "x" if key == "crop" else ",")
    return RecipeFlags(**values, origin=tuple((f, where) for f in sorted(values)))


def _as_text(value: Any, key: str, where: str, sep: str) -> str:
    """A TOML value as the flag would be typed: ``[224, 192]`` -> ``224x192`` for crop,
    ``[0.5, 0.5, 0.5]`` -> ``0.5,0.5,0.5``."""
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, str | int | float) for v in items):
        raise ConfigError(
            f"{key} in {where} must be a number, a string or a list of numbers, not {value!r}"
        )
    if len(items) > 1 and any(isinstance(v, str) for v in items):
        raise ConfigError(f"{key} in {where} must be a list of numbers, not {value!r}")
    return sep.join(str(v) for v in items)
