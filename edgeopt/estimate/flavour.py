"""The int8 flavour of a QDQ graph (the 8-bit types of its activations and of its weights)
against the target's (``[quantization] activation_type`` / ``weight_type``).

An accelerator unit (one that lists its ``supported_ops``: NPU, DSP, TPU, DPU) runs the QDQ
graphs its runtime's quantizer makes, Q/DQ included; a graph quantized for another target
(x86's uint8/int8 on a uint8/uint8 NPU) is not in its int8 support and falls back. CPUs that
run "all" ops take any flavour, as ONNX Runtime's CPU kernels do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeopt.estimate.graph import Graph
from edgeopt.profiles import ComputeUnit, HardwareProfile

_TYPE_NAMES = {2: "uint8", 3: "int8"}  # ONNX TensorProto UINT8, INT8


@dataclass(frozen=True)
class Flavour:
    """The 8-bit types a QDQ graph quantizes its activations and its weights to."""

    activation: frozenset[str]
    weight: frozenset[str]

    def matches(self, profile: HardwareProfile) -> bool:
        """Whether every activation and weight type is the target's."""
        q = profile.quantization
        return self.activation <= {q.activation_type} and self.weight <= {q.weight_type}

    def mismatch_note(self, profile: HardwareProfile) -> str:
        """Why Q/DQ stay off the target's int8 unit (for the estimate's assumptions)."""
        q, unit = profile.quantization, profile.units[0]
        return (
            f"activation type {'/'.join(sorted(self.activation)) or '-'} / weight type "
            f"{'/'.join(sorted(self.weight)) or '-'} differ from the target's int8 flavour "
            f"({q.activation_type} activations, {q.weight_type} weights): its Q/DQ and int8 "
            f"kernels are not in '{unit.id}' int8 support and run on "
            f"'{unit.fallback or unit.id}' (quantize for this target: edgeopt optimize --target "
            f"{profile.name})"
        )


def qdq_flavour(g: Graph) -> Flavour | None:
    """The flavour of ``g``'s QuantizeLinear (activations) and constant DequantizeLinear
    (weights) nodes in 8 bits; None for a graph without either (float or QOperator)."""
    acts: set[str] = set()
    weights: set[str] = set()
    for n in g.nodes:
        if n.op_type == "QuantizeLinear" and n.input[0] not in g.const:
            acts.add(_TYPE_NAMES.get(_quantized_type(g, n), "other"))
        elif n.op_type == "DequantizeLinear" and n.input[0] in g.const:
            name = _TYPE_NAMES.get(g.etype.get(n.input[0], 0))
            if name:  # int32 biases are not weights' flavour
                weights.add(name)
    if not acts and not weights:
        return None
    return Flavour(activation=frozenset(acts), weight=frozenset(weights))


def _quantized_type(g: Graph, n: Any) -> int:
    """ONNX element type a QuantizeLinear writes: its zero point's (uint8 without one)."""
    if len(n.input) > 2 and n.input[2]:
        return g.etype.get(n.input[2], 2)
    return g.etype.get(n.output[0], 2)


def flavour_bound(unit: ComputeUnit) -> bool:
    """Whether ``unit`` runs only its runtime's int8 flavour (it lists its supported ops)."""
    return unit.supported_ops is not None
