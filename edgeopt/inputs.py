"""What a model takes: one float tensor (an image, today's case) or several named tensors
(token ids, an attention mask, token types), and how samples of them are held.

A model with one float input keeps its samples as a plain float32 array ``(N, *shape)``;
every single-input path works on that array unchanged. A model with several inputs (or an
integer one) holds a batch as a numpy structured array ``(N,)`` with one field per input:
indexing, slicing, concatenation and ``np.save``/``np.savez`` keep working on it, and
``ModelInputs.feeds`` turns it into the per-input arrays a runtime takes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import numpy as np

from edgeopt.errors import ConfigError

DTYPES = ("float32", "int64", "int32")
"""The element types edgeopt feeds."""

SINGLE_NAME = "input"
"""The name of a single float input (what ``onnx_export`` names it)."""

_NAME = re.compile(r"[A-Za-z_][\w.:/-]*")
_CHUNK = 1 << 20  # standard-normal values drawn per step (8 MiB of float64)


class InputRole(StrEnum):
    """What an input holds, which decides its synthetic values."""

    FLOAT = "float"
    TOKEN_IDS = "token_ids"
    MASK = "mask"
    TOKEN_TYPE = "token_type"


def infer_role(name: str, dtype: str) -> InputRole:
    """The role of input ``name`` of element type ``dtype``: floats are floats; among
    integer inputs a name with ``mask`` is a mask, one with ``type`` or ``segment`` a token
    type, anything else token ids."""
    if dtype == "float32":
        return InputRole.FLOAT
    low = name.lower()
    if "mask" in low:
        return InputRole.MASK
    if "type" in low or "segment" in low:
        return InputRole.TOKEN_TYPE
    return InputRole.TOKEN_IDS


@dataclass(frozen=True)
class InputSpec:
    """One input of a model: ``shape`` is one sample's, without the batch axis;
    ``vocab_size`` the rows of the embedding that reads token ids (None: unknown);
    ``seq_axis`` the axis of ``shape`` that is the sequence (None for images)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: InputRole
    vocab_size: int | None = None
    seq_axis: int | None = None

    @classmethod
    def of(
        cls,
        name: str,
        shape: Sequence[int],
        dtype: str,
        *,
        role: InputRole | None = None,
        vocab_size: int | None = None,
        seq_axis: int | None = None,
    ) -> InputSpec:
        """A spec whose role (from the name and dtype) and sequence axis (axis 0 of a 1-D
        integer input) are inferred unless given."""
        if dtype not in DTYPES:
            raise ValueError(f"input {name!r}: dtype {dtype!r} is not one of {DTYPES}")
        role = role or infer_role(name, dtype)
        if seq_axis is None and role is not InputRole.FLOAT and len(shape) == 1:
            seq_axis = 0
        return cls(name, tuple(int(d) for d in shape), dtype, role, vocab_size, seq_axis)

    def text(self) -> str:
        """``input_ids=32:int64``: the spec as ``--input-shape`` spells it."""
        return f"{self.name}={','.join(map(str, self.shape))}:{self.dtype}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "role": self.role.value,
            "vocab_size": self.vocab_size,
            "seq_axis": self.seq_axis,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """Read ``to_dict``'s output; ValueError for a malformed record (it is data)."""
        shape = data.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"input spec has an invalid shape: {shape!r}")
        vocab, axis = data.get("vocab_size"), data.get("seq_axis")
        if vocab is not None and not (isinstance(vocab, int) and vocab > 0):
            raise ValueError(f"input spec has an invalid vocab_size: {vocab!r}")
        if axis is not None and not (isinstance(axis, int) and 0 <= axis < len(shape)):
            raise ValueError(f"input spec has an invalid seq_axis: {axis!r}")
        return cls.of(
            str(data["name"]),
            shape,
            str(data["dtype"]),
            role=InputRole(data["role"]) if data.get("role") else None,
            vocab_size=vocab,
            seq_axis=axis,
        )


@dataclass(frozen=True)
class ModelInputs:
    """Every input of a model, in the order its forward / ONNX graph takes them."""

    specs: tuple[InputSpec, ...]

    @classmethod
    def single(cls, shape: Sequence[int]) -> ModelInputs:
        """Today's case: one float32 input of one sample's ``shape``."""
        return cls((InputSpec.of(SINGLE_NAME, shape, "float32"),))

    @property
    def is_single(self) -> bool:
        """One float input: samples are a plain float32 array ``(N, *shape)``."""
        return len(self.specs) == 1 and self.specs[0].dtype == "float32"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    @property
    def first_shape(self) -> tuple[int, ...]:
        """The first input's sample shape (``LoadedModel.input_shape``)."""
        return self.specs[0].shape

    @property
    def seq_len(self) -> int | None:
        """The sequence length of the first input that has a sequence axis, else None."""
        for s in self.specs:
            if s.seq_axis is not None:
                return s.shape[s.seq_axis]
        return None

    def text(self) -> str:
        """``input_ids=32:int64, attention_mask=32:int64``: for messages and hints."""
        return ", ".join(s.text() for s in self.specs)

    def record_dtype(self) -> np.dtype:
        """The structured dtype of one multi-input sample: one field per input."""
        return np.dtype([(s.name, np.dtype(s.dtype), s.shape) for s in self.specs])

    def with_seq_len(self, n: int) -> ModelInputs:
        """These inputs with every sequence axis set to ``n``."""
        out = []
        for s in self.specs:
            if s.seq_axis is not None:
                shape = list(s.shape)
                shape[s.seq_axis] = n
                s = replace(s, shape=tuple(shape))
            out.append(s)
        return ModelInputs(tuple(out))

    def synthetic(self, n: int, seed: int) -> np.ndarray:
        """``n`` seeded stand-in samples (no data): floats standard normal, token ids uniform
        in ``[0, vocab_size)`` (0 and 1 when the vocabulary is unknown: valid rows of any
        embedding), masks ones on a prefix of random length in ``[max(2, S//4), S]`` and zeros
        after (right padding), token types zeros. The same ``(inputs, n, seed)`` always gives
        the same samples."""
        rng = np.random.default_rng(seed)
        if self.is_single:
            return _normal(rng, (n, *self.specs[0].shape))
        out = np.zeros(n, dtype=self.record_dtype())
        for s in self.specs:
            if s.role is InputRole.FLOAT:
                out[s.name] = _normal(rng, (n, *s.shape))
            elif s.role is InputRole.TOKEN_IDS:
                out[s.name] = rng.integers(0, s.vocab_size or 2, (n, *s.shape))
            elif s.role is InputRole.MASK:
                out[s.name] = _right_padded(rng, n, s)
        return out

    def feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``{name: array}`` of batch ``x`` for a runtime: C-contiguous, each of its input's
        dtype. ValueError for a field that is missing or would change kind (float values
        for an integer input or the reverse: a cast would silently change them)."""
        if self.is_single:
            return {self.specs[0].name: np.ascontiguousarray(x, dtype=np.float32)}
        fields = x.dtype.names or ()
        out: dict[str, np.ndarray] = {}
        for s in self.specs:
            if s.name not in fields:
                raise ValueError(
                    f"the samples have no field {s.name!r} (they hold {', '.join(fields)})"
                )
            col = x[s.name]
            want = np.dtype(s.dtype)
            if (col.dtype.kind == "f") != (want.kind == "f"):
                raise ValueError(
                    f"input {s.name!r} holds {col.dtype} values, the model takes {want}: "
                    "a cast would change them"
                )
            out[s.name] = np.ascontiguousarray(col, dtype=want)
        return out

    def to_dict(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.specs]

    @classmethod
    def from_dict(cls, data: Sequence[Mapping[str, Any]]) -> ModelInputs:
        """Read ``to_dict``'s output; ValueError for a malformed record (it is data)."""
        if not isinstance(data, list | tuple) or not data:
            raise ValueError(f"model inputs must be a non-empty list, got {data!r}")
        return cls(tuple(InputSpec.from_dict(d) for d in data))


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal float32 of ``shape``, a few samples at a time: the float64 draws of
    all of them at once would triple the memory."""
    out = np.empty(shape, dtype=np.float32)
    step = max(1, _CHUNK // max(1, out[:1].size))
    for i in range(0, shape[0], step):
        out[i : i + step] = rng.standard_normal(out[i : i + step].shape)
    return out


def _right_padded(rng: np.random.Generator, n: int, spec: InputSpec) -> np.ndarray:
    """Masks of ``spec``: ones on a prefix of the sequence axis, zeros after."""
    axis = spec.seq_axis if spec.seq_axis is not None else len(spec.shape) - 1
    s = spec.shape[axis]
    lengths = rng.integers(min(s, max(2, s // 4)), s + 1, n)
    prefix = np.arange(s)[None, :] < lengths[:, None]  # (n, s)
    view = [n] + [1] * len(spec.shape)
    view[axis + 1] = s
    return np.broadcast_to(prefix.reshape(view), (n, *spec.shape)).astype(spec.dtype)


def parse_input_flags(values: Sequence[str]) -> tuple[int, ...] | ModelInputs | None:
    """The repeatable ``--input-shape``: nothing (None), one plain shape ``3,32,32`` (a
    tuple: the single-input case, as before), or one ``NAME=DIMS[:DTYPE]`` per input
    (``input_ids=32:int64``; DTYPE float32 when left out). ConfigError for anything else."""
    if not values:
        return None
    named = ["=" in v for v in values]
    if not any(named) and len(values) == 1:
        return parse_dims(values[0], values[0])
    if not all(named):
        raise ConfigError(
            f"--input-shape {' '.join(values)}: give one plain shape (3,32,32), or one "
            "NAME=DIMS[:DTYPE] per input",
            hint="e.g. --input-shape input_ids=32:int64 --input-shape attention_mask=32:int64",
        )
    specs: list[InputSpec] = []
    for v in values:
        name, _, rest = v.partition("=")
        dims, _, dtype = rest.partition(":")
        name, dtype = name.strip(), dtype.strip() or "float32"
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"--input-shape {v}: {name!r} is not an input NAME",
                hint="use NAME=DIMS[:DTYPE] with the model's input name, e.g. input_ids=32:int64",
            )
        if dtype not in DTYPES:
            raise ConfigError(
                f"--input-shape {v}: element type {dtype!r} is not one of {', '.join(DTYPES)}",
                hint=f"e.g. --input-shape {name}={dims}:int64",
            )
        if name in {s.name for s in specs}:
            raise ConfigError(f"--input-shape names input {name!r} twice")
        specs.append(InputSpec.of(name, parse_dims(dims, v), dtype))
    return ModelInputs(tuple(specs))


def parse_dims(text: str, flag: str | None = None) -> tuple[int, ...]:
    """``3,32,32`` or ``3x32x32`` as a shape; ConfigError naming the flag's value ``flag``
    (``text`` when not given)."""
    parts = [p for p in text.replace("x", ",").replace(" ", "").split(",") if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(
            f"invalid input shape {flag or text!r}",
            hint="give one sample's shape without the batch dimension, e.g. --input-shape 3,32,32",
        )
    return shape
