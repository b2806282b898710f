"""What a run reads its data from: ``DataSpec``, the record of it in ``run.json`` (kind, path,
fingerprint), and ``DataSource``, the one interface every kind of data offers its consumers.
``NpzSource`` wraps today's ``DataBundle`` so the npz path keeps its exact numbers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeopt.data.augmentation import DEFAULT, Augmentation
from edgeopt.data.cache import DataCache
from edgeopt.data.callable import CallableSource
from edgeopt.data.folder import FolderSource
from edgeopt.data.folder_scan import SplitRatio
from edgeopt.data.npz import DataBundle, load_npz
from edgeopt.data.preprocess import Preprocess
from edgeopt.errors import ConfigError
from edgeopt.inputs import ModelInputs

EVAL_SAMPLES = 2000
"""A streamed source (not an npz, whose splits are in memory and scored whole, as always)
scores val and test, and validates inside a fine-tune, on a seeded subset of at most this
many samples of the split: one number per split whatever the folder's size."""
EVAL_SEED = 0
STREAM_BATCH = 64


class DataKind(StrEnum):
    """Where a run's data comes from: an ``.npz`` of arrays, a folder of images, or a Python
    callable named on the command line (never recorded: see ``DataSpec``)."""

    NPZ = "npz"
    FOLDER = "folder"
    CALLABLE = "callable"


@dataclass(frozen=True)
class DataSpec:
    """A run's data as ``run.json`` records it. ``path``: the ``.npz`` or folder; None for a
    callable, whose reference lives only on the command line (``run.json`` is data and never
    names code to run). ``recipe`` (preprocessing) and ``split`` (how a folder is split) are
    None for the kinds that have none; ``fingerprint`` is the source's ``fingerprint()`` once
    set-up computed it (None before, and in runs recorded before it existed). ``ref``: a
    callable's ``module:callable``, held in memory only, as the command line gave it (never
    in ``to_dict``, never read by ``from_dict``). ``augment``: a folder's training augmentation
    (``edgeopt.data.augmentation``; None gives the default, as for runs recorded before it;
    None for every other kind)."""

    kind: DataKind
    path: str | None = None
    recipe: Mapping[str, Any] | None = None
    split: Mapping[str, Any] | None = None
    fingerprint: str | None = None
    augment: str | None = None
    ref: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", DataKind(self.kind))
        except ValueError:
            raise ConfigError(
                f"unknown data kind {self.kind!r}",
                hint=f"a run's data is one of {', '.join(k.value for k in DataKind)}",
            ) from None
        if self.kind is DataKind.CALLABLE and self.path is not None:
            raise ConfigError(
                "the run's data is a callable, yet its record names one "
                f"({str(self.path)[:80]!r}); edgeopt never records or runs a callable from a file",
                hint="pass --data REF on the command line if you trust that code",
            )
        if self.kind is not DataKind.CALLABLE and not self.path:
            raise ConfigError(f"the run's {self.kind} data has no path")
        if self.kind is DataKind.FOLDER:  # canonical; None (an older record): the default
            canonical = str(Augmentation.parse(self.augment or DEFAULT, "the run's augment"))
            object.__setattr__(self, "augment", canonical)
        elif self.augment is not None:
            raise ConfigError(f"the run's {self.kind} data records an image augmentation")

    @property
    def augmentation(self) -> Augmentation | None:
        """A folder's training augmentation; None for the other kinds, which keep their
        random shifts and noise."""
        return Augmentation.parse(self.augment) if self.augment is not None else None

    @classmethod
    def npz(cls, path: str | Path) -> DataSpec:
        """The spec of the ``.npz`` at ``path`` (as given: callers resolve it)."""
        return cls(DataKind.NPZ, str(path))

    @classmethod
    def from_ref(cls, ref: str) -> DataSpec:
        """The spec of the Datasets ``ref`` (``module:callable``, from the command line)
        returns; ``ref`` stays in memory, out of every record."""
        return cls(DataKind.CALLABLE, ref=ref)

    def with_ref(self, ref: str | None) -> DataSpec:
        """A callable's spec with the command line's ``ref`` (unchanged for other kinds, or
        without one): a spec read from a record never has one."""
        return replace(self, ref=ref) if self.kind is DataKind.CALLABLE and ref else self

    def check_named(self) -> None:
        """ConfigError for a callable's spec without the command line's reference (one read
        from a record): edgeopt cannot open that data unless the user names the code."""
        if self.kind is DataKind.CALLABLE and self.ref is None:
            raise ConfigError(
                "this run's data comes from a Python callable named on the command line "
                "(--data module:callable), which a run directory or study never records",
                hint="pass --data REF (the one the run was started with) if you trust that code",
            )

    def with_fingerprint(self, fingerprint: str) -> DataSpec:
        return replace(self, fingerprint=fingerprint)

    def search_key(self) -> dict[str, Any]:
        """What defines the run's data for a resume: all but the fingerprint, which set-up
        computes anew each time (a run recorded before it had none)."""
        return {k: v for k, v in self.to_dict().items() if k != "fingerprint"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "path": self.path,
            "recipe": dict(self.recipe) if self.recipe is not None else None,
            "split": dict(self.split) if self.split is not None else None,
            "fingerprint": self.fingerprint,
            **({"augment": self.augment} if self.augment is not None else {}),
        }

    @classmethod
    def from_dict(cls, value: str | Mapping[str, Any]) -> DataSpec:
        """The spec ``to_dict`` wrote, or the plain path string of a ``run.json`` written
        before data had kinds (always an ``.npz``). ConfigError for anything else."""
        if isinstance(value, str):
            return cls.npz(value)
        if not isinstance(value, Mapping) or "kind" not in value:
            raise ConfigError(
                f"the run's data record is not a data spec: {str(value)[:80]!r}",
                hint="the run directory was edited or is not from edgeopt; start a new run",
            )
        names = ("kind", "path", "recipe", "split", "fingerprint", "augment")
        return cls(**{k: value[k] for k in names if k in value})


class DataSource(Protocol):
    """Labelled splits (``train``, ``val``[, ``test``]) of a classification task, whatever
    holds them. Inputs come as float32 numpy arrays shaped ``(N, *input_shape)``, labels as
    int64. A consumer asks for what it needs: a seeded fixed-size ``subset`` (calibration,
    Taylor, parity, probes) or ``batches`` streamed over a whole split (scoring)."""

    @property
    def kind(self) -> DataKind: ...

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension."""
        ...

    @property
    def num_classes(self) -> int: ...

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The name of each class index (a folder's class folders); None when unnamed."""
        ...

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits the data holds, in ``train, val, test`` order."""
        ...

    def count(self, split: str) -> int:
        """Samples in ``split``."""
        ...

    def labels(self, split: str) -> np.ndarray:
        """Every label of ``split`` (int64), without reading its inputs where the kind can."""
        ...

    def max_label(self) -> tuple[str, int]:
        """``(split, label)``: the highest class label over all splits and where it is."""
        ...

    def subset(self, split: str, n: int, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``min(n, count(split))`` samples of ``split``: the first ones with ``seed`` None,
        else a seeded draw without replacement (the same ``(n, seed)``, the same samples)."""
        ...

    def batches(self, split: str, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All of ``split`` in order, ``batch`` samples at a time (the last may be short),
        never more than one batch in memory beyond what the source holds anyway."""
        ...

    def fingerprint(self) -> str:
        """A short content digest: equal for the same data wherever it lies."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts for a run's record and report (kind, shape, classes, counts)."""
        ...


class NpzSource:
    """The splits of an ``.npz`` (``edgeopt.data.npz``), loaded whole on first use; its
    ``subset`` draws exactly what the stages drew from a ``DataBundle`` before sources."""

    kind = DataKind.NPZ
    class_names: tuple[str, ...] | None = None

    def __init__(self, path: str | Path, bundle: DataBundle | None = None) -> None:
        self.path = Path(path)
        if bundle is not None:
            self.__dict__["bundle"] = bundle  # the cached_property's slot

    @classmethod
    def open(cls, path: str | Path) -> NpzSource:
        """The source of the npz at ``path``, loaded and checked now (``load_npz``:
        ConfigError for a file that is no valid npz of labelled splits)."""
        return cls(path, load_npz(path))

    @cached_property
    def bundle(self) -> DataBundle:
        """The whole file as arrays (what every consumer took before sources)."""
        return load_npz(self.path)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.bundle.input_shape

    @property
    def inputs(self) -> ModelInputs | None:
        """The inputs each sample holds when they are several (or integer), else None."""
        return self.bundle.inputs

    def in_order(self, names: Sequence[str]) -> NpzSource:
        """This source with each sample's fields in ``names``' order (``DataBundle.in_order``;
        the file is unchanged, and so is the fingerprint)."""
        return NpzSource(self.path, self.bundle.in_order(names))

    @property
    def num_classes(self) -> int:
        return self.bundle.num_classes

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "val", "test") if self.bundle.has_test else ("train", "val")

    def _split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in self.splits:
            raise ValueError(f"{self.path} has no {split} split (it has {self.splits})")
        return self.bundle.split(split)

    def count(self, split: str) -> int:
        return len(self._split(split)[1])

    def labels(self, split: str) -> np.ndarray:
        return self._split(split)[1]

    def max_label(self) -> tuple[str, int]:
        return self.bundle.max_label()

    def subset(self, split: str, n: int, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._split(split)
        if seed is None:
            return x[:n], y[:n]
        idx = np.random.default_rng(seed).permutation(len(x))[: min(n, len(x))]
        if x.dtype.names:  # several inputs: a structured array, integer fields kept
            return np.ascontiguousarray(x[idx]), y[idx]
        return np.ascontiguousarray(x[idx], dtype=np.float32), y[idx]

    def batches(self, split: str, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if batch < 1:
            raise ValueError(f"batch must be positive, got {batch}")
        x, y = self._split(split)
        for i in range(0, len(x), batch):
            yield x[i : i + batch], y[i : i + batch]

    def hash_file(self, h: _Hash) -> None:
        """Feed the file's bytes to ``h``, a megabyte at a time."""
        with self.path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)

    def fingerprint(self) -> str:
        """``sha256:`` and 16 hex digits of the file's bytes: the digest a study recorded for
        its data before sources existed, so those studies still match. Reads the file, not
        its arrays."""
        h = hashlib.sha256()
        self.hash_file(h)
        return "sha256:" + h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "path": str(self.path),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": None,
            "counts": {s: self.count(s) for s in self.splits},
        }


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...


def in_model_order(source: DataSource | None, inputs: ModelInputs) -> DataSource | None:
    """``source`` with each sample's fields in the order the model takes its ``inputs``
    (torch feeds them by position; the file may list them in another order)."""
    if isinstance(source, NpzSource) and not inputs.is_single:
        return source.in_order(inputs.names)
    return source


def open_source(
    spec: DataSpec,
    *,
    verify: bool = True,
    cache_dir: Path | None = None,
    cache_bytes: int = 0,
    loader_workers: int = 0,
) -> DataSource:
    """The source ``spec`` names, opened and checked (ConfigError for bad data). A folder
    opens with the recorded ``recipe`` and ``split``; with ``verify`` and a recorded
    fingerprint, a folder whose contents changed since is a ConfigError (a trial child, whose
    run's set-up checked it, passes ``verify=False`` rather than hash the folder again).
    ``cache_dir`` (``RUN/cache/data``) and ``cache_bytes`` > 0: a folder reads its decoded
    images through a ``DataCache`` there of at most that size; ``loader_workers``: the
    DataLoader workers its fine-tunes read with (an npz, in memory, has neither)."""
    if spec.kind is DataKind.NPZ and spec.path is not None:
        return NpzSource.open(spec.path)
    if spec.kind is DataKind.FOLDER and spec.path is not None:
        if spec.recipe is None:
            raise ConfigError(f"the run's folder data {spec.path} records no preprocessing")
        ratio = SplitRatio.from_dict(spec.split) if spec.split is not None else None
        known = None if verify else spec.fingerprint
        recipe = Preprocess.from_dict(spec.recipe)
        augment = spec.augmentation or Augmentation()
        source = FolderSource(spec.path, recipe, ratio, fingerprint=known, augment=augment)
        if verify and spec.fingerprint is not None and source.fingerprint() != spec.fingerprint:
            raise ConfigError(
                f"the data is not what this run started with: the images in {spec.path} "
                "changed since (files added, removed or edited)",
                hint="restore the folder, or pass a new --out to start a run on this data",
            )
        if cache_dir is not None and cache_bytes > 0:
            counts = {s: source.count(s) for s in source.splits}
            source.cache = DataCache.for_source(
                cache_dir,
                source.fingerprint(),
                source.recipe,
                counts,
                cache_bytes,
                eval_samples=EVAL_SAMPLES,
                eval_seed=EVAL_SEED,
            )
        source.loader_workers = loader_workers
        return source
    if spec.kind is DataKind.CALLABLE:
        return _open_callable(spec, verify=verify)
    raise ConfigError(f"--data of kind {spec.kind} is not supported by this edgeopt")


def _open_callable(spec: DataSpec, *, verify: bool) -> CallableSource:
    """The Datasets of the callable the command line named (``spec.ref``); a record never
    names one, so without it: ConfigError saying to pass it."""
    spec.check_named()
    assert spec.ref is not None
    source = CallableSource(spec.ref, fingerprint=None if verify else spec.fingerprint)
    if verify and spec.fingerprint is not None and source.fingerprint() != spec.fingerprint:
        raise ConfigError(
            f"the data is not what this run started with: --data {spec.ref} returns other "
            "samples (lengths, labels or inputs differ)",
            hint="pass the callable the run was started with (its Datasets must be "
            "deterministic), or a new --out to start a run on this data",
        )
    return source


def is_streamed(source: DataSource | DataBundle | None) -> bool:
    """Whether ``source`` is read in batches (every kind but an npz's arrays, in memory)."""
    return source is not None and not isinstance(source, NpzSource | DataBundle)


def eval_count(source: DataSource, split: str) -> int:
    """How many samples of ``split`` scoring reads: all of an npz's, else at most
    ``EVAL_SAMPLES``."""
    n = source.count(split)
    return n if not is_streamed(source) else min(n, EVAL_SAMPLES)


def eval_batches(
    source: DataSource, split: str, batch: int = STREAM_BATCH
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """What scoring reads of ``split``: an npz's whole split in order, else the seeded
    ``EVAL_SAMPLES`` subset, one batch decoded at a time."""
    split = scored_split(source, split)
    if isinstance(source, NpzSource):
        return source.batches(split, batch)
    return source.batches(split, n=EVAL_SAMPLES, seed=EVAL_SEED, batch=batch)  # type: ignore[call-arg]


def scored_split(source: DataSource, split: str) -> str:
    """``split``, or ``val`` for a ``test`` the data lacks (as ``DataBundle.split`` does)."""
    return "val" if split == "test" and "test" not in source.splits else split


def first_inputs(source: DataSource, split: str, n: int) -> np.ndarray:
    """The first ``n`` inputs of ``split`` (an npz's ``x[:n]``): parity and timing samples."""
    return source.subset(split, n, None)[0]


def fingerprint_of(spec: DataSpec) -> str:
    """The fingerprint of the data ``spec`` names: an npz's is computed from its file now
    (its arrays are not loaded); any other kind's is the one set-up recorded."""
    if spec.kind is DataKind.NPZ and spec.path is not None:
        return NpzSource(spec.path).fingerprint()
    if spec.fingerprint is None:
        raise ConfigError(f"the run's {spec.kind} data recorded no fingerprint")
    return spec.fingerprint


def add_to_salt(h: _Hash, source: DataSource) -> None:
    """Feed ``source``'s identity to ``h``, the hash of a run's salt (part of every cache
    key): an npz's file bytes, as every run hashed them before sources (a new formula would
    orphan the caches and baseline trials of runs and studies started before), any other
    kind's ``fingerprint()``."""
    if isinstance(source, NpzSource):
        source.hash_file(h)
    else:
        h.update(source.fingerprint().encode())
