"""A folder of images as a data source: ``DIR/train/<class>/*``, ``DIR/val/<class>/*`` and
optionally ``DIR/test/<class>/*`` (torchvision's ImageFolder layout per split), or one
``DIR/<class>/*`` split into train/val/test by a seeded, stratified ``SplitRatio``.

Opening a folder lists it and reads every file's header (no pixels): a bad layout, an empty
class or split, classes that differ between splits, or too many unreadable files is a
ConfigError before any work. Pixels are decoded only when asked for, ``subset`` (a seeded sample
of fixed size) or ``batches`` (a generator: one batch in memory at a time). The method names
are the ``DataSource`` protocol's (PLAN24 2.1), so the search can take this source as is.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.data import images
from edgeopt.data.augmentation import DEFAULT, Augmentation
from edgeopt.data.cache import DataCache
from edgeopt.data.folder_scan import (
    MAX_BAD_FRACTION,
    NAMED_BAD,
    SPLITS,
    BadImage,
    Entry,
    SplitRatio,
    scan_folder,
)
from edgeopt.data.images import MAX_PIXELS, ImageError
from edgeopt.data.preprocess import Preprocess

FULL_HASH_BYTES = 2 << 30
"""Folders up to this size are fingerprinted with every file's bytes; larger ones with a
seeded sample of ``SAMPLE_FILES`` files' bytes (and every name and size)."""
SAMPLE_FILES = 1024

Reader = Callable[[Path, Preprocess], np.ndarray]
"""One file -> its uint8 scoring view (``images.read_view``); ImageError when unreadable."""


class FolderSource:
    """The images under ``root``, scanned and checked at construction (ConfigError, exit 2,
    for a bad layout, an empty class or split, differing classes, or more than ``max_bad`` of
    the files unreadable); unreadable files under that are skipped and listed (``bad_images``).

    ``split`` applies only to the one-folder layout (default ``SplitRatio()``). ``reader``
    turns a file into its uint8 scoring view (default ``images.read_view``), which the
    recipe then normalises; a file it cannot read later (a truncated body) is skipped the same
    way, found when first read. ``fingerprint``: the folder's, as a run recorded and checked
    it (not hashed again). ``cache`` (settable later): views are read through it, so an image
    with a slot there is decoded once per run. ``loader_workers``: the DataLoader worker
    processes a fine-tune reads training batches with (``edgeopt.data.loader``). ``augment``
    (``crop,flip``, ``crop``, ``flip``, ``none`` or an ``Augmentation``): what ``fit`` applies
    to its training batches (``edgeopt.training.augment``); every read here is unaugmented.
    """

    kind = "folder"

    def __init__(
        self,
        root: Path | str,
        recipe: Preprocess,
        split: SplitRatio | None = None,
        *,
        max_bad: float = MAX_BAD_FRACTION,
        max_pixels: int = MAX_PIXELS,
        reader: Reader | None = None,
        fingerprint: str | None = None,
        cache: DataCache | None = None,
        loader_workers: int = 0,
        augment: Augmentation | str = DEFAULT,
    ) -> None:
        self.root = Path(root)
        self.recipe = recipe
        self.max_pixels = max_pixels
        self._reader = reader or functools.partial(images.read_view, max_pixels=max_pixels)
        self.cache = cache
        self.loader_workers = loader_workers
        self.augment = augment if isinstance(augment, Augmentation) else Augmentation.parse(augment)
        images.pillow()  # no Pillow: say so (exit 2) before listing a large folder
        scan = scan_folder(self.root, split, max_pixels=max_pixels, max_bad=max_bad)
        self.ratio = scan.ratio
        self.class_names = scan.classes
        self.ignored_files = scan.ignored
        self._scan_bad = scan.bad
        self._late_bad: dict[str, BadImage] = {}
        self._entries: dict[str, list[Entry]] = scan.entries
        self._fingerprint = fingerprint  # one recorded and checked already: not recomputed

    # -- the DataSource protocol ---------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.recipe.input_shape

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in SPLITS if s in self._entries)

    def count(self, split: str) -> int:
        """Images in ``split`` that passed the header scan."""
        return len(self._split(split))

    def labels(self, split: str) -> np.ndarray:
        """Class index of every image of ``split``, in the source's order (no decoding)."""
        return np.fromiter((e.label for e in self._split(split)), dtype=np.int64)

    def files(self, split: str) -> list[str]:
        """Paths (POSIX, under the folder) of the images of ``split``, in the source's order."""
        return [e.relpath for e in self._split(split)]

    def max_label(self) -> tuple[str, int]:
        """``(split, label)``: the highest class label over all splits and where it is."""
        return max(((s, int(self.labels(s).max())) for s in self.splits), key=lambda t: t[1])

    def subset(self, split: str, n: int, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``min(n, count)`` images of ``split`` drawn in a seeded order, decoded and
        preprocessed: ``x`` float32 ``(n, C, H, W)``, ``y`` int64. A file that fails to decode
        is skipped for the next one in the same order (so the size holds while files last)."""
        want = min(n, self.count(split))
        x = np.empty((want, *self.input_shape), dtype=np.float32)
        y = np.empty(want, dtype=np.int64)
        k = 0
        for xb, yb in self.batches(split, n=n, seed=seed, batch=64):
            x[k : k + len(xb)], y[k : k + len(yb)] = xb, yb
            k += len(xb)
        return x[:k], y[:k]

    def batches(
        self, split: str, n: int | None = None, seed: int | None = 0, batch: int = 64
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(x, y)`` batches of ``batch`` images (the last may be shorter), decoded as they
        are consumed: the whole split is never in memory. ``n`` None: every image in the
        source's order; else the seeded ``subset(split, n, seed)`` (seed None: the first ``n``),
        in batches."""
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        entries = self._split(split)
        if n is None or seed is None:  # the first n (all) in the source's order
            order: np.ndarray = np.arange(len(entries))
            want = len(entries) if n is None else min(n, len(entries))
        else:
            order = np.random.default_rng(seed).permutation(len(entries))
            want = min(n, len(entries))
        return self._batched(split, order, want, batch)

    def take(self, split: str, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The images of ``split`` at ``indices`` (positions in the source's order), decoded:
        what a training step reads. A file that fails to decode is left out (with its label)
        and listed in ``bad_images``, so ``x`` may be shorter than ``indices``."""
        xs: list[np.ndarray] = []
        ys: list[int] = []
        for i in indices:
            found = self._view(split, int(i))
            if found is not None:
                xs.append(found[0])
                ys.append(found[1])
        if not xs:
            return np.empty((0, *self.input_shape), np.float32), np.empty(0, np.int64)
        return self._inputs(xs), np.asarray(ys, dtype=np.int64)

    def fingerprint(self) -> str:
        """sha256 (hex) over every file's split, class, path and size, the split ratio, and
        the bytes of every file (folders up to 2 GiB) or of a seeded 1,024-file sample."""
        if self._fingerprint is None:
            self._fingerprint = self._digest()
        return self._fingerprint

    @property
    def fingerprint_basis(self) -> str:
        rows = self._all_entries()
        total, files = sum(e.size for _, e in rows), len(rows)
        if total <= FULL_HASH_BYTES:
            return f"names, sizes and bytes of all {files} files"
        return f"names and sizes of all {files} files, bytes of {SAMPLE_FILES} seeded samples"

    @property
    def bad_images(self) -> list[BadImage]:
        """Files skipped: unreadable at the header scan, then any found when decoded."""
        return [*self._scan_bad, *self._late_bad.values()]

    def describe(self) -> dict[str, Any]:
        """What a run records about its data (``data.json``, the report)."""
        bad = self.bad_images
        return {
            "kind": self.kind,
            "path": str(self.root),
            "layout": "ratio" if self.ratio is not None else "splits",
            "split": None if self.ratio is None else self.ratio.to_dict(),
            "classes": list(self.class_names),
            "counts": {s: self.count(s) for s in self.splits},
            "class_counts": {
                s: np.bincount(self.labels(s), minlength=self.num_classes).tolist()
                for s in self.splits
            },
            "recipe": self.recipe.to_dict(),
            "augment": str(self.augment),  # training only: no part of the recipe
            "bad_images": {
                "count": len(bad),
                "first": [f"{b.relpath} ({b.reason})" for b in bad[:NAMED_BAD]],
            },
            "ignored_files": self.ignored_files,
            "fingerprint": self.fingerprint(),
            "fingerprint_basis": self.fingerprint_basis,
        }

    # -- internals -----------------------------------------------------------------------
    def _split(self, split: str) -> list[Entry]:
        if split not in self._entries:
            raise ValueError(f"{self.root} has no {split!r} split (it has {self.splits})")
        return self._entries[split]

    def _inputs(self, views: list[np.ndarray]) -> np.ndarray:
        """The model inputs of ``views``, one batch normalised at once, with the plain C
        strides a stack of single inputs has (the batch transpose leaves a one-channel axis
        strided otherwise, which torch may run as channels-last: other float sums)."""
        x = self.recipe.normalize(np.stack(views))
        return x.reshape(-1).reshape(x.shape)

    def _view(self, split: str, index: int) -> tuple[np.ndarray, int] | None:
        """Image ``index`` of ``split`` as its uint8 view and label, from the cache when it
        holds it, else decoded (and cached where it has a slot); None for an unreadable file
        (listed in ``bad_images``)."""
        e = self._split(split)[index]
        if e.relpath in self._late_bad:
            return None
        view = self.cache.get(split, index) if self.cache is not None else None
        if view is None:
            try:
                view = self._reader(self.root / e.relpath, self.recipe)
            except ImageError as err:
                self._late_bad[e.relpath] = BadImage(e.relpath, err.reason)
                return None
            if self.cache is not None:
                self.cache.put(split, index, view)
        return view, e.label

    def _batched(
        self, split: str, order: np.ndarray, want: int, batch: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        xs: list[np.ndarray] = []
        ys: list[int] = []
        done = 0
        for i in order:
            if done + len(xs) >= want:
                break
            found = self._view(split, int(i))
            if found is None:
                continue
            xs.append(found[0])
            ys.append(found[1])
            if len(xs) == batch:
                yield self._inputs(xs), np.asarray(ys, dtype=np.int64)
                done += len(xs)
                xs, ys = [], []
        if xs:
            yield self._inputs(xs), np.asarray(ys, dtype=np.int64)

    def _all_entries(self) -> list[tuple[str, Entry]]:
        good = [(s, e) for s, es in self._entries.items() for e in es]
        return sorted(good, key=lambda t: (t[0], t[1].relpath))

    def _digest(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"ratio": self.ratio and self.ratio.to_dict()}).encode())
        rows = self._all_entries()
        for split, e in rows:
            h.update(json.dumps([split, self.class_names[e.label], e.relpath, e.size]).encode())
        for b in sorted(self._scan_bad, key=lambda b: b.relpath):
            h.update(json.dumps(["unreadable", b.relpath]).encode())
        if sum(e.size for _, e in rows) <= FULL_HASH_BYTES:
            chosen = range(len(rows))
        else:
            pick = np.random.default_rng(0).choice(len(rows), SAMPLE_FILES, replace=False)
            chosen = sorted(int(i) for i in pick)
        for i in chosen:
            with open(self.root / rows[i][1].relpath, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()
