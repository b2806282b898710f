"""Graph cost model: estimate latency, memory and energy of an ONNX model (or a ``.tflite``,
read as the same kind of graph by ``tflite_graph``) on a hardware profile.

The model is a per-kernel roofline, the decomposition nn-Meter uses (fused kernels, not ONNX
nodes), with analytic costs instead of learned regressors:

1. **Kernels.** Shapes come from ``onnx.shape_inference`` (a dynamic batch dim is taken as 1),
   completed by ONNX Runtime's symbolic shape inference where it leaves outputs unknown.
   Nodes whose inputs are all constant are folded away. Views (Reshape, Flatten, Squeeze, ...)
   are free aliases. Runtimes fuse Conv+BatchNormalization+Add+Relu/Clip and Gemm+Relu into one
   kernel: one overhead, no bytes for the fused intermediates. In QDQ graphs the
   DequantizeLinear nodes feeding a Conv's input and weight, and the QuantizeLinear after it,
   fold into the op, which then computes in int8 and moves int8 tensors; QOperator graphs
   (QLinearConv, ConvInteger, MatMulInteger, QLinear*) are int8 by op type.
2. **Placement.** A kernel runs on the profile's first unit if that unit supports every op in
   it at its dtype, else on the unit's fallback (recursively). With ``single_prefix``
   partitioning (Edge TPU) every kernel after the first fallback falls back too. An
   accelerator unit (one listing its ops) runs a QDQ graph's int8 and Q/DQ kernels only when
   the graph's activation/weight types are the profile's int8 flavour; a Q/DQ goes with the op
   it quantizes for (else, a graph input's or output's, on the unit). Graph inputs
   and outputs live on the host unit (the end of the fallback chain). A tensor crossing units
   costs ``bytes / link_bandwidth + link_latency``.
3. **Time.** ``t = max(ops / (peak[dtype] * eff[dtype][class]), bytes / bandwidth)
   + kernel_overhead``; the total adds transfers and the per-inference invoke overhead.
4. **Memory.** Kernels run in topological order; a tensor is live from its producing kernel
   to its last consuming kernel (graph inputs from the start, outputs to the end). The peak
   sum of live tensors is the activation memory; weights are counted separately. Both are
   checked against the memory levels the profile declares.
5. **Energy** is an interval: the lower bound is ``ops * pJ/op + bytes * pJ/byte``; the upper
   bound is ``sum(active_w * busy + idle_w * (T - busy))`` over units.

Modules: ``cost_model`` (``estimate`` and ``kernel_work``: the steps below in order),
``shapes`` (inference), ``graph`` (shapes, aliases), ``tflite_graph`` (a TFLite file as that
graph: an Edge TPU's or microcontroller's own file),
``ops`` (dtype and work per node: the one op counter),
``flavour`` (a QDQ graph's int8 flavour against the profile's),
``kernels`` (1), ``roofline`` (2, 3), ``memory`` (4), ``energy`` (5), ``result`` (what comes
back).
"""

from edgeopt.estimate.cost_model import KernelWork, estimate, kernel_work
from edgeopt.estimate.result import Estimate, NodeCost

__all__ = ["Estimate", "KernelWork", "NodeCost", "estimate", "kernel_work"]
