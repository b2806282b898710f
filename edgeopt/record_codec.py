"""Frozen dataclasses read from and written to JSON objects without losing a byte.

The machinery under ``edgeopt.records``: a ``Record`` subclass declares its fields with
``fld(default, codec)``; ``from_dict`` reads a dict into it, ``to_dict`` writes exactly that
dict back: the same keys in the same order, keys the class does not know included, and a
value the codec reads differently from how it writes it (a ``null`` where a mapping
belongs) kept as read while the field holds its typed reading. A record built in code
writes the fields it sets, in field order (``Record.layout``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Self

from edgeopt.errors import ConfigError


@dataclass(frozen=True)
class Codec:
    """How a field is read from its JSON value (``decode``) and written back (``encode``);
    ``exact(value)`` says whether ``encode(decode(value))`` is ``value`` again."""

    decode: Callable[[Any], Any]
    encode: Callable[[Any], Any]
    exact: Callable[[Any], bool]


def copy(x: Any) -> Any:
    """A deep copy of JSON-like data, so a record never shares a mutable value with a dict."""
    if isinstance(x, Mapping):
        return {k: copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [copy(v) for v in x]
    if isinstance(x, tuple):
        return tuple(copy(v) for v in x)
    return x


PLAIN = Codec(copy, copy, lambda v: True)
"""A value kept as JSON data (copied in and out)."""

MAP = Codec(
    lambda v: copy(v) if isinstance(v, Mapping) else {},
    copy,
    lambda v: isinstance(v, Mapping),
)
"""A JSON object kept as data; anything else reads as ``{}``."""


def record(cls: type[Record], *, empty: bool = False) -> Codec:
    """A nested record; a value that is not a mapping reads as None (as ``cls()`` with
    ``empty``)."""
    return Codec(
        lambda v: cls.from_dict(v) if isinstance(v, Mapping) else (cls() if empty else None),
        lambda r: None if r is None else r.to_dict(),
        lambda v: isinstance(v, Mapping),
    )


def optional(cls: type[Record]) -> Codec:
    """A nested record that may be missing: None for ``null``, ``{}`` or a non-mapping."""
    return Codec(
        lambda v: cls.from_dict(v) if isinstance(v, Mapping) and v else None,
        lambda r: None if r is None else r.to_dict(),
        lambda v: v is None or (isinstance(v, Mapping) and bool(v)),
    )


def mapping(inner: Codec) -> Codec:
    """``{key: inner}``; entries that read as None are left out of the typed value."""

    def decode(v: Any) -> dict[str, Any]:
        if not isinstance(v, Mapping):
            return {}
        out = {k: inner.decode(x) for k, x in v.items()}
        return {k: x for k, x in out.items() if x is not None}

    return Codec(
        decode,
        lambda m: {k: inner.encode(x) for k, x in m.items()},
        lambda v: (
            isinstance(v, Mapping) and all(x is not None and inner.exact(x) for x in v.values())
        ),
    )


def seq(inner: Codec) -> Codec:
    """A JSON list read as a tuple; items that read as None are left out."""

    def decode(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, list | tuple):
            return ()
        return tuple(x for x in map(inner.decode, v) if x is not None)

    return Codec(
        decode,
        lambda t: [inner.encode(x) for x in t],
        lambda v: isinstance(v, list) and all(x is not None and inner.exact(x) for x in v),
    )


def fld(default: Any = None, codec: Codec = PLAIN, *, factory: Any = None) -> Any:
    """A record field: its default (or default ``factory``) and its codec."""
    if factory is not None:
        return field(default_factory=factory, metadata={"codec": codec})
    return field(default=default, metadata={"codec": codec})


@dataclass(frozen=True)
class Kept:
    """What ``from_dict`` read beyond the typed fields, for an exact ``to_dict``: the keys
    in order, the keys the class does not know, and values kept as read
    (``{key: (typed value, value as read)}``)."""

    keys: tuple[str, ...]
    extra: Mapping[str, Any]
    raw: Mapping[str, tuple[Any, Any]]


@dataclass(frozen=True)
class _Fields:
    codecs: dict[str, Codec]
    defaults: dict[str, Any]


_FIELDS: dict[type, _Fields] = {}


def _fields_of(cls: type) -> _Fields:
    found = _FIELDS.get(cls)
    if found is None:
        own = [f for f in fields(cls) if f.name != "kept"]
        found = _Fields(
            {f.name: f.metadata.get("codec", PLAIN) for f in own},
            {
                f.name: f.default_factory() if f.default_factory is not MISSING else f.default
                for f in own
            },
        )
        _FIELDS[cls] = found
    return found


@dataclass(frozen=True, kw_only=True)
class Record:
    """A frozen record read from and written to a JSON object (see the module doc)."""

    ALIASES: ClassVar[Mapping[str, str]] = {}
    """Keys of older versions -> the field that reads them."""
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    """Keys ``from_dict`` refuses to do without."""

    kept: Kept | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """The record of ``d``; ``to_dict`` gives ``d`` back. ConfigError when a key in
        ``REQUIRED`` is missing or a value cannot be read."""
        codecs = _fields_of(cls).codecs
        typed: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        raw: dict[str, tuple[Any, Any]] = {}
        for key, value in d.items():
            name = cls.ALIASES.get(key, key)
            codec = codecs.get(name)
            if codec is None:
                extra[key] = copy(value)
                continue
            typed[name] = codec.decode(value)
            if not codec.exact(value):
                raw[key] = (typed[name], copy(value))
        missing = [n for n in cls.REQUIRED if n not in typed]
        if missing:
            raise ConfigError(
                f"a {cls.__name__} without {', '.join(map(repr, missing))}",
                hint="records come from edgeopt.search.run.collect.load_run; pass them unchanged",
            )
        return cls(**typed, kept=Kept(tuple(d), extra, raw))

    def layout(self) -> tuple[str, ...]:
        """The keys of a record built in code: the fields not at their default, in order."""
        defaults = _fields_of(type(self)).defaults
        return tuple(n for n, d in defaults.items() if getattr(self, n) != d)

    def _changed(self, kept: Kept) -> tuple[str, ...]:
        """Fields not read from the dict but set since (``dataclasses.replace``)."""
        read = {self.ALIASES.get(k, k) for k in kept.keys}
        defaults = _fields_of(type(self)).defaults
        return tuple(n for n, d in defaults.items() if n not in read and getattr(self, n) != d)

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (see ``from_dict``)."""
        codecs, kept = _fields_of(type(self)).codecs, self.kept
        keys = self.layout() if kept is None else kept.keys + self._changed(kept)
        out: dict[str, Any] = {}
        for key in keys:
            if kept is not None and key in kept.extra:
                out[key] = copy(kept.extra[key])
                continue
            name = self.ALIASES.get(key, key)
            value = getattr(self, name)
            if kept is not None and key in kept.raw and value is kept.raw[key][0]:
                out[key] = copy(kept.raw[key][1])
            else:
                out[key] = codecs[name].encode(value)
        return out
