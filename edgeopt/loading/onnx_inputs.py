"""The inputs of an ONNX graph that takes several tensors or integer ones (token ids, masks):
names, element types and shapes from the graph, completed and checked against
``--input-shape NAME=DIMS[:DTYPE]``, vocabularies from the embeddings that read the ids."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.inputs import InputRole, InputSpec, ModelInputs

_DTYPES = {1: "float32", 7: "int64", 6: "int32"}  # onnx.TensorProto FLOAT, INT64, INT32


def is_plain(inputs: list[Any]) -> bool:
    """True for the one-float-input graph every other path of ``load_onnx`` handles."""
    return len(inputs) == 1 and inputs[0].type.tensor_type.elem_type == 1


def graph_inputs(
    p: Path,
    model: Any,
    inputs: list[Any],
    shape: tuple[int, ...] | None,
    given: ModelInputs | None,
    data: ModelInputs | None = None,
) -> ModelInputs:
    """The specs of graph inputs ``inputs`` (initializers excluded), their dynamic sample
    dims from ``given`` (or, for a graph with one input, the plain ``shape``), else from
    ``data`` (the inputs ``--data`` holds); ConfigError with the graph's own input list as
    the hint for an element type edgeopt cannot feed, a fixed batch above 1, flags or data
    that name other inputs or types, or a dim left unknown."""
    listing = ", ".join(_graph_text(i) for i in inputs)
    hint = f"the model takes {listing}: pass --input-shape NAME=DIMS:DTYPE for each input"
    graph = [_graph_spec(p, i, listing) for i in inputs]
    if given is None and shape is None and data is not None:
        given = _from_data(p, graph, data, listing)
    if shape is not None and given is None:
        if len(graph) > 1:
            raise ConfigError(
                f"ONNX model {p} takes {len(graph)} inputs; a plain --input-shape does not say "
                "which one it is for",
                hint=hint,
            )
        given = ModelInputs((InputSpec.of(graph[0][0], shape, graph[0][1]),))
    by_name = {s.name: s for s in given.specs} if given else {}
    if given is not None and set(by_name) != {g[0] for g in graph}:
        raise ConfigError(
            f"--input-shape names {', '.join(by_name)}; ONNX model {p} takes "
            f"{', '.join(g[0] for g in graph)}",
            hint=hint,
        )
    seq = _sequence_dims(graph)
    vocab = _vocab_sizes(model)
    specs = []
    for name, dtype, dims in graph:
        flag = by_name.get(name)
        if flag is not None and flag.dtype != dtype:
            raise ConfigError(
                f"--input-shape {flag.text()}: ONNX model {p} takes {name} as {dtype}",
                hint=hint,
            )
        if flag is not None and (
            len(flag.shape) != len(dims)
            or any(
                isinstance(d, int) and d > 0 and d != f
                for d, f in zip(dims, flag.shape, strict=True)
            )
        ):
            raise ConfigError(
                f"--input-shape {flag.text()} does not match ONNX model {p}'s input "
                f"{name} ({', '.join(map(str, dims))})",
                hint=hint,
            )
        sample = flag.shape if flag is not None else dims
        if not all(isinstance(d, int) and d > 0 for d in sample):
            raise ConfigError(
                f"ONNX model {p} has a dynamic input shape ({listing})",
                hint="pass --input-shape NAME=DIMS:DTYPE for each input, e.g. "
                + " ".join(f"--input-shape {g[0]}=32:{g[1]}" for g in graph),
            )
        axis = seq.get(name)
        role = None if dtype != "float32" else InputRole.FLOAT
        specs.append(
            InputSpec.of(name, sample, dtype, role=role, vocab_size=vocab.get(name), seq_axis=axis)
        )
    return ModelInputs(tuple(specs))


def _from_data(
    p: Path, graph: list[tuple[str, str, list[int | str]]], data: ModelInputs, listing: str
) -> ModelInputs:
    """The data's inputs as flags for ``graph``: the graph's element type where the data's
    is of the same kind (int64 ids feed an int32 input); ConfigError for other names or a
    float/integer mismatch."""
    held = {s.name: s for s in data.specs}
    if set(held) != {g[0] for g in graph}:
        raise ConfigError(
            f"the data holds inputs {', '.join(held)}; ONNX model {p} takes "
            f"{', '.join(g[0] for g in graph)}",
            hint=f"name the data's arrays after the model's inputs (x_<split>.<name>; it takes "
            f"{listing})",
        )
    specs = []
    for name, dtype, _ in graph:
        s = held[name]
        if (s.dtype == "float32") != (dtype == "float32"):
            raise ConfigError(
                f"the data holds {name} as {s.dtype}; ONNX model {p} takes it as {dtype}",
                hint=f"save x_<split>.{name} as {dtype}",
            )
        specs.append(InputSpec.of(name, s.shape, dtype))
    return ModelInputs(tuple(specs))


def _graph_spec(p: Path, value: Any, listing: str) -> tuple[str, str, list[int | str]]:
    """``(name, dtype, sample dims)`` of graph input ``value``: a dim is its size, or its
    symbolic name ('?' when unnamed)."""
    elem = value.type.tensor_type.elem_type
    if elem not in _DTYPES:
        import onnx

        kind = onnx.TensorProto.DataType.Name(elem).lower()
        raise ConfigError(
            f"ONNX model {p} takes {kind} input {value.name!r}; edgeopt feeds float32, int64 "
            "and int32 tensors",
            hint=f"export the model with float32 or int64 inputs (it takes {listing})",
        )
    dims = list(value.type.tensor_type.shape.dim)
    refuse_fixed_batch(p, dims, "dynamic_axes={name: {0: 'batch'}} for every input")
    return value.name, _DTYPES[elem], [_dim(d) for d in dims[1:]]


def refuse_fixed_batch(p: Path, dims: list[Any], how: str) -> None:
    """ConfigError for an input whose first dim is a fixed batch above 1: latency runs one
    sample and scoring batches of any size, neither fits it. ``how``: the export argument."""
    batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0
    if batch > 1:
        raise ConfigError(
            f"ONNX model {p} takes a fixed batch of {batch} samples; edgeopt runs it on one "
            "sample at a time and on batches of any size",
            hint=f"re-export it with a dynamic batch dimension ({how}) or with batch 1",
        )


def _dim(d: Any) -> int | str:
    if d.HasField("dim_value") and d.dim_value > 0:
        return int(d.dim_value)
    return d.dim_param if d.HasField("dim_param") and d.dim_param else "?"


def _graph_text(value: Any) -> str:
    """``input_ids=seq:int64``: one graph input as the flag would spell it."""
    elem = value.type.tensor_type.elem_type
    dims = ",".join(str(_dim(d)) for d in value.type.tensor_type.shape.dim[1:])
    return f"{value.name}={dims}:{_DTYPES.get(elem, str(elem))}"


def _sequence_dims(graph: list[tuple[str, str, list[int | str]]]) -> dict[str, int]:
    """``{input: axis}``: the sequence axis of each integer input: where it has a symbolic
    dim that another integer input shares; a 1-D integer input's only axis otherwise."""
    ints = [(n, dims) for n, dtype, dims in graph if dtype != "float32"]
    shared = Counter(d for _, dims in ints for d in set(dims) if isinstance(d, str) and d != "?")
    out: dict[str, int] = {}
    for name, dims in ints:
        axes = [i for i, d in enumerate(dims) if isinstance(d, str) and shared[d] > 1]
        if axes:
            out[name] = axes[0]
        elif len(dims) == 1:
            out[name] = 0
    return out


def _vocab_sizes(model: Any) -> dict[str, int]:
    """``{input: rows}`` for each graph input that indexes a ``Gather`` of an initializer
    (an embedding table) directly."""
    rows = {t.name: int(t.dims[0]) for t in model.graph.initializer if t.dims}
    out: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in rows:
            out.setdefault(node.input[1], rows[node.input[0]])
    return out
