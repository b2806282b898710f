"""The user's own search space and recipes: ``[space]`` / ``--space FILE`` and ``--enqueue FILE``.

A space names stage params by their Optuna names, as a TOML table of stage tables::

    [space]                                  # [tool.edgeopt.space] in pyproject.toml
    prune.ratio = {low = 0.3, high = 0.6}    # a range
    qat = false                              # the stage at its identity: never QAT
    quantize.mode = ["int8_static"]          # choices (one: a fixed value)
    finetune.epochs = 4                      # a fixed value

It is checked against what the stages themselves declare: ``Stage.suggest`` is run with a
recording suggester (``declared_params``), so an unknown stage or param, a value off the
declared range, step or choices, or a low above its high is a ``ConfigError`` before any
search work. Recipes (``[[recipe]]`` tables, each a fixed value per param and an optional
``name``) are checked the same way and must lie inside the space.

Stored as data in ``run.json``: ``{param: {"low", "high"} | {"choices": [...]}}``; nothing
here imports optuna (the sampler that honours it is ``narrowed``).
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.errors import ConfigError
from edgeopt.search.strategy.space import params_with
from edgeopt.stages import STAGES, ModelFacts

if TYPE_CHECKING:
    from edgeopt.profiles import HardwareProfile

EXAMPLE = 'e.g. prune.ratio = {low = 0.3, high = 0.6}, qat = false, quantize.mode = ["int8_static"]'
RECIPE_ATTR = "user_recipe"
"""User attr naming the user's recipe (``--enqueue``) a trial was queued as."""


@dataclass(frozen=True)
class Declared:
    """One param as a stage's ``suggest`` declares it: a float, an int or a choice."""

    kind: str  # "float" | "int" | "categorical"
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def probes(self) -> list[Any]:
        """Answers that reach every branch the value may open (each choice; both ends)."""
        if self.kind == "categorical":
            return list(self.choices)
        return [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "categorical":
            return "one of " + ", ".join(_toml(c) for c in self.choices)
        step = f" step {self.step:g}" if self.step else ""
        return f"{self.kind} in [{self.low:g}, {self.high:g}]{step}"


class _Recorder:
    """A ``Suggester`` that answers from ``answers`` (else a middle value) and records how
    each param is declared."""

    def __init__(self, answers: Mapping[str, Any]) -> None:
        self.answers = dict(answers)
        self.seen: dict[str, Declared] = {}

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        self.seen[name] = Declared("float", low, high, step, log)
        return float(self.answers.get(name, low if step else (low + high) / 2))

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        self.seen[name] = Declared("int", low, high, step, log)
        return int(self.answers.get(name, low))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.seen[name] = Declared("categorical", choices=tuple(choices))
        return self.answers.get(name, choices[0])


def declared_params(profile: HardwareProfile, facts: ModelFacts) -> dict[str, dict[str, Declared]]:
    """``{stage: {param: Declared}}``: every param each stage's ``suggest`` may ask for under
    ``profile``, found by answering each newly seen param with each of its probes in turn
    (so a param asked only after another's value, e.g. ``qat.lr`` after ``qat.epochs`` > 0,
    is found too)."""
    out: dict[str, dict[str, Declared]] = {}
    for stage in STAGES.values():
        found: dict[str, Declared] = {}
        pending: list[dict[str, Any]] = [{}]
        while pending:
            answers = pending.pop()
            rec = _Recorder(answers)
            try:
                stage.suggest(rec, profile, facts)
            except ConfigError:
                continue  # a combination the stage's config refuses: nothing new there
            for name, decl in rec.seen.items():
                if name not in found:
                    found[name] = decl
                    pending += [{**answers, name: v} for v in decl.probes()]
        out[stage.name] = found
    return out


def parse_space(
    table: Any, where: str, profile: HardwareProfile, facts: ModelFacts
) -> dict[str, dict[str, Any]]:
    """The user's space table (``where`` names it in errors) as stored: ``{param: {"low",
    "high"} | {"choices": [...]}}``; ConfigError naming the first bad key or value."""
    declared = declared_params(profile, facts)
    out: dict[str, dict[str, Any]] = {}
    for stage_name, value in _table(table, where).items():
        params = _stage_params(stage_name, declared, where)
        if isinstance(value, bool):
            out.update(_switch(stage_name, value, profile, where))
            continue
        if not isinstance(value, dict):
            raise ConfigError(
                f"{stage_name} in {where} must be a table of its params (or false)",
                hint=EXAMPLE,
            )
        for key, spec in value.items():
            name = f"{stage_name}.{key}"
            out[name] = _narrow(name, spec, _param(name, params, where), where)
    return out


def _table(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table", hint=EXAMPLE)
    return table


def _stage_params(
    name: str, declared: Mapping[str, dict[str, Declared]], where: str
) -> dict[str, Declared]:
    if name not in declared:
        raise ConfigError(f"unknown stage {name!r} in {where}", hint=_did_you_mean(name, declared))
    return declared[name]


def _param(name: str, params: Mapping[str, Declared], where: str) -> Declared:
    if name not in params:
        raise ConfigError(f"unknown param {name!r} in {where}", hint=_did_you_mean(name, params))
    return params[name]


def _did_you_mean(name: str, known: Sequence[str] | Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return (f"did you mean {close[0]!r}? " if close else "") + f"known: {', '.join(known)}"


def _switch(stage: str, on: bool, profile: HardwareProfile, where: str) -> dict[str, Any]:
    """``stage = false``: every param of its identity fixed (the stage never applies)."""
    identity = STAGES[stage].identity_params(profile)
    if on or not identity:
        reason = (
            "give a table of its params"
            if on
            else "it cannot be switched off on its own (it runs only after the stage it follows)"
        )
        raise ConfigError(f"{stage} = {_toml(on)} in {where}: {reason}", hint=EXAMPLE)
    return {k: {"choices": [v]} for k, v in identity.items()}


def _narrow(name: str, spec: Any, decl: Declared, where: str) -> dict[str, Any]:
    """One param's narrowing, checked against its declaration."""
    label = f"{name} in {where}"
    if isinstance(spec, dict):
        if decl.kind == "categorical" or set(spec) != {"low", "high"}:
            what = "a value or a list of choices" if decl.kind == "categorical" else "{low, high}"
            hint = f"{name} is {decl.describe()}"
            raise ConfigError(f"{label}: a range must be {what}", hint=hint)
        low, high = (_number(f"{name}.{k} in {where}", spec[k], decl) for k in ("low", "high"))
        if low > high:
            raise ConfigError(
                f"{label}: low {low:g} is above high {high:g}", hint="swap them, or give one value"
            )
        return {"low": low, "high": high}
    values = spec if isinstance(spec, list) else [spec]
    if not values:
        raise ConfigError(f"{label}: an empty list allows nothing", hint=decl.describe())
    if decl.kind == "categorical":
        for v in values:
            if not any(v == c and type(v) is type(c) for c in decl.choices):
                raise ConfigError(
                    f"{label}: {_toml(v)} is not among the declared choices",
                    hint=f"{name} is {decl.describe()}",
                )
        return {"choices": list(values)}
    return {"choices": [_number(label, v, decl) for v in values]}


def _number(label: str, value: Any, decl: Declared) -> float:
    """A numeric value inside ``decl``'s range and on its step."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and decl.kind == "int":
        ok = isinstance(value, int)
    if not ok:
        raise ConfigError(f"{label} must be a number, got {_toml(value)}", hint=decl.describe())
    if not decl.low - 1e-9 <= value <= decl.high + 1e-9:
        raise ConfigError(
            f"{label}: {value:g} is outside the declared range [{decl.low:g}, {decl.high:g}]",
            hint=f"{label.split(' ')[0]} is {decl.describe()}",
        )
    if decl.step:
        steps = (value - decl.low) / decl.step
        if abs(steps - round(steps)) > 1e-6:
            raise ConfigError(
                f"{label}: {value:g} is off the declared step {decl.step:g}",
                hint=f"{label.split(' ')[0]} is {decl.describe()}",
            )
    return value


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


def allows(space: Mapping[str, Mapping[str, Any]], name: str, value: Any) -> bool:
    """Whether ``value`` of param ``name`` lies inside ``space`` (unnarrowed: always)."""
    spec = space.get(name)
    if spec is None:
        return True
    if "choices" in spec:
        return any(value == c and type(value) is type(c) for c in spec["choices"]) or (
            isinstance(value, float) and value in spec["choices"]
        )
    return spec["low"] - 1e-9 <= value <= spec["high"] + 1e-9


def inside(params: Mapping[str, Any], space: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether every one of ``params`` lies inside ``space``."""
    return all(allows(space, k, v) for k, v in params.items())


def project(params: Mapping[str, Any], space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``params`` moved into ``space``: a number clamped to its range (or the nearest of its
    choices), any other value outside replaced by the first of its choices."""
    out = dict(params)
    for name, value in params.items():
        spec = space.get(name)
        if spec is None or allows(space, name, value):
            continue
        if "choices" not in spec:
            out[name] = min(max(value, spec["low"]), spec["high"])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers = [c for c in spec["choices"] if not isinstance(c, bool)]
            out[name] = min(numbers, key=lambda c: abs(c - value), default=spec["choices"][0])
        else:
            out[name] = spec["choices"][0]
    return out


def parse_recipes(
    doc: Any,
    where: str,
    profile: HardwareProfile,
    facts: ModelFacts,
    space: Mapping[str, Mapping[str, Any]] | None,
) -> tuple[dict[str, Any], ...]:
    """``[[recipe]]`` tables as stored: ``{"tag", "params"}``, params a fixed value each
    (unnamed stages at their identity, moved into ``space``); ConfigError for a bad one."""
    recipes = doc.get("recipe") if isinstance(doc, dict) else None
    if not isinstance(recipes, list) or not recipes or set(doc) != {"recipe"}:
        raise ConfigError(
            f"{where} must hold [[recipe]] tables only",
            hint='e.g. [[recipe]] name = "mine" prune.ratio = 0.5 finetune.epochs = 4',
        )
    out = []
    for i, recipe in enumerate(recipes, 1):
        label = f"[[recipe]] {i} in {where}"
        table = dict(_table(recipe, label))
        name = table.pop("name", f"recipe {i}")
        fixed = parse_space(table, label, profile, facts)
        params: dict[str, Any] = {}
        for key, spec in fixed.items():
            if len(spec.get("choices", ())) != 1:
                raise ConfigError(f"{label}: {key} must be one value", hint=f"e.g. {key} = ...")
            params[key] = spec["choices"][0]
            if space and not allows(space, key, params[key]):
                raise ConfigError(
                    f"{label}: {key} = {_toml(params[key])} is outside your space",
                    hint="widen the space or change the recipe",
                )
        full = project(params_with(profile), space or {})
        out.append({"tag": str(name), "params": {**full, **params}})
    return tuple(out)


def read_toml(path: Path, option: str) -> dict[str, Any]:
    """A TOML file named by ``option``; ConfigError when it cannot be read."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{option} {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{option} {path} is not valid TOML: {exc}") from exc


def space_table(doc: Mapping[str, Any]) -> Any:
    """A ``--space`` file's table: its ``[space]`` table, else the file itself."""
    return doc["space"] if set(doc) == {"space"} else dict(doc)
