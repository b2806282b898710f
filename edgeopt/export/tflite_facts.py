"""What a TFLite file holds, read from its flatbuffer (``ai_edge_litert.schema_py_generated``,
the schema LiteRT itself reads): its operators, every tensor's type, and whether it is a
full-integer model, as an Edge TPU or TFLite Micro needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INTEGER_TYPES = frozenset({"INT8", "UINT8", "INT16", "INT32", "INT64", "INT4", "UINT16"})
"""Tensor types a full-integer model may hold (int32 biases, int64 shapes included)."""


@dataclass(frozen=True)
class TfliteFacts:
    """``ops``: the builtin operator of every node, in graph order (all subgraphs);
    ``tensor_types``: every tensor's type name (``FLOAT32``, ``INT8``, ...), sorted and
    deduplicated; ``input_types``/``output_types``: the main graph's inputs and outputs;
    ``all_integer``: no tensor holds a float type."""

    ops: tuple[str, ...]
    tensor_types: tuple[str, ...]
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]

    @property
    def all_integer(self) -> bool:
        return all(t in INTEGER_TYPES for t in self.tensor_types)

    @property
    def float_tensor_types(self) -> tuple[str, ...]:
        """The tensor types that keep a model from being full-integer."""
        return tuple(t for t in self.tensor_types if t not in INTEGER_TYPES)


def tflite_facts(path: str | Path) -> TfliteFacts:
    """The facts of the TFLite file at ``path``; ValueError for a file that is not one."""
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    if not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise ValueError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier)")
    model = schema.ModelT.InitFromPackedBuf(buf, 0)
    op_names = _names(schema.BuiltinOperator)
    type_names = _names(schema.TensorType)
    # old files keep the code in deprecatedBuiltinCode (codes < 127); newer ones in both
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes or []]
    ops: list[str] = []
    types: set[str] = set()
    for graph in model.subgraphs or []:
        ops += [op_names.get(codes[op.opcodeIndex], "CUSTOM") for op in graph.operators or []]
        types |= {type_names[t.type] for t in graph.tensors or []}
    main = model.subgraphs[0]
    return TfliteFacts(
        ops=tuple(ops),
        tensor_types=tuple(sorted(types)),
        input_types=tuple(type_names[main.tensors[i].type] for i in main.inputs),
        output_types=tuple(type_names[main.tensors[i].type] for i in main.outputs),
    )


def _names(enum_class: type) -> dict[int, str]:
    """A flatbuffer enum class's value -> name."""
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}
