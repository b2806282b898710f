"""Pre-flight for structured pruning: can Torch-Pruning prune this model, and what must it
leave alone?

Torch-Pruning follows channels through the traced graph. On graphs that split, concatenate
and shuffle channels (ShuffleNetV2: ``chunk``/slices, ``torch.cat``, ``view``/``transpose``)
it either fails (building the dependency graph raises) or never returns (the search for a
pruning group explodes inside ``BasePruner``), which would hold every pruning trial until its
timeout. ``preflight`` finds out once, before the search, in a child process that is killed
at the time limit:

1. build the dependency graph (traced by ``prune.trace_forward``, as the prune stage does:
   that is what lets ``chunk`` splits and ShuffleNet's channel-shuffle views build at all)
   and find the *split-coupled* layers: the Conv/Linear modules
   whose output channels reach a channel split, concatenation, reshape, slice or transpose
   through channel-preserving layers (BN, activations, element-wise ops, depthwise convs);
2. prune a copy by ``PROBE_RATIO`` with ``PruneStage.apply`` (the prune stage itself, with
   its exact channel-count check and, for groups through channel-moving ops, its check that
   the kept channels compute what they did), the first half of the time limit when step 1 found
   split-coupled layers, else all of it;
3. if that failed or timed out and there are split-coupled layers, retry in a fresh child
   with them ignored, in the rest of the time limit.

The result says whether the model is prunable and which layers the prune stage must ignore
(``PruneStage.probe`` stores both as the prune stage's facts).

A model with attention sites (``stages.attention.find_attention``) is probed differently: its
residual stream is left whole by the prune stage itself, so instead of steps 1-3 the child
prunes ``PROBE_HEAD_RATIO`` of the heads and ``PROBE_RATIO`` of the MLP width; a fused qkv
split by ``chunk`` (Torch-Pruning raises IndexError ranking its heads), or a heads prune that
fails, falls back to the MLP width alone with attention left whole; after a heads prune the
child also tries head dims (which the equivalence check refuses when the softmax scale
follows ``head_dim``). ``PreflightResult.attention`` says what was found.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import multiprocessing
import os
import tempfile
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.errors import CandidateError
from edgeopt.inputs import ModelInputs
from edgeopt.lifeline import die_with_parent, stop_signals_ignored_by_children
from edgeopt.profiles import load_profile
from edgeopt.stages.attention import (
    AttentionPruning,
    describe_sites,
    find_attention,
    first_layer,
    qkv_split,
)
from edgeopt.stages.base import StageContext
from edgeopt.stages.prune_apply import prune_model
from edgeopt.stages.prune_attention import head_dims_refusal
from edgeopt.stages.prune_config import PruneConfig
from edgeopt.stages.prune_trace import build_dependency_graph, moves_channels
from edgeopt.training.batch import Inputs, example
from edgeopt.training.device import module_device

PREFLIGHT_LIMIT_S = float(os.environ.get("EDGEOPT_PREFLIGHT_S", "90"))
"""Wall-time cap of the pruning pre-flight run at setup (child start-up included)."""

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from torch import nn

log = logging.getLogger(__name__)

PROBE_RATIO = 0.1
"""The pruning ratio of the trial prune (uniform, L2, one step, no channel rounding)."""
PROBE_HEAD_RATIO = 0.25
"""The head ratio of the trial prune of a model with attention sites."""


@dataclass(frozen=True)
class PreflightResult:
    """What the pre-flight found.

    ``prunable``: a trial prune succeeded (with ``ignored_layers`` left whole).
    ``ignored_layers``: qualified module names the prune stage must never prune (empty when
    Torch-Pruning handles the whole graph). ``reason``: one line saying what happened.
    ``seconds``: wall time of the whole pre-flight.
    """

    prunable: bool
    ignored_layers: tuple[str, ...]
    reason: str
    seconds: float
    conclusive: bool = True
    """False when the pre-flight could not run at all (the model cannot be copied to a child,
    or the child died before loading it): that says nothing about Torch-Pruning, so callers
    keep pruning on and let trials find out."""
    attention: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Empty without attention sites; else ``sites`` (names), ``layout`` (e.g. "fused
    qkv"), ``heads`` (per site), ``pruning`` ("heads" or "mlp_only"), ``head_dims``
    (whether head-dim pruning passed the equivalence check) and ``note`` (one line)."""


@dataclass(frozen=True)
class _Attempt:
    """One child's outcome: the last ``phase`` it reported ("start": none, "loaded": the
    model, "graph", "pruned"), the split-coupled layers it found, an error or timeout
    message (None when the prune succeeded), the pruned copy's MACs ratio and, for a model
    with attention sites, what its probe found (``_attention_probe``)."""

    phase: str
    coupled: tuple[str, ...]
    error: str | None
    macs_ratio: float | None = None
    attention: dict[str, Any] = dataclasses.field(default_factory=dict)


def preflight(
    model: nn.Module, input_shape: Inputs, *, time_limit_s: float = 60.0
) -> PreflightResult:
    """Find out whether Torch-Pruning can prune ``model`` and which layers it must ignore.

    Runs in spawned child processes (one torch thread each) that are killed at
    ``time_limit_s`` (wall time from the call, child start-up included), so a Torch-Pruning
    hang costs at most that. ``model`` is not modified; it must pickle (``torch.save``).
    ``input_shape`` is one sample's shape without the batch dimension (or a multi-input
    model's ``ModelInputs``). Never raises for a
    model Torch-Pruning cannot handle: that is ``prunable=False`` with the reason.
    """
    import torch

    t0 = time.monotonic()
    deadline = t0 + time_limit_s
    buf = io.BytesIO()
    try:
        torch.save(model, buf)
    except Exception as exc:  # lambdas, hooks, local classes: the search's child reloads it
        return PreflightResult(
            False,
            (),
            f"pre-flight could not copy the model: {type(exc).__name__}: {exc}",
            0.0,
            conclusive=False,
        )
    blob = buf.getvalue()
    shape = input_shape
    if not isinstance(shape, ModelInputs):
        shape = tuple(int(d) for d in shape)
    if find_attention(model):
        return _attention_preflight(blob, shape, deadline, t0)

    first = _attempt(blob, shape, (), deadline, first_share=True, t0=t0)
    if first.phase == "start":  # the child never loaded the model: nothing was learnt
        result = _done(t0, False, (), f"pre-flight could not run: {first.error}")
        return dataclasses.replace(result, conclusive=False)
    if first.error is None:
        return _done(
            t0, True, (), f"pruned {PROBE_RATIO:.0%} of every channel group{_saved(first)}"
        )
    if not first.coupled:
        return _done(t0, False, (), _failure(first))
    second = _attempt(blob, shape, first.coupled, deadline, first_share=False, t0=t0)
    n = len(first.coupled)
    if second.error is None:
        return _done(
            t0,
            True,
            first.coupled,
            f"{_failure(first)}; pruned with {n} split-coupled layer(s) left whole{_saved(second)}",
        )
    return _done(
        t0,
        False,
        (),
        f"{_failure(first)}; with {n} split-coupled layer(s) left whole: {_failure(second)}",
    )


def _attention_preflight(blob: bytes, shape: Inputs, deadline: float, t0: float) -> PreflightResult:
    """Heads (or, where the qkv is split, MLP width) in a first child; MLP width alone in a
    second when the first failed past loading the model."""
    first = _attempt(blob, shape, (), deadline, first_share=False, t0=t0, mode="heads")
    if first.phase == "start":
        result = _done(t0, False, (), f"pre-flight could not run: {first.error}")
        return dataclasses.replace(result, conclusive=False)
    if first.error is None:
        facts = first.attention
        return _done(t0, True, (), f"{facts['note']}{_saved(first)}", facts)
    second = _attempt(blob, shape, (), deadline, first_share=False, t0=t0, mode="mlp")
    if second.error is None:
        facts = dict(second.attention)
        facts["note"] = (
            f"attention: {facts['note_sites']}, heads not prunable "
            f"({_failure(first)}): attention left whole, MLP width pruned"
        )
        return _done(t0, True, (), f"{facts['note']}{_saved(second)}", facts)
    return _done(t0, False, (), f"{_failure(first)}; with attention left whole: {_failure(second)}")


def _done(
    t0: float,
    prunable: bool,
    ignored: tuple[str, ...],
    reason: str,
    attention: dict[str, Any] | None = None,
) -> PreflightResult:
    facts = {k: v for k, v in (attention or {}).items() if k not in ("note_sites", "macs_ratio")}
    result = PreflightResult(prunable, ignored, reason, time.monotonic() - t0, attention=facts)
    log.info("prune pre-flight (%.1fs): %s", result.seconds, reason)
    return result


def _saved(attempt: _Attempt) -> str:
    if attempt.macs_ratio is None:
        return ""
    return f" (MACs kept {attempt.macs_ratio:.1%})"


def _failure(attempt: _Attempt) -> str:
    where = "pruning" if attempt.phase == "graph" else "building the dependency graph"
    return f"Torch-Pruning failed {where}: {attempt.error}"


def _attempt(
    blob: bytes,
    shape: Inputs,
    ignored: tuple[str, ...],
    deadline: float,
    *,
    first_share: bool,
    t0: float,
    mode: str = "channels",
) -> _Attempt:
    """Run ``_child`` and collect its messages until it is done or its time is up.

    With ``first_share``, once the child found split-coupled layers, its prune must end
    within the first half of the time limit (the rest is for the retry). ``mode``: see
    ``_child``.
    """
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_child, args=(send, blob, shape, ignored, os.getpid(), mode), daemon=True
    )
    with stop_signals_ignored_by_children():  # this process decides when the probe stops
        proc.start()
    send.close()
    phase, coupled = "start", ()
    limit = deadline
    try:
        while True:
            left = limit - time.monotonic()
            if left <= 0 or not recv.poll(left):
                waited = time.monotonic() - t0
                return _Attempt(phase, coupled, f"timed out after {waited:.1f}s")
            try:
                kind, payload = recv.recv()
            except EOFError:
                proc.join(5)
                return _Attempt(phase, coupled, f"the child process died (exit {proc.exitcode})")
            if kind == "loaded":
                phase = "loaded"
            elif kind == "graph":
                phase, coupled = "graph", tuple(payload)
                if first_share and coupled:
                    limit = min(deadline, t0 + (deadline - t0) / 2)
            elif kind == "pruned":
                return _Attempt("pruned", coupled, None, float(payload))
            elif kind == "attention":
                return _Attempt("pruned", coupled, None, payload["macs_ratio"], payload)
            else:  # "error"
                return _Attempt(phase, coupled, str(payload))
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        recv.close()


def _child(
    conn: Connection,
    blob: bytes,
    shape: Inputs,
    ignored: tuple[str, ...],
    parent_pid: int,
    mode: str = "channels",
) -> None:
    """Child process: report the split-coupled layers, then try the probe prune; for a
    model with attention sites (``mode`` "heads" or "mlp") the attention probe instead
    (``_attention_probe``). It dies with ``parent_pid`` (a killed ``optimize`` leaves no
    probe computing on)."""
    die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(1)
    try:
        model = torch.load(io.BytesIO(blob), weights_only=False).eval()
        conn.send(("loaded", None))
        if mode != "channels":
            conn.send(("graph", []))
            conn.send(("attention", _attention_probe(model, shape, heads=mode == "heads")))
            return
        conn.send(("graph", _split_coupled(model, shape)))
        conn.send(("pruned", _probe_prune(model, shape, ignored)))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _attention_probe(model: nn.Module, shape: Inputs, *, heads: bool) -> dict[str, Any]:
    """Prune a copy of a model with attention sites: ``PROBE_HEAD_RATIO`` of the heads
    (unless ``heads`` is False or a fused qkv is split by ``chunk``/``split``) and
    ``PROBE_RATIO`` of the MLP width; after a heads prune, head dims too. What was found, as
    ``PreflightResult.attention`` (plus ``macs_ratio`` and ``note_sites``)."""

    sites = find_attention(model)
    x = example(shape, module_device(model))
    split = []
    first = first_layer(model, x)
    if heads and first is not None:
        split = qkv_split(build_dependency_graph(model, x), model, sites)
    attention = AttentionPruning.HEADS if heads and not split else AttentionPruning.NONE
    head_ratio = PROBE_HEAD_RATIO if attention is AttentionPruning.HEADS else 0.0
    macs = _probe_prune(model, shape, (), attention=attention, head_ratio=head_ratio)
    head_dims, why = False, ""
    if attention is AttentionPruning.HEADS:
        try:
            _probe_prune(
                model, shape, (), attention=AttentionPruning.HEAD_DIMS, head_ratio=head_ratio
            )
            head_dims = True
        except CandidateError as exc:
            log.debug("head dims not prunable: %s", exc)
            why = head_dims_refusal(exc)
    where = describe_sites(sites)
    if split:
        note = "qkv split by chunk: attention left whole, MLP width pruned"
    elif attention is AttentionPruning.HEADS:
        # suggest offers head dims only where channels are not rounded (round_to 1)
        dims = (
            "head dims prunable (scale stored; searched where channel_multiple is 1)"
            if head_dims
            else f"head dims not prunable ({why})"
        )
        note = f"attention: {where}, heads prunable; {dims}"
    else:
        note = f"attention: {where}: attention left whole, MLP width pruned"
    return {
        "sites": [s.name for s in sites],
        "layout": ", ".join(sorted({s.layout.label for s in sites})),
        "heads": {s.name: s.heads for s in sites},
        "pruning": "heads" if attention is AttentionPruning.HEADS else "mlp_only",
        "head_dims": head_dims,
        "note": note,
        "note_sites": where,
        "macs_ratio": macs,
    }


def _probe_prune(
    model: nn.Module, shape: Inputs, ignored: tuple[str, ...], **attention: Any
) -> float:
    """Prune a copy by ``PROBE_RATIO`` with the prune stage (``attention``: the config's
    attention fields); the achieved MACs ratio."""
    config = PruneConfig(ratio=PROBE_RATIO, ignored_layers=ignored, **attention)
    with tempfile.TemporaryDirectory(prefix="edgeopt-preflight-") as tmp:
        ctx = StageContext(
            workdir=Path(tmp),
            profile=load_profile("cpu"),  # unused by the prune stage at round_to 1
            data=None,
            teacher=None,
            input_shape=shape.first_shape if isinstance(shape, ModelInputs) else shape,
            inputs=shape if isinstance(shape, ModelInputs) else None,
        )
        _, report = prune_model(model, config, ctx)
    return float(report.get("macs_ratio", 1.0))


def _split_coupled(model: nn.Module, shape: Inputs) -> list[str]:
    """Names of the Conv/Linear modules whose output channels reach a channel-moving op.

    Walks Torch-Pruning's dependency graph (traced as the prune stage traces it) without its
    index mappings (which are what explode or misplace channels): from each layer's output,
    through every node that keeps the channel axis (both ways: an element-wise add couples
    its inputs), stopping at the inputs of dense Conv/Linear layers, which absorb channels.
    Channel-moving ops are ``prune.moves_channels``.
    """
    import torch_pruning as tp

    graph = build_dependency_graph(model, example(shape, module_device(model)))
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, tp.ops.TORCH_CONV | tp.ops.TORCH_LINEAR)
        and module in graph.module2node
        and _reaches_channel_op(graph.module2node[module])
    ]


def _absorbs(node: Any) -> bool:
    """A dense layer: its input and output channels are independent."""
    from torch_pruning.ops import OPTYPE

    return node.type in (OPTYPE.CONV, OPTYPE.LINEAR, OPTYPE.LSTM, OPTYPE.MHA, OPTYPE.EMBED)


def _reaches_channel_op(root: Any) -> bool:
    """Whether ``root``'s output channels are coupled to a channel-moving node.

    A state is (node, side): "out" = the node's output channels, "in" = its input channels;
    the two sides are one for every node that does not absorb channels.
    """
    start = "out" if _absorbs(root) else "both"
    queue: deque[tuple[Any, str]] = deque([(root, start)])
    seen: set[tuple[int, str]] = set()
    while queue:
        node, side = queue.popleft()
        key = (id(node), side)
        if key in seen:
            continue
        seen.add(key)
        if node is not root and moves_channels(node):
            return True
        queue.extend(_neighbours(node, side))
    return False


def _neighbours(node: Any, side: str) -> Iterable[tuple[Any, str]]:
    """Channel-coupled states next to ``(node, side)``."""
    if side in ("out", "both"):  # output channels: the consumers' inputs
        for out in node.outputs:
            yield (out, "in" if _absorbs(out) else "both")
    if side in ("in", "both"):  # input channels: the producers' outputs
        for inp in node.inputs:
            yield (inp, "out" if _absorbs(inp) else "both")
