"""Datasets as plain numpy splits, loaded from a user's ``.npz``: all of train/val[/test] for
a search (``load_npz``), any one labelled split for a command that only scores
(``load_scoring_npz``)."""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeopt.data.npz_inputs import assembled, checked_inputs, data_inputs, in_order
from edgeopt.errors import ConfigError
from edgeopt.inputs import ModelInputs
from edgeopt.loading.limits import check_input_size

_REQUIRED = ("x_train", "y_train", "x_val", "y_val")


@dataclass(frozen=True)
class DataBundle:
    """Train/validation/test splits of a classification task.

    ``x_*`` are float32 arrays shaped ``(N, *input_shape)`` for a model with one float input;
    for a model with several (or integer) inputs they are structured arrays ``(N,)`` with one
    field per input (``edgeopt.inputs``: int64 token ids and masks, float32 others), from
    the file's per-input arrays ``x_<split>.<name>`` or its structured ``x_<split>``.
    ``y_*`` are int64 class indices.
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
        """Shape of one sample, without the batch dimension (the first input's, for
        several inputs)."""
        return sample_shape(self.x_train)

    @property
    def inputs(self) -> ModelInputs | None:
        """The inputs each sample holds when they are several (or integer), else None."""
        return data_inputs(self.x_train)

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max())) + 1

    def in_order(self, names: Sequence[str]) -> DataBundle:
        """These splits with each structured sample's fields in ``names``' order (the
        model's inputs: torch takes them by position); plain arrays unchanged."""
        xs = {f: getattr(self, f) for f in ("x_train", "x_val", "x_test")}
        return replace(self, **{f: in_order(x, names) for f, x in xs.items() if x is not None})

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
    """Load and validate an ``.npz`` with ``x_train, y_train, x_val, y_val[, x_test, y_test]``
    (what a search needs: it trains and selects). ConfigError (exit 2) for a file that is not
    a readable npz, lacks a split, or holds a split that cannot be right (``_checked_split``).
    """
    p = Path(path)
    arrays = assembled(p, _read_npz(p))
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        has = ", ".join(sorted(arrays)) or "none"
        raise ConfigError(
            f"data file {p} lacks arrays {', '.join(missing)} (has {has})",
            hint="save x_train, y_train, x_val, y_val (and optionally x_test, y_test)",
        )
    return DataBundle(**_checked_splits(p, arrays))


SCORING_ORDER = ("test", "val", "train")
"""The split a command that only scores (bench, check) uses: the first one the file holds."""


@dataclass(frozen=True)
class ScoringData:
    """The labelled data of a command that only scores a model (bench, check): every split
    the file holds (checked alike), and ``scored``, the one its numbers come from (the first
    of ``SCORING_ORDER`` present)."""

    splits: Mapping[str, tuple[np.ndarray, np.ndarray]]
    scored: str

    @property
    def x(self) -> np.ndarray:
        return self.splits[self.scored][0]

    @property
    def y(self) -> np.ndarray:
        return self.splits[self.scored][1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension (the first input's, for
        several inputs)."""
        return sample_shape(self.x)

    @property
    def inputs(self) -> ModelInputs | None:
        """The inputs each sample holds when they are several (or integer), else None."""
        return data_inputs(self.x)

    def sample(self, n: int) -> np.ndarray:
        """The first ``n`` inputs of the scored split."""
        return self.x[:n]

    def scoring_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(x, y)`` of the scored split: here one batch, the arrays already in memory."""
        yield self.x, self.y

    def max_label(self) -> tuple[str, int]:
        """``(split, label)``: the highest class label over all splits and where it is."""
        tops = [(int(y.max()), s) for s, (_, y) in self.splits.items()]
        top, split = max(tops, key=lambda t: t[0])
        return split, top


def load_scoring_npz(path: str | Path) -> ScoringData:
    """Load and validate an ``.npz`` for scoring only: any of the splits of ``load_npz``
    (``x_val, y_val`` alone will do); the test split is scored, else val, else train.
    ConfigError as in ``load_npz``, and for a file with no labelled split."""
    p = Path(path)
    arrays = assembled(p, _read_npz(p))
    splits = _checked_splits(p, arrays)
    present = [s for s in SCORING_ORDER if f"x_{s}" in splits]
    if not present:
        has = ", ".join(sorted(arrays)) or "none"
        raise ConfigError(
            f"data file {p} has no labelled split: it lacks arrays x_test, y_test (or x_val, "
            f"y_val, or x_train, y_train) (has {has})",
            hint="save the inputs and labels to score on as x_val, y_val (or x_test, y_test)",
        )
    return ScoringData({s: (splits[f"x_{s}"], splits[f"y_{s}"]) for s in present}, present[0])


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    """Every array of the npz ``p``; ConfigError for a missing file, one that is not an npz
    (a single .npy array, random bytes, a zip of other files), a damaged one, or one holding
    Python objects (which would need unpickling)."""
    if not p.exists():
        raise ConfigError(f"data file not found: {p}", hint="pass --data path/to/data.npz")
    hint = "--data expects an .npz from numpy.savez(path, x_train=..., y_train=..., ...)"
    _require_regular_file(p, hint)  # opening a FIFO blocks, /dev/zero never ends
    try:
        with p.open("rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise ConfigError(f"cannot read data file {p}: {exc.strerror or exc}") from exc
    if head.startswith(_NPY_MAGIC):
        raise ConfigError(f"data file {p} is a single .npy array, not an .npz", hint=hint)
    if not head.startswith(_ZIP_MAGIC):
        # numpy would try it as a pickle and point at allow_pickle: it is simply no npz
        raise ConfigError(f"data file {p} is not a valid .npz (not a zip archive)", hint=hint)
    _check_unpacked_size(p)
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(p, allow_pickle=False) as z:
            for key in z.files:
                try:
                    value = z[key]
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):
                        raise
                    raise ConfigError(
                        f"data file {p}: {key} holds Python objects (dtype object), which "
                        "edgeopt does not unpickle",
                        hint=f"save {key} as a numeric array, e.g. np.asarray({key}, "
                        "dtype=np.float32)",
                    ) from exc
                if not isinstance(value, np.ndarray):  # a member that is no .npy file
                    raise ConfigError(
                        f"data file {p} is not a valid .npz: member {key!r} is not a numpy array",
                        hint=hint,
                    )
                arrays[key] = value
    except ConfigError:
        raise
    except Exception as exc:  # zipfile/ValueError/OSError: all mean "not a readable npz"
        raise ConfigError(
            f"data file {p} is not a valid .npz: {exc}",
            hint="the file may be truncated or damaged; save it again with numpy.savez",
        ) from exc
    return arrays


def _require_regular_file(p: Path, hint: str) -> None:
    """ConfigError unless ``p`` is a regular file (not a directory, FIFO or device)."""
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read data file {p}: {exc.strerror or exc}") from exc
    if stat.S_ISREG(mode):
        return
    kind = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a device or other special file"
    )
    raise ConfigError(f"data file {p} is {kind}, not a regular file", hint=hint)


def _check_unpacked_size(p: Path) -> None:
    """ConfigError when the arrays of the npz ``p`` would unpack to more than this machine's
    memory (a compressed file of zeros can declare terabytes), read from the zip's directory
    before any array is."""
    try:
        with zipfile.ZipFile(p) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # np.load below says what is wrong with it
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    if total > memory:
        raise ConfigError(
            f"data file {p} unpacks to {total / 2**30:,.1f} GiB of arrays, more than this "
            f"machine's {memory / 2**30:,.1f} GiB of memory",
            hint="use a smaller data file (a sample of the splits is enough for the search), "
            "or run on a machine with more memory",
        )


def _checked_splits(p: Path, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``x_<split>``/``y_<split>`` of every split present, checked (``_checked_split``) and of
    one sample shape; ConfigError for a split with inputs but no labels or the reverse."""
    out: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        x_key, y_key = f"x_{split}", f"y_{split}"
        if (x_key in arrays) != (y_key in arrays):
            absent = y_key if x_key in arrays else x_key
            raise ConfigError(
                f"data file {p} has only one of {x_key}/{y_key}: lacks arrays {absent} "
                f"(has {', '.join(sorted(arrays))})",
                hint=f"save both {x_key} and its labels {y_key}, or neither",
            )
        if x_key in arrays:
            out[x_key], out[y_key] = _checked_split(p, split, arrays[x_key], arrays[y_key])
    shapes = {out[f"x_{s}"].shape[1:] for s in ("train", "val", "test") if f"x_{s}" in out}
    if len(shapes) > 1:
        raise ConfigError(f"data file {p}: splits have different sample shapes {sorted(shapes)}")
    kinds = {_inputs_text(out[f"x_{s}"]) for s in ("train", "val", "test") if f"x_{s}" in out}
    if len(kinds) > 1:
        raise ConfigError(
            f"data file {p}: splits hold different inputs ({'; '.join(sorted(kinds))})",
            hint="save the same inputs, of the same shapes, for every split",
        )
    return out


def sample_shape(x: np.ndarray) -> tuple[int, ...]:
    """One sample's shape of ``x``: a plain array's, or a structured one's first field's."""
    if x.dtype.names:
        return tuple(int(d) for d in x.dtype.fields[x.dtype.names[0]][0].shape)
    return tuple(int(d) for d in x.shape[1:])


def _inputs_text(x: np.ndarray) -> str:
    """``input_ids (32,) int64, ...`` for a structured array; ``""`` for a plain one."""
    if not x.dtype.names:
        return ""
    fields = [(n, x.dtype.fields[n][0]) for n in x.dtype.names]
    return ", ".join(f"{n} {d.shape} {d.base}" for n, d in fields)


def _checked_split(
    p: Path, split: str, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split as float32 / int64 (a structured ``x``, several inputs: as
    ``npz_inputs.checked_inputs``), or ConfigError naming what is wrong: an empty split, a
    length mismatch, non-numeric inputs, labels that are not 1-D non-negative integers, or
    NaN/infinite inputs (also values beyond float32's range)."""
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
    if x.dtype.names is not None:
        return checked_inputs(p, split, x), _checked_labels(p, split, y)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        # raw pixels (uint8 0..255) fed to a model trained on normalised floats score at
        # chance, and nothing else would say why
        raise ConfigError(
            f"data file {p}: x_{split} holds {x.dtype} values; edgeopt feeds inputs to the "
            "model as they are, and a model takes them as floats, preprocessed as in training",
            hint="convert and normalise them as the model was trained, e.g. "
            "x = (x.astype(np.float32) / 255 - mean) / std, then save the .npz again; token "
            f"ids go in per-input arrays, e.g. x_{split}.input_ids",
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(
            f"data file {p}: x_{split} must hold numbers, got {x.dtype}",
            hint="store inputs as a float array shaped (samples, *input_shape)",
        )
    if x.ndim < 2:
        raise ConfigError(
            f"data file {p}: x_{split} has shape {x.shape}: no sample dimensions",
            hint="store inputs shaped (samples, *input_shape), e.g. (N, 1, 16, 16); one "
            "number per sample is (N, 1)",
        )
    y64 = _checked_labels(p, split, y)
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
    return x32, y64


def _checked_labels(p: Path, split: str, y: np.ndarray) -> np.ndarray:
    """``y_<split>`` as int64, or ConfigError: labels must be 1-D non-negative integers."""
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
    return np.ascontiguousarray(y, dtype=np.int64)


def synthetic_inputs(input_shape: Sequence[int], n: int, seed: int) -> np.ndarray:
    """``n`` seeded standard-normal float32 inputs of one sample's ``input_shape``: the
    stand-in data when there is no ``--data`` (timing, parity checks, calibration, fidelity).
    The same ``(shape, n, seed)`` always gives the same array."""
    # callers checked the shape already; this one may come from a run directory's record
    check_input_size(input_shape, "a synthetic input's shape")
    rng = np.random.default_rng(seed)
    out = np.empty((n, *input_shape), dtype=np.float32)
    # a few samples at a time: the float64 draws of all n at once would triple the memory
    step = max(1, _SYNTHETIC_CHUNK // max(1, out[:1].size))
    for i in range(0, n, step):
        out[i : i + step] = rng.standard_normal(out[i : i + step].shape)
    return out


_SYNTHETIC_CHUNK = 1 << 20
"""Values drawn per step of ``synthetic_inputs`` (8 MiB of float64)."""

MIN_SPLIT_SAMPLES = 100
"""Below this, an accuracy measured on a split is too uncertain to compare models by: the
CLI warns with the 95 % interval it implies."""


def sample_counts(path: str | Path) -> dict[str, int]:
    """``{split: samples}`` of every labelled split of the npz ``path`` (reads only the
    labels); empty when the file cannot be read."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            return {s: len(z[f"y_{s}"]) for s in ("train", "val", "test") if f"y_{s}" in z.files}
    except Exception:  # what load_npz reported already, or a file of another machine
        return {}


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
