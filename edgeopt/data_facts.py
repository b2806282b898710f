"""Typed views of what set-up found in an image folder (``data.json``, kept in the run record
as ``RunRecord.data_facts``): its classes, split counts and preprocessing recipe, so that a
report reads attributes, not dict keys. Plain values only: this sits beside ``records``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RecipeFacts:
    """A preprocessing recipe as recorded (``Preprocess.to_dict()``)."""

    resize: int | None
    crop: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: str
    scale: float = 1 / 255
    interpolation: str = "bilinear"
    named: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RecipeFacts:
        names = ("resize", "crop", "mean", "std", "channels", "scale", "interpolation", "named")
        values = {k: d[k] for k in names if k in d}
        for k in ("crop", "mean", "std"):
            values[k] = tuple(values.get(k) or ())
        return cls(**{"resize": None, "channels": "", **values})


@dataclass(frozen=True)
class FolderFacts:
    """An image folder's facts: ``path``, ``classes`` (index order), ``counts`` per split,
    ``recipe``, ``eval_samples`` (the cap on the val/test subsets scored) and ``augment``, the
    fine-tunes' training augmentation (``crop,flip`` ...; None in runs set up before it)."""

    path: str | None
    classes: tuple[str, ...]
    counts: Mapping[str, int]
    recipe: RecipeFacts | None
    eval_samples: int | None
    augment: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FolderFacts:
        recipe = d["recipe"] if isinstance(d.get("recipe"), Mapping) else None
        return cls(
            path=d.get("path"),
            classes=tuple(str(c) for c in d.get("classes") or ()),
            counts=dict(d.get("counts") or {}),
            recipe=RecipeFacts.from_dict(recipe) if recipe is not None else None,
            eval_samples=d.get("eval_samples"),
            augment=d.get("augment") if isinstance(d.get("augment"), str) else None,
        )
