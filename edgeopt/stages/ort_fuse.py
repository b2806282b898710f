"""ONNX Runtime's transformer optimizer as an ONNX-side step of the quantize stage
(``quantize.fuse``): attention blocks become ``com.microsoft`` ``Attention``, bias + GELU
``BiasGelu``. Residual LayerNorms are fused too (ORT's attention matcher starts from them)
and then written back as ``Add`` (+ bias ``Add``) + ``LayerNormalization``
(``unfuse_skip_layer_norm``): ORT's CPU ``SkipLayerNormalization`` kernel took 64 us where
the two ops took 13 (1 x 65 x 192, one thread, onnxruntime 1.32 on the benchmark machine),
so the fused pruned BERT ran 1.31x slower than unfused in fp32 and 0.93x with dynamic int8
where it ran 0.93x and 0.55x written back. ``skip_layer_norm=True`` keeps them fused, as
Olive's recipe does.

Only graphs as ORT's pattern matcher knows them fuse (separate q/k/v projections, scores
divided by a constant, eager attention, an exporter that keeps dynamic axes); a fused
``qkv`` projection never does. Heads are detected per node (``num_heads=0,
hidden_size=0``), so head-pruned models fuse too, but a head-dim-pruned one may fuse into an
``Attention`` whose scale is ``1/sqrt(new head_dim)``: the fused graph is therefore always
run against the unfused one, and a fusion that changes the outputs is a CandidateError.

Fusion options: no GELU approximation (``FastGelu`` changes the numerics), the raw 2-D
attention mask (the bert default, a mask index, assumes right padding) and no
``EmbedLayerNormalization`` (it assumes the same). onnxruntime is imported only when a
fusion runs.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import CandidateError

FUSED_OPS = (
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "EmbedLayerNormalization",
)
"""The ``com.microsoft`` ops a fusion may produce, counted in ``FuseInfo.counts``."""

PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-3
"""Fused vs unfused outputs must agree within ``PARITY_ATOL + PARITY_RTOL * max|ref|``."""

_INT_TYPES = frozenset({2, 3, 4, 5, 6, 7, 12, 13})  # onnx.TensorProto integer element types


@dataclass(frozen=True)
class FuseInfo:
    """What a fusion produced: ``counts`` of each of ``FUSED_OPS`` found (zeros omitted),
    ``attention_sites`` (the Softmax nodes of the unfused graph: the attention blocks that
    could have fused) and the largest fused-vs-unfused output difference."""

    counts: dict[str, int]
    attention_sites: int
    max_diff: float

    @property
    def attention(self) -> str:
        """``"k of n"`` attention blocks fused."""
        return f"{self.counts.get('Attention', 0)} of {self.attention_sites}"

    @property
    def fused(self) -> bool:
        """Whether anything fused."""
        return sum(self.counts.values()) > 0


def model_type(model: Any) -> str:
    """ORT's optimizer model type for an ``onnx.ModelProto``: ``bert`` when any input is
    integer (token ids), else ``vit``."""
    types = {i.type.tensor_type.elem_type for i in model.graph.input}
    return "bert" if types & _INT_TYPES else "vit"


def fuse(
    src: Path,
    out: Path,
    kind: str | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    skip_layer_norm: bool = False,
) -> FuseInfo:
    """Write ``src`` through ORT's transformer optimizer (``kind``: ``bert``/``vit``; None:
    ``model_type``) to ``out`` and return what fused; ``skip_layer_norm``: keep residual
    LayerNorms fused (module doc).

    Parity is mandatory: the fused and unfused graphs run on ``feeds`` (input name ->
    batch; None: seeded synthetic inputs, ``synthetic_feeds``) and must agree within
    ``PARITY_ATOL + PARITY_RTOL * max|ref|``, else CandidateError("quantize", ...) with the
    largest difference (``out`` is removed).
    """
    import onnx

    original = onnx.load(str(src))
    kind = kind or model_type(original)
    fused = _optimized(src, kind)
    if not skip_layer_norm:
        unfuse_skip_layer_norm(fused)
    onnx.save(fused, str(out))
    counts = Counter(n.op_type for n in fused.graph.node)
    info_counts = {op: counts[op] for op in FUSED_OPS if counts[op]}
    sites = sum(n.op_type == "Softmax" for n in original.graph.node)
    batch = dict(feeds) if feeds is not None else synthetic_feeds(original, seed=seed)
    ref = _run(src, batch)
    try:
        got = _run(out, batch)
    except Exception as exc:
        out.unlink(missing_ok=True)
        raise CandidateError(
            "quantize", f"the fused graph does not run in ONNX Runtime: {exc}"
        ) from exc
    diff = max(_max_diff(r, g) for r, g in zip(ref, got, strict=True))
    scale = max(float(np.max(np.abs(r))) if r.size else 0.0 for r in ref)
    if not diff <= PARITY_ATOL + PARITY_RTOL * scale:
        out.unlink(missing_ok=True)
        raise CandidateError(
            "quantize",
            f"fused attention changes the outputs (max |diff| {diff:.3g} vs unfused, "
            f"{FuseInfo(info_counts, sites, diff).attention} attention blocks fused)",
            hint="head-dim pruning and ORT's Attention may disagree on the softmax scale: "
            "keep quantize.fuse off for this model",
        )
    return FuseInfo(info_counts, sites, diff)


def fusible(src: Path) -> bool:
    """Whether ``fuse`` fuses anything in ``src`` and keeps its outputs (on synthetic
    inputs); False when it fails for any reason (the switch is then not offered)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return fuse(src, Path(tmp) / "fused.onnx").fused
        except Exception:  # ORT's optimizer on a graph it does not know: nothing to offer
            return False


def _optimized(src: Path, kind: str) -> Any:
    """The fused ``onnx.ModelProto``, topologically sorted."""
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions(kind)
    options.enable_gelu_approximation = False
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    options.enable_embed_layer_norm = False
    with _quiet():
        model = optimize_model(
            str(src), model_type=kind, num_heads=0, hidden_size=0, optimization_options=options
        )
    model.topological_sort()
    return model.model


def unfuse_skip_layer_norm(model: Any) -> int:
    """Write every ``com.microsoft`` ``SkipLayerNormalization`` of ``model`` (an
    ``onnx.ModelProto``, changed in place) back as ``Add(input, skip)`` (then ``Add`` of its
    bias) and ``LayerNormalization`` over the last axis, the sum kept under the name of its
    fourth output; one whose mean or inverse-std output is read stays. The count written back."""
    from onnx import helper

    read = {name for node in model.graph.node for name in node.input}
    read |= {o.name for o in model.graph.output}
    nodes, count = [], 0
    for node in model.graph.node:
        outs = [*node.output, "", "", ""][:4]
        if (
            node.op_type != "SkipLayerNormalization"
            or node.domain != "com.microsoft"
            or outs[1] in read - {""}
            or outs[2] in read - {""}
        ):
            nodes.append(node)
            continue
        x, skip, gamma, beta, bias = [*node.input, "", ""][:5]
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        base = outs[0]  # unique in the graph, where a node's name may be empty
        total = outs[3] or f"{base}_sum"
        summed = f"{base}_skip" if bias else total
        nodes.append(helper.make_node("Add", [x, skip], [summed], name=f"{base}_add"))
        if bias:
            nodes.append(helper.make_node("Add", [summed, bias], [total], name=f"{base}_bias"))
        norm_in = [total, gamma, beta] if beta else [total, gamma]
        nodes.append(
            helper.make_node(
                "LayerNormalization",
                norm_in,
                [outs[0]],
                name=f"{base}_ln",
                axis=-1,
                epsilon=eps,
            )
        )
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ORT's optimizer logs warnings ("Please specify num_heads ..."); the library must not
    print."""
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def synthetic_feeds(model: Any, batch: int = 4, seq: int = 8, seed: int = 0) -> dict[str, Any]:
    """Seeded inputs for every graph input of ``model``: standard normal floats; for integer
    inputs, masks (a name with ``mask``) of right-padded ones and ids in [0, 2) otherwise
    (valid for any vocabulary). Symbolic dims: ``batch`` first, ``seq`` after."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        shape = [
            d.dim_value if d.dim_value > 0 else (batch if j == 0 else seq)
            for j, d in enumerate(dims)
        ]
        elem = inp.type.tensor_type.elem_type
        if elem not in _INT_TYPES:
            out[inp.name] = rng.standard_normal(shape).astype(np.float32)
        elif "mask" in inp.name.lower():
            lengths = rng.integers(1, shape[-1] + 1, size=shape[:-1])
            mask = np.arange(shape[-1]) < lengths[..., None]
            out[inp.name] = mask.astype(np.int64)
        else:
            out[inp.name] = rng.integers(0, 2, size=shape).astype(np.int64)
    return out


def _run(path: Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return [np.asarray(o) for o in sess.run(None, {k: v for k, v in feeds.items() if k in names})]


def _max_diff(ref: np.ndarray, got: np.ndarray) -> float:
    if ref.shape != got.shape:
        return float("inf")
    if not ref.size:
        return 0.0
    return float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64))))
