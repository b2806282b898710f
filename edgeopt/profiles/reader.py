"""Strict reading of one TOML table: allowed keys, typed values, and where each number came from.

The value checks return the value (normalised) when it is valid and None when it is not, so a
:class:`Reader` can name the key path and what was expected in one error.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from edgeopt.errors import ConfigError
from edgeopt.profiles.schema import SOURCE_KINDS, ValueSource

_T = TypeVar("_T")
Check = Callable[[Any], _T | None]

POS_NUM = "a positive number"
NONNEG_NUM = "a number >= 0"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Reader:
    """Reads one TOML table, checking keys against an allowed set and values against types.

    ``prov`` collects the :class:`ValueSource` of every number read (by key path); ``sources``
    is the file's ``[sources]`` table, which every ``src`` must name.
    """

    def __init__(
        self,
        file: str,
        path: str,
        data: Any,
        allowed: Iterable[str],
        prov: dict[str, ValueSource],
        sources: Mapping[str, str],
    ) -> None:
        self.file, self.path, self.prov, self.sources = file, path, prov, sources
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {path}: expected a table, got {data!r}")
        self.data = data
        self.allowed = list(allowed)
        for key in data:
            if key not in self.allowed:
                raise ConfigError(
                    f"{file}: {self.key_path(key)}: unknown key '{key}'"
                    f"{did_you_mean(key, self.allowed)}",
                    hint=f"valid keys in [{path or 'top level'}]: {', '.join(self.allowed)}",
                )

    def key_path(self, key: str) -> str:
        """The dotted path of ``key`` in this table (as error messages name it)."""
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        """Whether the table gives ``key``."""
        return key in self.data

    def get(self, key: str, check: Check[_T], expected: str, *, default: Any = ...) -> _T:
        """The value at ``key`` after ``check``; ``default`` when absent (required without).

        A value may be wrapped as ``{ v = ..., kind = ..., src = ..., note = ... }``; its source
        is recorded in ``prov``. A bare number is recorded as ``unstated``.
        """
        path = self.key_path(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self.file}: {path}: missing required key ({expected})")
            return default  # type: ignore[no-any-return]
        raw = self.data[key]
        if isinstance(raw, dict) and "v" in raw:
            raw = self._unwrap(path, raw)
        elif num(raw) is not None:
            # A bare number: legal, but its source is only in a comment (if anywhere).
            self.prov.setdefault(path, ValueSource(kind="unstated", value=raw))
        value = check(raw)
        if value is None:
            raise ConfigError(f"{self.file}: {path}: expected {expected}, got {raw!r}")
        return value

    def _unwrap(self, path: str, wrapped: dict[str, Any]) -> Any:
        r = Reader(self.file, path, wrapped, ("v", "kind", "src", "note"), self.prov, self.sources)
        kind = r.get("kind", one_of(SOURCE_KINDS), f"one of {', '.join(SOURCE_KINDS)}")
        src = r.get("src", string, "a key of [sources]", default=None)
        if src is not None:
            for s in (x.strip() for x in src.split(",")):
                if s not in self.sources:
                    raise ConfigError(
                        f"{self.file}: {path}.src: '{s}' is not a key of [sources]"
                        f"{did_you_mean(s, self.sources)}"
                    )
        note = r.get("note", string, "a string", default=None)
        self.prov[path] = ValueSource(kind=kind, src=src, note=note, value=wrapped["v"])
        return wrapped["v"]

    def table(self, key: str, allowed: Iterable[str], *, required: bool = True) -> Reader:
        """A reader for the sub-table ``key`` (an empty one when optional and absent)."""
        if key not in self.data:
            if required:
                raise ConfigError(f"{self.file}: {self.key_path(key)}: missing required table")
            return Reader(self.file, self.key_path(key), {}, allowed, self.prov, self.sources)
        return Reader(
            self.file, self.key_path(key), self.data[key], allowed, self.prov, self.sources
        )


# --------------------------------------------------------------------------------------------
# Value checks: the value when valid, else None


def num(x: Any) -> float | None:
    """A finite int or float (not a bool) as a float."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def pos(x: Any) -> float | None:
    """A number > 0."""
    v = num(x)
    return v if v is not None and v > 0 else None


def nonneg(x: Any) -> float | None:
    """A number >= 0."""
    v = num(x)
    return v if v is not None and v >= 0 else None


def fraction(x: Any) -> float | None:
    """A number in (0, 1]."""
    v = num(x)
    return v if v is not None and 0 < v <= 1 else None


def signed_unit(x: Any) -> float | None:
    """A number in [-1, 1] (a rank correlation)."""
    v = num(x)
    return v if v is not None and -1 <= v <= 1 else None


def pos_int(x: Any) -> int | None:
    """An int > 0 (not a bool)."""
    return x if isinstance(x, int) and not isinstance(x, bool) and x > 0 else None


def nonneg_int(x: Any) -> int | None:
    """An int >= 0 (not a bool)."""
    return x if isinstance(x, int) and not isinstance(x, bool) and x >= 0 else None


def string(x: Any) -> str | None:
    """Any string."""
    return x if isinstance(x, str) else None


def nonempty_str(x: Any) -> str | None:
    """A string with something besides whitespace."""
    return x if isinstance(x, str) and x.strip() else None


def boolean(x: Any) -> bool | None:
    """true or false."""
    return x if isinstance(x, bool) else None


def str_list(x: Any) -> tuple[str, ...] | None:
    """A list of strings, as a tuple."""
    if isinstance(x, list) and all(isinstance(i, str) for i in x):
        return tuple(x)
    return None


def one_of(values: Iterable[str]) -> Check[str]:
    """A check for one string of ``values``."""
    vals = tuple(values)
    return lambda x: x if isinstance(x, str) and x in vals else None


def subset_of(values: Iterable[str]) -> Check[tuple[str, ...]]:
    """A check for a list whose every item is one of ``values``."""
    vals = tuple(values)

    def check(x: Any) -> tuple[str, ...] | None:
        items = str_list(x)
        if items is None or not all(i in vals for i in items):
            return None
        return items

    return check
