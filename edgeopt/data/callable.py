"""The user's own torch Datasets as a data source: ``--data module:callable`` names a function
that returns ``(train, val[, test])``, each a map-style ``torch.utils.data.Dataset`` (``len``
and ``__getitem__(i) -> (x, y)``, ``y`` a class index) or a ``DataLoader`` over one (its
dataset is read; its batching, sampler and collate function are not).

Importing and calling it runs the user's code, so it happens only because the command line
named it (like ``--arch``): the reference is never written to a run directory or a study.
Samples are read one at a time when asked for (``subset``, ``batches``, ``take``), never the
whole set at once; labels come from ``dataset.targets`` when it has them, else are read once
and kept as an int array. The Datasets should be deterministic: a run's fingerprint covers a
seeded handful of their samples, and a resume with different ones is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import Any

import numpy as np

from edgeopt.errors import ConfigError
from edgeopt.loading import resolve_callable

SPLITS = ("train", "val", "test")
FINGERPRINT_SAMPLES = 16
"""Samples per split (seeded) whose bytes the fingerprint covers, beside lengths and labels."""
_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def is_data_ref(text: str) -> bool:
    """Whether ``--data`` names a callable (``module:callable``) rather than a path: it holds
    a ``:`` and is no existing file or folder."""
    return ":" in text and not os.path.exists(text)


def resolve_data_callable(ref: str) -> Callable[[], Any]:
    """Import ``module:callable`` for ``--data`` (runs the module's code: only for a
    reference the command line named). ConfigError, one line, when it cannot."""
    if not _REF.fullmatch(ref):
        raise ConfigError(
            f"--data {ref!r} is neither an existing path nor a module:callable reference",
            hint="pass an .npz, a folder of images, or e.g. --data mypkg.data:make_datasets",
        )
    return resolve_callable(ref, "--data")  # type: ignore[no-any-return]


class CallableSource:
    """The splits ``ref``'s callable returns, checked at construction (ConfigError, exit 2):
    two or three map-style Datasets (or DataLoaders over them), none empty, samples of one
    shape, integer labels. ``fingerprint``: the run's recorded one (not computed again)."""

    kind = "callable"

    def __init__(self, ref: str, *, fingerprint: str | None = None) -> None:
        made = _call(ref)
        self._sets = {s: _dataset(d, s, ref) for s, d in zip(SPLITS, made, strict=False)}
        self._labels: dict[str, np.ndarray] = {}
        self._fingerprint = fingerprint
        shapes = {s: self._x(s, 0).shape for s in self.splits}
        if len(set(shapes.values())) > 1:
            raise ConfigError(
                f"--data {ref}: samples differ in shape between splits ({shapes})",
                hint="every split's x must have the model's input shape, e.g. (3, 224, 224)",
            )
        self.input_shape: tuple[int, ...] = shapes["train"]
        classes = getattr(self._sets["train"], "classes", None)
        ok = isinstance(classes, Sequence) and all(isinstance(c, str) for c in classes)
        self.class_names: tuple[str, ...] | None = tuple(classes) if ok else None  # type: ignore[arg-type]

    # -- the DataSource protocol ---------------------------------------------------------
    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._sets)

    @cached_property
    def num_classes(self) -> int:
        return max(len(self.class_names or ()), self.max_label()[1] + 1)

    def count(self, split: str) -> int:
        return len(self._split(split))

    def labels(self, split: str) -> np.ndarray:
        """Every label of ``split`` (int64): ``dataset.targets``, else each sample's ``y``,
        read once and kept (the inputs are not)."""
        if split not in self._labels:
            ds = self._split(split)
            targets = getattr(ds, "targets", None)
            if targets is not None and len(targets) == len(ds):
                y = _labels(targets, split)
            else:
                y = _labels([ds[i][1] for i in range(len(ds))], split)
            self._labels[split] = y
        return self._labels[split]

    def max_label(self) -> tuple[str, int]:
        """``(split, label)``: the highest class label over all splits and where it is."""
        return max(((s, int(self.labels(s).max())) for s in self.splits), key=lambda t: t[1])

    def subset(self, split: str, n: int, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``min(n, count)`` samples of ``split``: the first ones (``seed`` None), else a
        seeded draw without replacement."""
        return self.take(split, self._order(split, n, seed))

    def batches(
        self, split: str, n: int | None = None, seed: int | None = 0, batch: int = 64
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(x, y)`` batches of ``batch`` samples read as they are consumed: all of
        ``split`` in order (``n`` None), else the ``subset(split, n, seed)``."""
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        if n is None:
            n, seed = self.count(split), None
        order = self._order(split, n, seed)
        for i in range(0, len(order), batch):
            yield self.take(split, order[i : i + batch])

    def take(self, split: str, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The samples of ``split`` at ``indices``: ``x`` float32 ``(len, *input_shape)``."""
        x = np.empty((len(indices), *self.input_shape), dtype=np.float32)
        y = np.empty(len(indices), dtype=np.int64)
        for k, i in enumerate(indices):
            x[k], y[k] = self._sample(split, int(i))
        return x, y

    def fingerprint(self) -> str:
        """sha256 (hex) over each split's length and labels and the bytes of a seeded
        ``FINGERPRINT_SAMPLES`` of its samples."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(json.dumps({s: self.count(s) for s in self.splits}).encode())
            for s in self.splits:
                h.update(self.labels(s).astype("<i8").tobytes())
                x, y = self.subset(s, FINGERPRINT_SAMPLES, 0)
                h.update(x.astype("<f4").tobytes() + y.astype("<i8").tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        """What a run records about its data (``data.json``, the report): never the
        reference of the callable."""
        return {
            "kind": self.kind,
            "path": None,
            "input_shape": list(self.input_shape),
            "classes": list(self.class_names) if self.class_names else None,
            "counts": {s: self.count(s) for s in self.splits},
            "class_counts": {
                s: np.bincount(self.labels(s), minlength=self.num_classes).tolist()
                for s in self.splits
            },
            "recipe": None,
            "fingerprint": self.fingerprint(),
            "fingerprint_basis": f"lengths, labels and {FINGERPRINT_SAMPLES} seeded samples "
            "per split",
        }

    # -- internals -----------------------------------------------------------------------
    def _split(self, split: str) -> Any:
        if split not in self._sets:
            raise ValueError(f"the --data callable has no {split!r} split (it has {self.splits})")
        return self._sets[split]

    def _order(self, split: str, n: int, seed: int | None) -> list[int]:
        total = self.count(split)
        if seed is None:
            return list(range(min(n, total)))
        return np.random.default_rng(seed).permutation(total)[: min(n, total)].tolist()

    def _x(self, split: str, i: int) -> np.ndarray:
        return _as_array(_pair(self._split(split)[i], split)[0], split)

    def _sample(self, split: str, i: int) -> tuple[np.ndarray, int]:
        x, y = _pair(self._split(split)[i], split)
        x = _as_array(x, split)
        if x.shape != self.input_shape:
            raise ConfigError(
                f"--data: sample {i} of {split} has shape {x.shape}, not {self.input_shape} "
                "as the first training sample",
                hint="every sample's x must have the model's input shape",
            )
        return x, int(_labels([y], split)[0])


def _call(ref: str) -> tuple[Any, ...]:
    made = resolve_data_callable(ref)()
    if not isinstance(made, tuple | list) or len(made) not in (2, 3):
        raise ConfigError(
            f"--data {ref} returned {type(made).__name__}, not (train, val) or (train, val, test)",
            hint="return a tuple of 2 or 3 torch Datasets (or DataLoaders)",
        )
    return tuple(made)


def _dataset(obj: Any, split: str, ref: str) -> Any:
    """``obj`` as a map-style Dataset: a DataLoader's dataset; ConfigError for an iterable
    one (it has no length or random access) or an empty one."""
    from torch.utils.data import DataLoader, IterableDataset

    if isinstance(obj, DataLoader):
        obj = obj.dataset
    if isinstance(obj, IterableDataset):
        raise ConfigError(
            f"--data {ref}: the {split} split is an IterableDataset; edgeopt needs a map-style "
            "Dataset (len and indexing) to draw seeded subsets and batches",
            hint="return a torch.utils.data.Dataset with __len__ and __getitem__ for each split",
        )
    if not (hasattr(obj, "__len__") and hasattr(obj, "__getitem__")):
        raise ConfigError(
            f"--data {ref}: the {split} split is a {type(obj).__name__}, not a Dataset",
            hint="return torch Datasets (len and __getitem__(i) -> (x, y)) or DataLoaders",
        )
    if len(obj) == 0:
        raise ConfigError(f"--data {ref}: the {split} split is empty")
    return obj


def _pair(item: Any, split: str) -> tuple[Any, Any]:
    if not isinstance(item, tuple | list) or len(item) < 2:
        raise ConfigError(
            f"--data: a {split} sample is a {type(item).__name__}, not an (x, y) pair",
            hint="each Dataset's __getitem__ must return (input, class index)",
        )
    return item[0], item[1]


def _as_array(x: Any, split: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, wherever it lies
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"--data: a {split} input ({type(x).__name__}) is not an array of numbers: {exc}",
            hint="return tensors or numpy arrays as inputs (e.g. with a ToTensor transform)",
        ) from exc


def _labels(values: Any, split: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    try:
        y = np.asarray([int(v) for v in np.asarray(values).reshape(-1)], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"--data: {split} labels are not class indices: {exc}",
            hint="each sample's y must be an integer class index (0 .. classes-1)",
        ) from exc
    if y.size and y.min() < 0:
        raise ConfigError(f"--data: {split} has a negative label ({int(y.min())})")
    return y
