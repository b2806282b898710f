"""Listing an image folder for ``FolderSource``: its layout (``DIR/{train,val[,test]}/<class>/*``
or ``DIR/<class>/*`` split by a ``SplitRatio``), its classes, every file's header read (no
pixels), and every reason it cannot be a data set, as a ConfigError before any work."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.data import images
from edgeopt.data.images import ImageError
from edgeopt.errors import ConfigError

SPLITS = ("train", "val", "test")
SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
MAX_BAD_FRACTION = 0.05
"""Unreadable files allowed, as a fraction of the folder's images: past it, exit 2."""
NAMED_BAD = 5
"""How many unreadable files an error or a description names (all are counted)."""


@dataclass(frozen=True)
class SplitRatio:
    """How one ``DIR/<class>/*`` folder splits: per class, ``val`` and ``test`` of its images
    (each at least one when its fraction is above 0) drawn by a generator seeded with
    ``(seed, class index)``, the rest train. Recorded in the run, so a resume splits alike."""

    val: float = 0.1
    test: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        ok = all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in (self.val, self.test)
        )
        if not ok or not (0 < self.val < 1 and 0 <= self.test < 1 and self.val + self.test < 1):
            raise ConfigError(
                f"split ratio val {self.val!r}, test {self.test!r} is not a split",
                hint="val above 0, test 0 or more, and together below 1 (e.g. 0.1 and 0.1)",
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"split seed must be a whole number, not {self.seed!r}")

    @property
    def train(self) -> float:
        return 1.0 - self.val - self.test

    def counts(self, n: int) -> tuple[int, int, int]:
        """``(train, val, test)`` image counts of a class of ``n``: val/test ``floor(n * f +
        0.5)``, at least 1 when ``f > 0``; ConfigError when no image is left to train on."""

        def part(f: float) -> int:
            return max(1, math.floor(n * f + 0.5)) if f > 0 else 0

        n_val, n_test = part(self.val), part(self.test)
        return n - n_val - n_test, n_val, n_test

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": round(self.train, 12),
            "val": self.val,
            "test": self.test,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SplitRatio:
        """What ``to_dict`` wrote; ConfigError for anything else."""
        if not isinstance(d, Mapping) or set(d) - {"train", "val", "test", "seed"}:
            raise ConfigError(f"a split record holds train, val, test and seed, not {d!r}")
        ratio = cls(d.get("val", 0.1), d.get("test", 0.1), d.get("seed", 0))
        if "train" in d and abs(float(d["train"]) - ratio.train) > 1e-9:
            raise ConfigError(f"split record: train {d['train']} is not 1 - val - test")
        return ratio


@dataclass(frozen=True)
class Entry:
    """One image file: its path under the folder (POSIX), class index and size in bytes."""

    relpath: str
    label: int
    size: int


@dataclass(frozen=True)
class BadImage:
    relpath: str
    reason: str


@dataclass
class _Listing:
    classes: tuple[str, ...]
    entries: dict[str, list[Entry]]  # split ("" before a ratio split) -> files
    ignored: int = 0


@dataclass(frozen=True)
class Scan:
    """A checked folder: class names (sorted folder names), the readable files per split
    (sorted by class, then path), the split ratio (one-folder layout) and what was left out."""

    classes: tuple[str, ...]
    entries: dict[str, list[Entry]]
    ratio: SplitRatio | None
    ignored: int
    bad: list[BadImage]


def scan_folder(root: Path, split: SplitRatio | None, *, max_pixels: int, max_bad: float) -> Scan:
    """List ``root``, read every header, split by ratio where the layout asks for it.

    ConfigError (exit 2) for: not a folder; no class folders; train/ or val/ missing beside
    the other, or other folders beside them; a ratio for an already split folder; a split
    without class folders; class folders that differ between splits; a class without
    (readable) images; more than ``max_bad`` of the files unreadable."""
    listing, ratio = _list(root, split)
    bad = _probe_all(root, listing, max_pixels, max_bad)
    if ratio is not None:
        listing.entries = _split_by_ratio(listing, ratio)
    for name, entries in listing.entries.items():
        _check_classes_present(root, name, entries, listing.classes, after_bad=True)
    return Scan(listing.classes, listing.entries, ratio, listing.ignored, bad)


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def _list(root: Path, ratio: SplitRatio | None) -> tuple[_Listing, SplitRatio | None]:
    """The folder's classes and files per split (one unsplit list, key "", for the ratio
    layout); ConfigError for anything that cannot be a data set."""
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder", hint="--data takes a folder of images")
    dirs = {p.name: p for p in _visible_dirs(root)}
    split_dirs = [s for s in SPLITS if s in dirs]
    if not split_dirs:
        if not dirs:
            raise ConfigError(
                f"{root} has no class folders",
                hint="lay images out as DIR/<class>/* or DIR/{train,val[,test]}/<class>/*",
            )
        ratio = ratio or SplitRatio()
        classes = tuple(dirs)
        listing = _Listing(classes, {})
        listing.entries[""] = _list_classes(root, root, classes, listing)
        return listing, ratio
    if "train" not in dirs or "val" not in dirs:
        has = ", ".join(f"{s}/" for s in split_dirs)
        raise ConfigError(
            f"{root} has {has} but not both train/ and val/",
            hint="a split folder needs DIR/train/<class>/* and DIR/val/<class>/*",
        )
    others = sorted(set(dirs) - set(SPLITS))
    if others:
        raise ConfigError(
            f"{root} holds train/ and val/ and also {', '.join(f'{o}/' for o in others)}",
            hint="move the other folders out: beside train/ and val/ only test/ is read",
        )
    if ratio is not None:
        raise ConfigError(
            f"{root} is already split into {', '.join(split_dirs)}: a split ratio applies "
            "only to a DIR/<class>/* folder",
            hint="drop the split ratio",
        )
    per_split: dict[str, tuple[str, ...]] = {}
    for s in split_dirs:
        per_split[s] = tuple(p.name for p in _visible_dirs(dirs[s]))
        if not per_split[s]:
            raise ConfigError(
                f"the {s} split {dirs[s]} has no class folders",
                hint=f"put its images in {dirs[s]}/<class>/*",
            )
    classes = per_split["train"]
    for s in split_dirs[1:]:
        missing = sorted(set(classes) - set(per_split[s]))
        extra = sorted(set(per_split[s]) - set(classes))
        if missing or extra:
            parts = [f"lacks {', '.join(missing)}"] if missing else []
            parts += [f"has {', '.join(extra)} that train/ lacks"] if extra else []
            raise ConfigError(
                f"the {s} split of {root} {' and '.join(parts)}: every split needs the "
                f"same class folders",
                hint=f"give {s}/ a folder (with images) per class of train/, and no others",
            )
    listing = _Listing(classes, {})
    for s in split_dirs:
        listing.entries[s] = _list_classes(root, dirs[s], classes, listing)
    return listing, None


def _list_classes(root: Path, folder: Path, classes: tuple[str, ...], out: _Listing) -> list[Entry]:
    """Every image file under ``folder/<class>/`` (recursively, sorted; links to folders are
    not followed), counting other files in ``out.ignored``."""
    entries: list[Entry] = []
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(folder / name):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                p = Path(dirpath) / fn
                if fn.startswith(".") or p.suffix.lower() not in SUFFIXES or not p.is_file():
                    out.ignored += 1
                    continue
                entries.append(Entry(p.relative_to(root).as_posix(), label, p.stat().st_size))
    split = folder.relative_to(root).as_posix() if folder != root else ""
    _check_classes_present(root, split, entries, classes, after_bad=False)
    return entries


def _check_classes_present(
    root: Path, split: str, entries: list[Entry], classes: tuple[str, ...], *, after_bad: bool
) -> None:
    counts = np.bincount([e.label for e in entries], minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        where = f"{root}/{split}" if split else str(root)
        why = "no readable images" if after_bad else "no images (.jpg, .jpeg, .png)"
        raise ConfigError(
            f"class folder(s) {', '.join(empty)} in {where} hold {why}",
            hint="add images to every class folder, or remove the empty ones from every split",
        )


def _probe_all(root: Path, listing: _Listing, max_pixels: int, max_bad: float) -> list[BadImage]:
    """Read every file's header; drop the unreadable from ``listing`` and return them.
    ConfigError when more than ``max_bad`` of the files are unreadable."""
    bad: list[BadImage] = []
    total = 0
    for split, entries in listing.entries.items():
        kept = []
        for e in entries:
            try:
                images.probe(root / e.relpath, max_pixels)
                kept.append(e)
            except ImageError as err:
                bad.append(BadImage(e.relpath, err.reason))
        total += len(entries)
        listing.entries[split] = kept
    if bad and len(bad) > max_bad * total:
        named = "; ".join(f"{b.relpath} ({b.reason})" for b in bad[:NAMED_BAD])
        raise ConfigError(
            f"{len(bad)} of {total} images in {root} cannot be read, over the "
            f"{max_bad:.0%} allowed: {named}" + (" ..." if len(bad) > NAMED_BAD else ""),
            hint="replace or remove the unreadable files",
        )
    return bad


def _split_by_ratio(listing: _Listing, ratio: SplitRatio) -> dict[str, list[Entry]]:
    """Per class: its files (sorted by path) permuted by ``rng((seed, class index))``; the
    first ``val`` go to val, the next ``test`` to test, the rest to train."""
    by_class: dict[int, list[Entry]] = {}
    for e in listing.entries[""]:
        by_class.setdefault(e.label, []).append(e)
    out: dict[str, list[Entry]] = {"train": [], "val": [], "test": []}
    for label, entries in sorted(by_class.items()):
        n_train, n_val, n_test = ratio.counts(len(entries))
        if n_train < 1:
            raise ConfigError(
                f"class {listing.classes[label]} has {len(entries)} readable image(s): too few "
                f"to split {ratio.train:.0%}/{ratio.val:.0%}/{ratio.test:.0%}",
                hint="add images, or split the folder into DIR/train, DIR/val yourself",
            )
        perm = np.random.default_rng([ratio.seed, label]).permutation(len(entries))
        shuffled = [entries[int(i)] for i in perm]
        out["val"] += shuffled[:n_val]
        out["test"] += shuffled[n_val : n_val + n_test]
        out["train"] += shuffled[n_val + n_test :]
    if not out["test"]:
        del out["test"]
    return {s: sorted(es, key=lambda e: (e.label, e.relpath)) for s, es in out.items()}
