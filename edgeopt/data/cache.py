"""A bounded on-disk cache of decoded images: the uint8 scoring views (``images.scoring_view``,
resized and center-cropped, before normalisation) of a streamed source, under the run
directory (``RUN/cache/data/<key>/``), so an image is decoded once per run instead of once per
trial and epoch.

Bounded by construction, not by eviction: the cache holds a fixed list of slots, one per
``(split, index)`` in a deterministic fill order (``fill_order``: the seeded scoring subsets of
val and test first, since every trial reads them, then training images in a seeded order),
as many as fit in ``capacity_bytes`` with the metadata; an image past them is decoded each
time. Slots are written with ``pwrite`` (record first, then its flag), so any number of
processes (search workers, trial children, loader workers) share the files without locks:
two writers of a slot write the same bytes, and a reader trusts a record only once its flag
is set.

``key`` = sha256 over the data's fingerprint and what shapes a view (resize, crop, channels,
interpolation, EXIF handling): a changed file or recipe is a new key, and the directories of
other keys in the same run are removed (stale) so the run's cache stays under its size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from itertools import islice
from pathlib import Path

import numpy as np

from edgeopt.data.preprocess import Channels, Preprocess
from edgeopt.fileio import write_atomic

GB = 1 << 30
DATA_CACHE = "data"
"""The cache's folder in a run's cache directory: ``RUN/cache/data/<key>/``."""
DEFAULT_CAPACITY_GB = 2.0
VIEWS, FLAGS, META = "views.u8", "filled.u8", "meta.json"
FILL_SEED = 0
"""Seed of the training images' fill order (a property of the run, not of a trial)."""
VIEW_FIELDS = ("resize", "crop", "channels", "interpolation", "exif_transpose")
"""The recipe fields a uint8 view depends on (mean, std and scale apply after the cache)."""


def cache_key(fingerprint: str, recipe: Preprocess) -> str:
    """The cache directory's name for data ``fingerprint`` read with ``recipe``."""
    view = {k: v for k, v in recipe.to_dict().items() if k in VIEW_FIELDS}
    blob = json.dumps({"fingerprint": fingerprint, "view": view}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def view_shape(recipe: Preprocess) -> tuple[int, ...]:
    """The shape of one cached view: ``(H, W)`` gray, ``(H, W, 3)`` otherwise."""
    h, w = recipe.crop
    return (h, w) if recipe.channels is Channels.GRAY else (h, w, 3)


def fill_order(
    counts: Mapping[str, int], eval_samples: int, eval_seed: int
) -> Iterable[tuple[str, int]]:
    """``(split, index)`` in the order slots are given out: the scoring subset of val and test
    (the seeded draw ``FolderSource.batches(n=eval_samples, seed=eval_seed)`` reads), then
    every training image in a seeded order."""
    for split in ("val", "test"):
        if split in counts:
            perm = np.random.default_rng(eval_seed).permutation(counts[split])
            yield from ((split, int(i)) for i in perm[:eval_samples])
    if "train" in counts:
        yield from (
            ("train", int(i)) for i in np.random.default_rng(FILL_SEED).permutation(counts["train"])
        )


class DataCache:
    """The slots of one key's directory (see the module). ``get``/``put`` by ``(split,
    index)``; both are no-ops (None) for an image without a slot. Safe to share across
    ``fork`` (files are read and written by offset, never by a shared file position)."""

    def __init__(
        self,
        directory: Path | str,
        shape: tuple[int, ...],
        order: Iterable[tuple[str, int]],
        capacity_bytes: int,
        meta: Mapping[str, object] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.shape = tuple(shape)
        self.record_bytes = int(np.prod(self.shape))
        meta_bytes = json.dumps(
            {**(meta or {}), "slots": 10**12, "capacity_bytes": capacity_bytes}, indent=1
        ).encode()
        room = max(0, capacity_bytes - len(meta_bytes))
        slots = room // (self.record_bytes + 1)  # a record and its flag byte
        self.slots: dict[tuple[str, int], int] = {
            key: s for s, key in enumerate(islice(order, slots))
        }
        self._fd: int | None = None
        self._flags: int | None = None
        if self.slots:
            self._open(
                len(self.slots),
                {**(meta or {}), "slots": len(self.slots), "capacity_bytes": capacity_bytes},
            )

    @classmethod
    def for_source(
        cls,
        base: Path | str,
        fingerprint: str,
        recipe: Preprocess,
        counts: Mapping[str, int],
        capacity_bytes: int,
        *,
        eval_samples: int,
        eval_seed: int,
    ) -> DataCache | None:
        """The cache of data ``fingerprint`` read with ``recipe`` under ``base``
        (``RUN/cache/data``), ``counts`` images per split; None when ``capacity_bytes`` holds
        no record (0: caching off). Other keys' directories under ``base`` are removed."""
        key = cache_key(fingerprint, recipe)
        base = Path(base)
        if base.is_dir():
            for stale in base.iterdir():
                if stale.name != key and stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
        meta = {"key": key, "fingerprint": fingerprint, "view_shape": list(view_shape(recipe))}
        order = fill_order(counts, eval_samples, eval_seed)
        cache = cls(base / key, view_shape(recipe), order, capacity_bytes, meta)
        return cache if cache.slots else None

    def get(self, split: str, index: int) -> np.ndarray | None:
        """The cached view of image ``index`` of ``split``, or None (no slot, or not written)."""
        slot = self.slots.get((split, int(index)))
        if slot is None or self._fd is None or self._flags is None:
            return None
        if os.pread(self._flags, 1, slot) != b"\x01":
            return None
        raw = os.pread(self._fd, self.record_bytes, slot * self.record_bytes)
        return np.frombuffer(raw, dtype=np.uint8).reshape(self.shape)

    def put(self, split: str, index: int, view: np.ndarray) -> None:
        """Store ``view`` for image ``index`` of ``split`` when it has a slot (the same bytes
        as any other writer of that slot: an image decodes to one view)."""
        slot = self.slots.get((split, int(index)))
        if slot is None or self._fd is None or self._flags is None:
            return
        data = np.ascontiguousarray(view, dtype=np.uint8)
        if data.shape != self.shape:
            raise ValueError(f"a cached view is {self.shape}, not {data.shape}")
        os.pwrite(self._fd, data.tobytes(), slot * self.record_bytes)
        os.pwrite(self._flags, b"\x01", slot)  # after the record: a set flag means a whole one

    def _open(self, slots: int, meta: Mapping[str, object]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        meta_path = self.directory / META
        text = json.dumps(dict(meta), indent=1)
        if not meta_path.exists() or meta_path.read_text() != text:
            write_atomic(meta_path, text)
        self._fd = os.open(self.directory / VIEWS, os.O_RDWR | os.O_CREAT, 0o644)
        self._flags = os.open(self.directory / FLAGS, os.O_RDWR | os.O_CREAT, 0o644)
        # sized to the slots (sparse until written); the same size from every opener
        os.ftruncate(self._fd, slots * self.record_bytes)
        os.ftruncate(self._flags, slots)

    def close(self) -> None:
        for fd in (self._fd, self._flags):
            if fd is not None:
                os.close(fd)
        self._fd = self._flags = None
