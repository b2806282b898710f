"""Capture a model as a ``torch.fx`` graph of modules for fake quantization (``fake_quant``).

``torch.fx.symbolic_trace`` first: its graph calls the model's own Conv/Linear/BatchNorm
modules. Where it cannot trace (a forward that unpacks ``x.size()`` into Python ints, as
public ShuffleNetV2 code does for its channel shuffle), ``torch.export`` captures the model
with a dynamic batch size instead; its graph calls ATen ops on the weights, so each
``aten.conv{1,2}d``/``aten.linear``/``aten.batch_norm`` on the model's own parameters is
turned back into a call of an ``nn.Conv{1,2}d``/``nn.Linear``/``nn.BatchNorm{1,2}d`` holding
those parameters, which the fake-quant pass and BatchNorm folding expect. The capture is of
the eval-mode model (its BatchNorm is folded anyway; a dropout is not in the graph).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from edgeopt.training.batch import Inputs, example, model_inputs
from edgeopt.training.device import module_device

ATEN = torch.ops.aten


class CaptureError(RuntimeError):
    """Neither ``torch.fx`` nor ``torch.export`` can capture the model (the first line of
    each one's error)."""


def capture(model: nn.Module, input_shape: Inputs) -> fx.GraphModule:
    """``model`` (eval mode) as a graph of modules: symbolically traced, else exported with
    ``torch.export`` for inputs of ``input_shape`` (no batch axis; or a multi-input model's
    ``ModelInputs``) and any batch size (and sequence length).

    Raises ``CaptureError`` when neither can capture the model.
    """
    model = model.eval()
    try:
        return _picklable(fx.symbolic_trace(model))
    except Exception as traced:
        try:
            return _picklable(exported(model, input_shape))
        except Exception as exc:
            raise CaptureError(
                f"torch.fx cannot trace the model ({_first_line(traced)}) and torch.export "
                f"cannot capture it ({_first_line(exc)})"
            ) from exc


def _picklable(gm: fx.GraphModule) -> fx.GraphModule:
    """``gm`` without the string type annotations its placeholders carry where the model's
    source has ``from __future__ import annotations``: fx's generated code names them as
    globals that ``torch.save`` cannot pickle ("'str' object has no attribute '__name__'"),
    and a LiteRT target's converter process receives the QAT model that way."""
    changed = False
    for node in gm.graph.nodes:
        if isinstance(node.type, str):
            node.type = None
            changed = True
    if changed:
        gm.recompile()
    return gm


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def exported(model: nn.Module, input_shape: Inputs) -> fx.GraphModule:
    """``model`` captured by ``torch.export`` (the batch axis and every input's sequence axis
    dynamic) on a ``batch.example`` of two samples, its weighted ATen ops turned back into
    module calls."""
    x = example(input_shape, module_device(model), n=2)
    args = x if isinstance(x, tuple) else (x,)
    auto = torch.export.Dim.AUTO
    dims = tuple(
        {0: auto} if s.seq_axis is None else {0: auto, s.seq_axis + 1: auto}
        for s in model_inputs(input_shape).specs
    )
    program = torch.export.export(model, args, dynamic_shapes=dims, strict=False)
    gm = program.module(check_guards=False)
    made = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in _METHODS:
            # ``x.size(d)``, ``x.view(shape)``: ONNX's TorchScript exporter follows a size
            # through tensor methods, so the exported model keeps its dynamic batch axis
            # (through the ATen ops it would bake in the batch size it was traced with)
            node.op, node.target = "call_method", _METHODS[node.target]
            continue
        build = _BUILDERS.get(node.target) if node.op == "call_function" else None
        layer = build(gm, _arguments(node)) if build is not None else None
        if layer is None:
            continue
        name = f"captured_{made}_{type(layer).__name__.lower()}"
        made += 1
        gm.add_module(name, layer)
        with gm.graph.inserting_before(node):
            call = gm.graph.call_module(name, (node.args[0],))
        call.meta = dict(node.meta)
        node.replace_all_uses_with(call)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    # a plain GraphModule of the modules the graph uses: the export's own module refuses
    # train() and eval(), which training needs
    return fx.GraphModule(gm, gm.graph).eval()


def _arguments(node: fx.Node) -> dict[str, Any]:
    """The op's arguments by name, defaults filled in."""
    schema = node.target._schema  # type: ignore[union-attr]
    out: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            out[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            out[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
        else:
            out[arg.name] = None
    return out


def _param(gm: fx.GraphModule, value: Any) -> torch.Tensor | None:
    """The parameter or buffer a ``get_attr`` node reads; None for anything else."""
    if not isinstance(value, fx.Node) or value.op != "get_attr":
        return None
    owner, _, name = str(value.target).rpartition(".")
    found = getattr(gm.get_submodule(owner), name)
    return found if isinstance(found, torch.Tensor) else None


def _pair(value: Any, n: int) -> tuple[int, ...]:
    values = list(value) if isinstance(value, list | tuple) else [value]
    return tuple(int(v) for v in (values * n if len(values) == 1 else values))


def _conv(gm: fx.GraphModule, a: dict[str, Any]) -> nn.Module | None:
    weight, bias = _param(gm, a["weight"]), _param(gm, a["bias"])
    if not isinstance(weight, nn.Parameter) or (a["bias"] is not None and bias is None):
        return None
    n = weight.dim() - 2
    cls: Callable[..., nn.Module] = nn.Conv1d if n == 1 else nn.Conv2d
    groups = int(a["groups"])
    layer = cls(
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=_pair(a["stride"], n),
        padding=_pair(a["padding"], n),
        dilation=_pair(a["dilation"], n),
        groups=groups,
        bias=bias is not None,
        device="meta",
    )
    layer.weight = weight
    if bias is not None:
        layer.bias = bias  # type: ignore[assignment]
    return layer


def _linear(gm: fx.GraphModule, a: dict[str, Any]) -> nn.Module | None:
    weight, bias = _param(gm, a["weight"]), _param(gm, a["bias"])
    if not isinstance(weight, nn.Parameter) or (a["bias"] is not None and bias is None):
        return None
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = weight
    if bias is not None:
        layer.bias = bias  # type: ignore[assignment]
    return layer


def _batch_norm(gm: fx.GraphModule, a: dict[str, Any]) -> nn.Module | None:
    """An eval-mode BatchNorm with affine parameters and running statistics (what the
    capture of an eval-mode model holds); anything else stays an op."""
    stats = [_param(gm, a[k]) for k in ("weight", "bias", "running_mean", "running_var")]
    if any(s is None for s in stats) or a["training"]:
        return None
    val = a["input"].meta.get("val") if isinstance(a["input"], fx.Node) else None
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}.get(getattr(val, "ndim", 0))
    if cls is None:
        return None
    weight, bias, mean, var = stats
    layer = cls(len(mean), eps=float(a["eps"]), momentum=float(a["momentum"]))  # type: ignore[arg-type]
    layer.weight, layer.bias = weight, bias  # type: ignore[assignment]
    layer.running_mean, layer.running_var = mean, var
    return layer.eval()


_METHODS = {
    ATEN.sym_size.int: "size",
    ATEN.view.default: "view",
    ATEN.reshape.default: "reshape",
}
_BUILDERS: dict[Any, Callable[[fx.GraphModule, dict[str, Any]], nn.Module | None]] = {
    ATEN.conv1d.default: _conv,
    ATEN.conv2d.default: _conv,
    ATEN.linear.default: _linear,
    ATEN.batch_norm.default: _batch_norm,
}
