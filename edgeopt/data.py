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
        raise ConfigError(
            f"data file {p} lacks arrays {', '.join(missing)} (has {', '.join(sorted(arrays))})",
            hint="save x_train, y_train, x_val, y_val (and optionally x_test, y_test)",
        )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ConfigError(
            f"data file {p} has only one of x_test/y_test", hint="save both or neither"
        )
    out: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in arrays:
            continue
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y) or len(x) == 0:
            raise ConfigError(
                f"data file {p}: x_{split} has {len(x)} samples but y_{split} has {len(y)}",
                hint="each x_* must have one label per sample in y_* and at least one sample",
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise ConfigError(
                f"data file {p}: y_{split} must hold integer class indices, got {y.dtype}",
                hint="store labels as int64 class indices, not one-hot or float",
            )
        out[f"x_{split}"] = np.ascontiguousarray(x, dtype=np.float32)
        out[f"y_{split}"] = np.ascontiguousarray(y, dtype=np.int64)
    shapes = {out[f"x_{s}"].shape[1:] for s in ("train", "val", "test") if f"x_{s}" in out}
    if len(shapes) != 1:
        raise ConfigError(f"data file {p}: splits have different sample shapes {sorted(shapes)}")
    return DataBundle(**out)


def synthetic_inputs(input_shape: Sequence[int], n: int, seed: int) -> np.ndarray:
    """``n`` seeded standard-normal float32 inputs of one sample's ``input_shape``: the
    stand-in data when there is no ``--data`` (timing, parity checks, calibration, fidelity).
    The same ``(shape, n, seed)`` always gives the same array."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *input_shape)).astype(np.float32)
