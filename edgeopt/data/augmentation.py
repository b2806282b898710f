"""Which training augmentation an image folder's fine-tunes apply (``--augment``, the
``augment`` key of a ``[data]`` table, ``run.json``'s data record): random resized crop and/or
horizontal flip. Data only: ``edgeopt.training.augment`` applies it, to training batches only.
It is no part of the preprocessing recipe, which the exported models carry: the app never
augments."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from edgeopt.errors import ConfigError

KINDS = ("crop", "flip")
"""The augmentations, in their canonical order: random resized crop, horizontal flip."""
CHOICES = ("crop,flip", "crop", "flip", "none")
DEFAULT = "crop,flip"
"""An image folder's augmentation when none is given, and that of runs recorded before the
setting existed."""


@dataclass(frozen=True)
class Augmentation:
    """``crop``: random resized crop (area 35-100 %, aspect ratio 3/4-4/3, back to the input
    size); ``flip``: horizontal flip of half the samples."""

    crop: bool = True
    flip: bool = True

    @classmethod
    def parse(cls, text: str, name: str = "--augment") -> Augmentation:
        """``crop,flip``, ``crop``, ``flip`` or ``none`` (any order, spaces and case ignored);
        ConfigError naming ``name`` (the flag or the table key) and the closest choice."""
        key = str(text).strip().lower()
        parts = [p.strip() for p in key.split(",") if p.strip()]
        if parts == ["none"]:
            return cls(crop=False, flip=False)
        if parts and len(set(parts)) == len(parts) and set(parts) <= set(KINDS):
            return cls(crop="crop" in parts, flip="flip" in parts)
        close = difflib.get_close_matches(key, CHOICES, n=1)
        raise ConfigError(
            f"{name} {text!r} is not one of {', '.join(CHOICES)}",
            hint=(f"did you mean {close[0]!r}? " if close else "")
            + "crop: random resized crop, flip: horizontal flip, none: neither",
        )

    def __str__(self) -> str:
        """The canonical text: ``crop,flip``, ``crop``, ``flip`` or ``none``."""
        return ",".join(k for k in KINDS if getattr(self, k)) or "none"
