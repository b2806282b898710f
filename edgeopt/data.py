"""Datasets as plain numpy splits, loaded from a user's ``.npz``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import ConfigError

_REQUIRED = ("x_train", "y_train", "x_val", "y_val")


@dataclass(frozen=True)
class DataBundle:
    """Train/validation/test splits of a classification task.

    ``x_*`` are float32 arrays shaped ``(N, *input_shape)``; ``y_*`` are int64 class indices.
    The search selects on the validation split; the test split (when present) is only used
    for the final numbers of the front.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max())) + 1

    def max_label(self) -> tuple[str, int]:
        """``(split, label)``: the highest class label over all splits and where it is."""
        splits = ("train", "val", "test") if self.has_test else ("train", "val")
        tops = [(int(getattr(self, f"y_{s}").max()), s) for s in splits]
        top, split = max(tops, key=lambda t: t[0])
        return split, top

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of ``train``, ``val`` or ``test`` (test falls back to val if absent)."""
        if name == "test" and self.x_test is None:
            name = "val"
        x, y = getattr(self, f"x_{name}"), getattr(self, f"y_{name}")
        return x, y

    @property
    def has_test(self) -> bool:
        return self.x_test is not None


def load_npz(path: str | Path) -> DataBundle:
    """Load and validate an ``.npz`` with ``x_train, y_train, x_val, y_val[, x_test, y_test]``."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"data file not found: {p}", hint="pass --data path/to/data.npz")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays: dict[str, Any] = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile/ValueError/OSError: all mean "not a readable npz"
        raise ConfigError(
            f"cannot read data file {p}: {exc}",
            hint="--data expects an .npz from numpy.savez with x_train, y_train, x_val, y_val",
        ) from exc
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        has = ", ".join(sorted(arrays)) or "none"
        raise ConfigError(
            f"data file {p} lacks arrays {', '.join(missing)} (has {has})",
            hint="save x_train, y_train, x_val, y_val (and optionally x_test, y_test)",
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ConfigError(
            f"data file {p} has only one of x_test/y_test", hint="save both or neither"
        )
    out: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" in arrays:
            x, y = _checked_split(p, split, arrays[f"x_{split}"], arrays[f"y_{split}"])
            out[f"x_{split}"], out[f"y_{split}"] = x, y
    shapes = {out[f"x_{s}"].shape[1:] for s in ("train", "val", "test") if f"x_{s}" in out}
    if len(shapes) != 1:
        raise ConfigError(f"data file {p}: splits have different sample shapes {sorted(shapes)}")
    return DataBundle(**out)


def _checked_split(
    p: Path, split: str, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split as float32 / int64, or ConfigError naming what is wrong: an
    empty split, a length mismatch, non-numeric inputs, labels that are not 1-D non-negative
    integers, or NaN/infinite inputs (also values beyond float32's range)."""
    if x.ndim == 0 or len(x) == 0:
        raise ConfigError(
            f"data file {p}: the {split} split is empty (x_{split} has no samples)",
            hint=f"save at least one sample in x_{split} and its label in y_{split}",
        )
    if y.ndim == 0 or len(x) != len(y):
        raise ConfigError(
            f"data file {p}: x_{split} has {len(x)} samples but y_{split} has "
            f"{len(y) if y.ndim else 'a single value'}",
            hint="each x_* must have one label per sample in y_*",
        )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ConfigError(
            f"data file {p}: x_{split} must hold numbers, got {x.dtype}",
            hint="store inputs as a float array shaped (samples, *input_shape)",
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(
            f"data file {p}: y_{split} must hold integer class indices, got {y.dtype}",
            hint="store labels as int64 class indices, not one-hot or float",
        )
    if y.ndim != 1:
        raise ConfigError(
            f"data file {p}: y_{split} must be one class index per sample, got shape {y.shape}",
            hint="one-hot labels: store y.argmax(axis=1)",
        )
    if int(y.min()) < 0:
        raise ConfigError(
            f"data file {p}: y_{split} holds negative labels (lowest {int(y.min())})",
            hint="class indices start at 0",
        )
    with np.errstate(over="ignore"):  # too-large values become inf, reported below
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x32)
    if not finite.all():
        n_nan = int(np.isnan(x32).sum())
        n_inf = int(finite.size - finite.sum()) - n_nan
        first = int(np.argmin(finite.reshape(len(x32), -1).all(axis=1)))
        raise ConfigError(
            f"data file {p}: x_{split} holds {n_nan} NaN and {n_inf} infinite values "
            f"(first in sample {first})",
            hint="clean or impute them first; values beyond float32's range also become infinite",
        )
    return x32, np.ascontiguousarray(y, dtype=np.int64)


def synthetic_inputs(input_shape: Sequence[int], n: int, seed: int) -> np.ndarray:
    """``n`` seeded standard-normal float32 inputs of one sample's ``input_shape``: the
    stand-in data when there is no ``--data`` (timing, parity checks, calibration, fidelity).
    The same ``(shape, n, seed)`` always gives the same array."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *input_shape)).astype(np.float32)


def split_sizes(path: str | Path) -> dict[str, int | None]:
    """``{"n_val": .., "n_test": ..}``: the samples each accuracy of a run rests on (the test
    split falls back to validation when the file has none, as the search does). Reads only
    the label arrays; both None when the file cannot be read here (another machine's path)."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            n_val = len(z["y_val"])
            n_test = len(z["y_test"]) if "y_test" in z.files else n_val
    except Exception:  # a report still renders, without intervals
        return {"n_val": None, "n_test": None}
    return {"n_val": int(n_val), "n_test": int(n_test)}
