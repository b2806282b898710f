"""The inputs of an ``.npz`` for a model with several (or integer) inputs: per-input arrays
``x_<split>.<name>`` (``x_train.input_ids``, ``x_train.attention_mask``), or one structured
``x_<split>``, become a numpy structured array ``(N,)`` with one field per input
(``edgeopt.inputs``). Integer inputs stay integer (int64), float ones become float32."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.lib.recfunctions import repack_fields

from edgeopt.errors import ConfigError
from edgeopt.inputs import InputSpec, ModelInputs

SPLITS = ("train", "val", "test")


def assembled(p: Path, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` with each split's per-input arrays ``x_<split>.<name>`` joined into one
    structured ``x_<split>`` (fields in the file's order); ConfigError for a split given both
    ways, or whose inputs differ in their number of samples. Anything else is left as it is
    (``checked_inputs`` checks the fields)."""
    out = {k: v for k, v in arrays.items() if not _input_key(k)}
    for split in SPLITS:
        x_key = f"x_{split}"
        parts = {k[len(x_key) + 1 :]: v for k, v in arrays.items() if k.startswith(x_key + ".")}
        if not parts:
            continue
        if x_key in arrays:
            raise ConfigError(
                f"data file {p} has both {x_key} and per-input arrays "
                f"{', '.join(f'{x_key}.{n}' for n in parts)}",
                hint=f"save the inputs either as one {x_key} or as {x_key}.<input name> each",
            )
        sizes = {n: (len(v) if v.ndim else 0) for n, v in parts.items()}
        if len(set(sizes.values())) > 1:
            listed = ", ".join(f"{x_key}.{n} has {s}" for n, s in sizes.items())
            raise ConfigError(
                f"data file {p}: the inputs of the {split} split differ in their number of "
                f"samples ({listed})",
                hint="every input of a split holds one row per sample, in the same order",
            )
        for name, v in parts.items():
            if v.ndim < 2 or v.dtype.names is not None:
                raise ConfigError(
                    f"data file {p}: {x_key}.{name} has shape {v.shape}: it needs a sample "
                    "axis and at least one dimension per sample",
                    hint=f"store it shaped (samples, sequence length), e.g. ({sizes[name]}, 32)",
                )
        dtype = np.dtype([(n, v.dtype, v.shape[1:]) for n, v in parts.items()])
        x = np.empty(len(next(iter(parts.values()))), dtype=dtype)
        for n, v in parts.items():
            x[n] = v
        out[x_key] = x
    return out


def _input_key(key: str) -> bool:
    return any(key.startswith(f"x_{s}.") for s in SPLITS)


def checked_inputs(p: Path, split: str, x: np.ndarray) -> np.ndarray:
    """The structured ``x_<split>`` with integer (and bool) fields as int64 and float fields
    as finite float32, contiguous; ConfigError for a field of another kind, an empty one,
    NaN/infinite floats or integers beyond int64."""
    fields: list[tuple[str, np.dtype, tuple[int, ...]]] = []
    for name in x.dtype.names or ():
        base, shape = x.dtype.fields[name][0].base, x.dtype.fields[name][0].shape
        where = f"x_{split}.{name}"
        if not shape:
            raise ConfigError(
                f"data file {p}: {where} holds one number per sample",
                hint="store each input shaped (samples, sequence length), e.g. (N, 32)",
            )
        if base.kind in "iub":
            col = x[name]
            if base.kind == "u" and col.size and int(col.max()) > np.iinfo(np.int64).max:
                raise ConfigError(f"data file {p}: {where} holds values beyond int64")
            fields.append((name, np.dtype(np.int64), shape))
        elif base.kind == "f":
            fields.append((name, np.dtype(np.float32), shape))
        else:
            raise ConfigError(
                f"data file {p}: {where} must hold numbers, got {base}",
                hint="store token ids and masks as integers, other inputs as floats",
            )
    out = np.empty(len(x), dtype=np.dtype(fields))
    for name, dtype, _ in fields:
        with np.errstate(over="ignore"):  # too-large floats become inf, reported below
            out[name] = x[name].astype(dtype)
        if dtype.kind == "f" and not np.isfinite(out[name]).all():
            bad = int((~np.isfinite(out[name])).sum())
            raise ConfigError(
                f"data file {p}: x_{split}.{name} holds {bad} NaN or infinite values",
                hint="clean or impute them first; values beyond float32's range also become "
                "infinite",
            )
    return out


def data_inputs(x: np.ndarray) -> ModelInputs | None:
    """The inputs a structured sample array holds (names, sample shapes, dtypes; roles from
    the names), None for a plain array (one float input)."""
    if x.dtype.names is None:
        return None
    specs = []
    for name in x.dtype.names:
        sub = x.dtype.fields[name][0]
        specs.append(InputSpec.of(name, sub.shape, str(sub.base)))
    return ModelInputs(tuple(specs))


def in_order(x: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Structured samples ``x`` with their fields in ``names``' order (the model's input
    order: torch takes inputs by position, and the file may list them in another), packed;
    ``x`` itself when it is a plain array or already in that order."""
    if x.dtype.names is None or tuple(x.dtype.names) == tuple(names):
        return x
    return np.ascontiguousarray(repack_fields(x[list(names)]))
