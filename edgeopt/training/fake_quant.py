"""Fake quantization that matches ONNX Runtime's static QDQ int8, for quantization-aware
fine-tuning (QAT).

Route: a small hand-written fake-quant pass on a ``torch.fx`` graph (a symbolic trace, else
a ``torch.export`` capture: ``edgeopt.training.capture``), not torch.ao eager QAT
(being retired) nor torchao's pt2e flow (a new dependency whose quantizers target
Inductor/XNNPACK numerics and whose output does not go through edgeopt's TorchScript
exporter). What ORT will run is emulated exactly:

* weights: per output channel, symmetric int8 in [-127, 127], ``scale = absmax / 127``
  (ORT's ``WeightSymmetric`` default for s8), on the Conv weight with BatchNorm already folded
  in, since ORT quantizes the folded weight;
* activations (the input of every Conv/Linear): affine over the activation type's full range
  (u8 0..255 or s8 -128..127), the range widened to include 0 and ``zero_point =
  round(qmin - rmin / scale)``, as ORT's ``compute_scale_zp``; ranges are a moving average of
  batch min/max (torch.ao's default QAT observer, averaging constant ``EMA``), initialised
  with ORT's MinMax calibration over the calibration inputs;
* rounding: half to even, as ORT's QuantizeLinear (``torch.round``; activations divide by
  the scale as ORT does).

After training, ``finalize`` snaps the weights onto their int8 grid (ORT re-quantizes them
losslessly) and freezes the activation ranges; the model then exports with one
QuantizeLinear/DequantizeLinear pair per quantized activation, which the quantize stage turns
into ORT ``TensorQuantOverrides`` (``edgeopt.stages.quantize_ort.strip_activation_qdq``).
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from edgeopt.training.batch import Inputs, forward, size, take, tensors, to
from edgeopt.training.capture import ATEN, CaptureError, capture
from edgeopt.training.device import module_device

__all__ = [
    "ActFakeQuant",
    "CaptureError",
    "QuantWeight",
    "calibrate",
    "finalize",
    "float_copy",
    "prepare_qat",
]

EMA = 0.01
"""Averaging constant of the activation range observers while training."""
WEIGHT_QMAX = 127


def act_qrange(signed: bool) -> tuple[int, int]:
    """(qmin, qmax) of the activation type: s8 -128..127 or u8 0..255."""
    return (-128, 127) if signed else (0, 255)


def scale_zero_point(
    rmin: float, rmax: float, signed: bool, symmetric: bool = False
) -> tuple[float, int]:
    """ORT's ``compute_scale_zp`` for one activation range (float32 scale): asymmetric, or
    ``symmetric`` (ORT's ``ActivationSymmetric``: the range made ``[-absmax, absmax]``, s8 on
    -127..127, the zero point the type's middle: 0 for s8, 128 for u8)."""
    qmin, qmax = (-127, 127) if symmetric and signed else act_qrange(signed)
    lo, hi = min(float(rmin), 0.0), max(float(rmax), 0.0)
    if symmetric:
        hi = max(-lo, hi)
        lo = -hi
    scale64 = (hi - lo) / float(qmax - qmin)
    if np.float32(scale64) < np.finfo(np.float32).tiny:
        return 1.0, 0
    if symmetric:
        return float(np.float32(scale64)), int(np.round((qmin + qmax) / 2.0))
    zp = int(np.clip(np.round(qmin - lo / scale64), qmin, qmax))
    return float(np.float32(scale64)), zp


def weight_scales(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric s8 scales (float32, ``absmax / 127``; 1 for zero rows)."""
    absmax = w.detach().reshape(w.shape[0], -1).abs().amax(dim=1).double()
    scale = (absmax / WEIGHT_QMAX).float()
    return torch.where(scale > torch.finfo(torch.float32).tiny, scale, torch.ones_like(scale))


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """``w`` rounded onto its per-channel s8 grid (straight-through gradient)."""
    scale = weight_scales(w)
    zp = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -WEIGHT_QMAX, WEIGHT_QMAX)


class _QDQ(torch.autograd.Function):
    """``(clamp(round(x / scale) + zp) - zp) * scale``, dividing as ORT's QuantizeLinear does
    (torch's own fake_quantize multiplies by ``1 / scale``, which flips the odd rounding tie);
    straight-through gradient inside the range. Exports as QuantizeLinear/DequantizeLinear."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor
    ) -> torch.Tensor:
        qmin, qmax = act_qrange(zp.dtype == torch.int8)
        z = zp.float()
        unclamped = torch.round(x / scale) + z
        q = torch.clamp(unclamped, qmin, qmax)
        ctx.save_for_backward(q == unclamped)
        return (q - z) * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None

    @staticmethod
    def symbolic(g: Any, x: Any, scale: Any, zp: Any) -> Any:
        return g.op("DequantizeLinear", g.op("QuantizeLinear", x, scale, zp), scale, zp)


class _SnappedWeight(torch.autograd.Function):
    """Identity on a weight already on its per-channel s8 grid; exports as a per-channel
    QuantizeLinear/DequantizeLinear pair (else ORT's WeightBiasQuantization would quantize
    the float weight per tensor, which is not what was trained)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor
    ) -> torch.Tensor:
        return w

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        return grad, None, None

    @staticmethod
    def symbolic(g: Any, w: Any, scale: Any, zp: Any) -> Any:
        q = g.op("QuantizeLinear", w, scale, zp, axis_i=0)
        return g.op("DequantizeLinear", q, scale, zp, axis_i=0)


class ActFakeQuant(nn.Module):
    """Fake quantization of one activation tensor with a moving-average min/max range.

    Train mode: the range follows the batches (``EMA``), unless ``frozen``. Eval mode: the
    stored range. Exports to ONNX as one QuantizeLinear/DequantizeLinear pair.
    """

    def __init__(
        self, signed: bool = False, device: torch.device | None = None, symmetric: bool = False
    ) -> None:
        super().__init__()
        self.signed, self.symmetric = signed, symmetric
        self.frozen = False
        self.enabled = True
        self.register_buffer("rmin", torch.tensor(float("inf"), device=device))
        self.register_buffer("rmax", torch.tensor(float("-inf"), device=device))

    def observe(self, x: torch.Tensor) -> None:
        """Widen the range to cover ``x`` (ORT MinMax calibration: global min and max)."""
        self.rmin.copy_(torch.minimum(self.rmin, x.detach().min()))
        self.rmax.copy_(torch.maximum(self.rmax, x.detach().max()))

    def qparams(self) -> tuple[float, int]:
        """(scale, zero_point) that ORT computes for the current range."""
        return scale_zero_point(float(self.rmin), float(self.rmax), self.signed, self.symmetric)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.frozen:
            with torch.no_grad():
                lo, hi = x.detach().min(), x.detach().max()
                if torch.isfinite(self.rmin):
                    self.rmin.add_(EMA * (lo - self.rmin))
                    self.rmax.add_(EMA * (hi - self.rmax))
                else:
                    self.rmin.copy_(lo)
                    self.rmax.copy_(hi)
        if not self.enabled or not torch.isfinite(self.rmin):
            return x
        scale, zp = self.qparams()
        dtype = torch.int8 if self.signed else torch.uint8
        return _QDQ.apply(
            x, torch.tensor(scale, device=x.device), torch.tensor(zp, dtype=dtype, device=x.device)
        )


class QuantWeight(nn.Module):
    """Wraps a Conv/Linear: its weight is fake-quantized per channel on every forward,
    until ``snapped`` (then the stored weight is already on the grid)."""

    def __init__(self, inner: nn.Conv2d | nn.Conv1d | nn.Linear) -> None:
        super().__init__()
        self.inner = inner
        self.snapped = False
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = self.inner
        w = inner.weight
        if self.snapped:
            w = _SnappedWeight.apply(w, self.w_scale, self.w_zero_point)
        elif self.enabled:
            w = fake_quant_weight(w)
        if isinstance(inner, nn.Linear):
            return nn.functional.linear(x, w, inner.bias)
        return inner._conv_forward(x, w, inner.bias)

    def snap(self) -> None:
        """Store the fake-quantized weight and stop quantizing it on the fly."""
        w = self.inner.weight
        with torch.no_grad():
            w.copy_(fake_quant_weight(w))
        self.register_buffer("w_scale", weight_scales(w))
        zero = torch.zeros(w.shape[0], dtype=torch.int8, device=w.device)
        self.register_buffer("w_zero_point", zero)
        self.snapped = True


_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
# module inputs ORT's QDQ quantizer quantizes besides Conv/Gemm (pooling reads u8 there)
_QUANT_INPUT_MODULES = (*_WEIGHTED, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d)
_ADDS = {operator.add, torch.add, ATEN.add.Tensor}
# the same ops as they appear in a ``torch.export`` capture
_QUANT_INPUT_OPS = {
    ATEN.adaptive_avg_pool2d.default,
    ATEN.avg_pool2d.default,
    ATEN.max_pool2d.default,
}
# activation x activation products (attention's q.k^T and probs.v): ORT's static QDQ
# quantizes both inputs of such a MatMul
_MATMULS = {torch.matmul, operator.matmul, ATEN.matmul.default, ATEN.bmm.default}
_TRANSPARENT_OPS = {
    torch.flatten,
    torch.reshape,
    ATEN.max_pool2d.default,
    ATEN.flatten.using_ints,
}


def _reads_quantized(node: Any, modules: dict[str, nn.Module]) -> bool:
    """Whether ORT's static QDQ quantizes this node's tensor inputs (Conv, Gemm, pooling,
    tensor Add, a MatMul of two activations)."""
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _QUANT_INPUT_MODULES)
    if node.op == "call_function" and node.target in _ADDS:
        return all(getattr(a, "op", None) is not None for a in node.args[:2])
    if node.op == "call_function" and node.target in _MATMULS:
        return len(node.args) >= 2 and not any(map(_constant, node.args[:2]))
    if node.op == "call_method" and node.target == "matmul":
        return len(node.args) >= 2 and not any(map(_constant, node.args[:2]))
    if node.op == "call_function" and node.target in _QUANT_INPUT_OPS:
        return True
    return node.op == "call_method" and node.target == "add"


def _constant(arg: Any) -> bool:
    """Whether a node argument holds no activation: not a node, a parameter or buffer
    (``get_attr``), or computed from those alone (``self.w.t()``)."""
    if not isinstance(arg, fx.Node):
        return True
    if arg.op == "get_attr":
        return True
    if arg.op in ("placeholder", "call_module", "output"):
        return False
    return bool(arg.all_input_nodes) and all(map(_constant, arg.all_input_nodes))


_RESHAPES = {"flatten", "view", "reshape"}


def _transparent(node: Any, modules: dict[str, nn.Module]) -> bool:
    """Ops whose output ORT quantizes with their input's parameters (MaxPool, Flatten,
    Reshape): the range belongs on their input."""
    if node.op == "call_module":
        return isinstance(modules.get(node.target), nn.MaxPool2d | nn.Flatten)
    if node.op == "call_method":
        return node.target in _RESHAPES
    return node.op == "call_function" and node.target in _TRANSPARENT_OPS


def prepare_qat(
    model: nn.Module,
    signed_activations: bool = False,
    input_shape: Inputs | None = None,
    symmetric_activations: bool = False,
) -> fx.GraphModule:
    """A copy of ``model`` (captured as a graph, BatchNorm folded into the preceding Conv)
    that fake-quantizes what ORT's static QDQ quantizes: Conv/Linear weights, and the
    tensors read by Conv/Linear, pooling, tensor Add and a MatMul of two activations
    (attention's ``q @ k.T`` and ``probs @ v``).

    One observer per tensor: a tensor read by several such layers (a residual block's input)
    has one range, as it has one QuantizeLinear in ORT's graph; its other readers see the
    float tensor. ``input_shape`` (no batch axis): the inputs a ``torch.export`` capture
    is made for where ``torch.fx`` cannot trace the model (``capture``; without it only a
    trace is tried). ``signed_activations`` / ``symmetric_activations``: the target's
    activation flavour. Raises for a model neither captures (the QAT stage reports it).
    """
    from torch.fx.experimental.optimization import fuse

    model = model.eval()
    device = module_device(model)
    traced = fx.symbolic_trace(model) if input_shape is None else capture(model, input_shape)
    gm = fuse(traced, no_trace=True)  # deep copy, Conv+BN folded (needs eval mode)
    modules = dict(gm.named_modules())
    for name, mod in list(modules.items()):
        if isinstance(mod, _WEIGHTED):
            gm.set_submodule(name, QuantWeight(mod))  # type: ignore[arg-type]
    made: set[str] = set()
    for node in list(gm.graph.nodes):
        if not _reads_quantized(node, modules):
            continue
        for src in node.all_input_nodes:
            while _transparent(src, modules) and src.all_input_nodes:
                src = src.all_input_nodes[0]
            if src.name in made or src.op == "get_attr":
                continue
            if src.op == "call_module" and str(src.target).startswith("qat_fq_"):
                continue
            name = f"qat_fq_{len(made)}"
            made.add(src.name)
            fq_module = ActFakeQuant(signed_activations, device, symmetric_activations)
            gm.add_module(name, fq_module)
            with gm.graph.inserting_after(src):
                fq = gm.graph.call_module(name, (src,))
            src.replace_all_uses_with(
                fq,
                delete_user_cb=lambda u: _reads_quantized(u, modules) or _transparent(u, modules),
            )
            fq.args = (src,)
    gm.graph.lint()
    gm.recompile()
    return gm


def observers(model: nn.Module) -> list[ActFakeQuant]:
    """The activation observers ``prepare_qat`` inserted, in graph order."""
    return [m for m in model.modules() if isinstance(m, ActFakeQuant)]


def _switch(model: nn.Module, enabled: bool) -> None:
    for m in model.modules():
        if isinstance(m, ActFakeQuant | QuantWeight):
            m.enabled = enabled


def calibrate(model: nn.Module, x: np.ndarray, batch: int = 32) -> None:
    """Set every activation range to the global min/max over ``x`` (a structured array for
    a multi-input model) with fake quantization off, as ORT's MinMax calibration runs the
    float model."""
    obs = observers(model)
    hooks = [o.register_forward_pre_hook(lambda m, a: m.observe(a[0])) for o in obs]
    for o in obs:
        o.rmin.fill_(float("inf"))
        o.rmax.fill_(float("-inf"))
    try:
        _switch(model, False)
        model.eval()
        with torch.no_grad():
            device = module_device(model)
            xt = tensors(x)  # a tuple of tensors for a structured (multi-input) array
            for i in range(0, size(xt), batch):
                forward(model, to(take(xt, slice(i, i + batch)), device))
    finally:
        for h in hooks:
            h.remove()
        _switch(model, True)


def finalize(model: nn.Module) -> None:
    """Snap weights onto their s8 grid and freeze the activation ranges (before export)."""
    for m in model.modules():
        if isinstance(m, QuantWeight):
            m.snap()
        elif isinstance(m, ActFakeQuant):
            m.frozen = True
    model.eval()


def float_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` that runs its (snapped) weights in plain float, with no fake
    quantization: for a converter that quantizes with its own tool (LiteRT's), which cannot
    read the fake-quant ops. ``model`` itself is unchanged; a model without fake quantization
    comes back as it is."""
    if not any(isinstance(m, ActFakeQuant | QuantWeight) for m in model.modules()):
        return model
    out = copy.deepcopy(model)
    for m in out.modules():
        if isinstance(m, ActFakeQuant | QuantWeight):
            m.enabled = False
        if isinstance(m, QuantWeight):
            m.snapped = False  # its weight is already on the grid: used as it is
    return out
