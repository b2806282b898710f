"""ONNX Runtime quantization, fp16 conversion and offline graph optimization (ONNX phase).

Defaults follow measurements of ONNX Runtime 1.31 quantization on an x86 dev host
(``benchmarks/bench_stages.py`` re-measures them):

* static QDQ with **u8 activations / s8 weights** is the setting that pays on x86 (≈3x over
  fp32); ORT's own ``quantize_static`` defaults (s8/s8) run at about fp32 speed, so they are
  only offered by hand as ``ort_default`` (a baseline), never by the search;
* activation/weight types come from the target profile (``uint8`` on x86, ``int8`` on
  ARM/NPU);
* dynamic quantization is restricted to MatMul/Gemm and embedding tables (``ConvInteger`` is
  5-11x *slower* than fp32) and only suggested for MatMul-heavy graphs (``matmul_heavy``);
* fp16 is a size knob on CPU (slower there); the profile decides whether it is offered;
* ``fp32_opt`` saves the graph optimized at ``ORT_ENABLE_BASIC``: constant folding, redundant
  node elimination and Conv+BN/Add/Mul fusions, all expressed with standard ONNX ops, so the
  file still runs on any runtime and any execution provider. ``ORT_ENABLE_EXTENDED`` would
  add ``com.microsoft`` contrib ops (FusedConv, ...) that only ORT's CPU provider executes,
  and levels above it bake in the host's memory layout.

``reduce_range`` is always off: the x86 hosts we target have VNNI, where 8-bit weights do not
saturate (a non-VNNI AVX2 target would need it; profiles do not describe that yet).

The config lives in ``edgeopt.stages.quantize_config``, the ORT calls in
``edgeopt.stages.quantize_ort`` and ``edgeopt.stages.ort_quant``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.errors import CandidateError
from edgeopt.inputs import InputSpec, ModelInputs
from edgeopt.measure.session import ort_session
from edgeopt.profiles.merge import quantizes_with_ort, runs_contrib_ops
from edgeopt.stages import quantize_ort
from edgeopt.stages.base import ByHandBaseline, Phase, Stage, StageOutput
from edgeopt.stages.onnx_graph import MATMUL_HEAVY, matmul_mac_fraction, op_types, shape_of
from edgeopt.stages.ort_fuse import fusible
from edgeopt.stages.quantize_config import (
    FUSE_MODES,
    CalibMethod,
    QType,
    QuantizeConfig,
    QuantMode,
    StaticOps,
    calibration_inputs,
)

if TYPE_CHECKING:
    from edgeopt.profiles import HardwareProfile
    from edgeopt.stages.base import ModelFacts, ProbeInput, StageContext, Suggester


MAX_FP32_NODES = 8
"""Most sensitive nodes the search may keep in float (``quantize.fp32_nodes``)."""
ORT_QUANTIZER_PARAMS = (
    "quantize.calibration",
    "quantize.per_channel",
    "quantize.exclude_first_last",
    "quantize.fp32_nodes",
)
"""ORT quantizer options the search draws only where some target ships ORT's int8."""


def _output_path(src: Path, config: QuantizeConfig, workdir: Path) -> Path:
    digest = hashlib.sha256()
    digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    digest.update(src.read_bytes())
    out = workdir / f"{src.stem}.{config.mode.value}.{digest.hexdigest()[:10]}.onnx"
    if out.resolve() == src.resolve():  # pragma: no cover - the hash includes the content
        raise CandidateError("quantize", f"output would overwrite the input {src}")
    return out


def _session(path: Path) -> Any:
    return ort_session(path, threads=1)


def graph_inputs(model: Any, ctx: StageContext) -> ModelInputs:
    """What the graph ``model`` takes, as the stage feeds it: ``ctx.model_inputs``; one float
    input keeps the graph's own name and sample shape (dynamic dims 1), as before.
    CandidateError when the run's inputs are not the graph's."""
    init = {i.name for i in model.graph.initializer}
    graph = [i for i in model.graph.input if i.name not in init]
    given = ctx.model_inputs
    if given.is_single and len(graph) == 1:
        shape = tuple(shape_of(graph[0])[1:]) or given.first_shape
        return ModelInputs((InputSpec.of(graph[0].name, shape, "float32"),))
    if sorted(given.names) != sorted(i.name for i in graph):
        raise CandidateError(
            "quantize",
            f"the ONNX graph takes {', '.join(i.name for i in graph)}; the run's inputs are "
            f"{', '.join(given.names)}",
        )
    return given


class QuantizeStage(Stage[QuantizeConfig, Path]):
    """ORT quantization / fp16 / graph optimization of an exported ONNX file.

    Modes come from the profile; dynamic int8 is offered only to MatMul-heavy models
    (the probe's ``matmul_heavy``). Its by-hand baseline is plain int8: dynamic for those,
    static QDQ for the rest.
    """

    name = "quantize"
    title = "Quantization"
    phase = Phase.ONNX
    config_type = QuantizeConfig
    grid_probe = {"quantize.mode": QuantMode.INT8_STATIC.value}
    # a transformer's facts: --space/--enqueue may name int8_dynamic, fuse and static_ops
    widest_facts = {"matmul_heavy": True, "transformer": True, "fusible": True}

    def offered_modes(self, profile: HardwareProfile, facts: ModelFacts) -> list[QuantMode]:
        """Modes ``suggest`` may draw for ``profile`` and this model (never ``ort_default``)."""
        q = profile.quantization
        if q.int8_only:
            return [QuantMode.INT8_STATIC]
        modes = [QuantMode(str(m)) for m in q.modes]
        out = [
            m
            for m in QuantMode
            if m in modes
            and m is not QuantMode.ORT_DEFAULT
            and (m is not QuantMode.INT8_DYNAMIC or facts.of(self.name).get("matmul_heavy"))
        ]
        return out or [QuantMode.FP32]

    def suggest(
        self, space: Suggester, profile: HardwareProfile, facts: ModelFacts
    ) -> QuantizeConfig:
        """``quantize.mode`` from ``offered_modes`` (not drawn when only one is offered, e.g.
        int8-only profiles). For int8_static: ``quantize.calibration`` (minmax, entropy,
        percentile), ``quantize.calibration_samples`` (64, 128, 256), ``quantize.per_channel``
        (only when the profile supports per-channel; else False) and
        ``quantize.exclude_first_last`` and ``quantize.fp32_nodes`` (0..``MAX_FP32_NODES``:
        how many of the most sensitive nodes stay float) and, for a graph with LayerNorm or
        Softmax (the probe's ``transformer``), ``quantize.static_ops``; of these only
        ``quantize.calibration_samples`` where no target ships ORT's quantization
        (``quantizes_with_ort``: LiteRT's own quantizer makes every file). For fp32,
        int8_dynamic and fp16: ``quantize.fuse`` where ``fuse_offered``. Types always come
        from the profile."""
        modes = self.offered_modes(profile, facts)
        if len(modes) == 1:
            mode = modes[0]
        else:
            mode = QuantMode(space.suggest_categorical("quantize.mode", [m.value for m in modes]))
        base = self.identity(profile)
        q = profile.quantization
        if mode is not QuantMode.INT8_STATIC:
            fuse = mode in FUSE_MODES and self.fuse_offered(profile, facts)
            fuse = fuse and bool(space.suggest_categorical("quantize.fuse", [False, True]))
            return dataclasses.replace(base, mode=mode, fuse=fuse)
        if not quantizes_with_ort(profile):
            samples = space.suggest_categorical("quantize.calibration_samples", [64, 128, 256])
            # the targets' own quantizer makes the shipped file: the ONNX twin is quantized
            # as it is (min-max, the profile's granularity, every op int8), nothing drawn
            # that the shipped file would not have
            return dataclasses.replace(
                base,
                mode=mode,
                calibration=CalibMethod.MINMAX,
                calibration_samples=int(samples),
                per_channel=bool(q.per_channel),
            )
        calib = space.suggest_categorical("quantize.calibration", [c.value for c in CalibMethod])
        samples = space.suggest_categorical("quantize.calibration_samples", [64, 128, 256])
        per_channel = (
            bool(space.suggest_categorical("quantize.per_channel", [True, False]))
            if q.per_channel
            else False
        )
        excl = bool(space.suggest_categorical("quantize.exclude_first_last", [False, True]))
        fp32_nodes = int(space.suggest_int("quantize.fp32_nodes", 0, MAX_FP32_NODES))
        ops = StaticOps.ALL
        if facts.of(self.name).get("transformer"):
            ops = StaticOps(
                space.suggest_categorical("quantize.static_ops", [o.value for o in StaticOps])
            )
        return dataclasses.replace(
            base,
            mode=mode,
            calibration=CalibMethod(calib),
            calibration_samples=int(samples),
            per_channel=per_channel,
            exclude_first_last=excl,
            fp32_nodes=fp32_nodes,
            static_ops=ops,
        )

    def fuse_offered(self, profile: HardwareProfile, facts: ModelFacts) -> bool:
        """Whether ``quantize.fuse`` is drawn: the probe fused the baseline and every
        target's runtime runs ORT's ``com.microsoft`` ops."""
        return bool(facts.of(self.name).get("fusible")) and runs_contrib_ops(profile)

    def identity(self, profile: HardwareProfile) -> QuantizeConfig:
        """fp32 (a copy of the input), with the profile's types recorded."""
        q = profile.quantization
        return QuantizeConfig(
            mode=QuantMode.FP32,
            per_channel=bool(q.per_channel),
            activation_type=QType(str(q.activation_type)),
            activation_symmetric=bool(q.activation_symmetric),
            weight_type=QType(str(q.weight_type)),
        )

    def identity_params(self, profile: HardwareProfile) -> dict[str, Any]:
        """``quantize.mode`` fp32 where the profile lists fp32 (an int8-only target does not:
        its unchanged model is estimated with its CPU fallback)."""
        modes = tuple(profile.quantization.modes)
        return {"quantize.mode": QuantMode.FP32.value} if QuantMode.FP32.value in modes else {}

    def by_hand(
        self, profile: HardwareProfile, facts: ModelFacts
    ) -> ByHandBaseline[QuantizeConfig] | None:
        """Plain int8, what a user gets by hand with the target's types. For a MatMul-heavy
        graph (a transformer) where the profile offers it: dynamic int8, unfused, ORT's own
        advice for transformers (``quantize_dynamic``). Otherwise static QDQ, MinMax
        calibration on 128 samples, per-channel where the target supports it. None when the
        profile offers neither."""
        if QuantMode.INT8_DYNAMIC in self.offered_modes(profile, facts):
            dynamic = dataclasses.replace(self.identity(profile), mode=QuantMode.INT8_DYNAMIC)
            params: dict[str, Any] = {"quantize.mode": dynamic.mode.value}
            if self.fuse_offered(profile, facts):
                params["quantize.fuse"] = False
            return ByHandBaseline("int8", dynamic, params)
        if QuantMode.INT8_STATIC.value not in tuple(profile.quantization.modes):
            return None
        config = dataclasses.replace(
            self.identity(profile),
            mode=QuantMode.INT8_STATIC,
            calibration=CalibMethod.MINMAX,
            calibration_samples=128,
            exclude_first_last=False,
        )
        params = {
            "quantize.mode": config.mode.value,
            "quantize.calibration": config.calibration.value,
            "quantize.calibration_samples": config.calibration_samples,
            "quantize.per_channel": config.per_channel,
            "quantize.exclude_first_last": config.exclude_first_last,
            "quantize.fp32_nodes": config.fp32_nodes,
        }
        if not quantizes_with_ort(profile):  # drawn only where ORT quantizes (``suggest``)
            params = {k: v for k, v in params.items() if k not in ORT_QUANTIZER_PARAMS}
        return ByHandBaseline("int8", config, params)

    def variants(self, profile: HardwareProfile, facts: ModelFacts) -> list[dict[str, Any]]:
        """For every pruned and fine-tuned model: the optimized fp32 graph (what fp32 users
        deploy; plain fp32 where the profile offers no fp32_opt), fp16 where the profile
        offers it (half the size, and fast on GPUs and mobile SoCs), and plain int8."""
        offered = self.offered_modes(profile, facts)
        out = []
        if QuantMode.FP32_OPT in offered:
            out.append({"quantize.mode": QuantMode.FP32_OPT.value})
        elif self.identity_params(profile):
            out.append(self.identity_params(profile))
        if QuantMode.FP16 in offered:
            out.append({"quantize.mode": QuantMode.FP16.value})
        hand = self.by_hand(profile, facts)
        return out + [dict(hand.params)] if hand is not None else out

    def grid_axes(self, profile: HardwareProfile, facts: ModelFacts) -> dict[str, list[Any]]:
        """Every offered mode, when there is a choice, and ``quantize.fuse`` where offered
        (a grid cannot reach it from its probe's int8_static)."""
        offered = self.offered_modes(profile, facts)
        modes = [m.value for m in offered]
        axes: dict[str, list[Any]] = {"quantize.mode": modes} if len(modes) > 1 else {}
        if self.fuse_offered(profile, facts) and FUSE_MODES.intersection(offered):
            axes["quantize.fuse"] = [False, True]
        return axes

    def describe(self, config: QuantizeConfig) -> str:
        """The mode (``fp32`` included), `` fused`` after ORT's transformer fusion, with
        `` compute-only`` for static Conv/MatMul/Gemm only, ``+k fp32`` for sensitive nodes
        kept float."""
        extra = f" +{config.fp32_nodes} fp32" if config.fp32_nodes else ""
        if config.static_ops is StaticOps.COMPUTE:
            extra = " compute-only" + extra
        return config.mode.value + (" fused" if config.fuse else "") + extra

    def probe(self, model: ProbeInput) -> dict[str, Any]:
        """``matmul_heavy``: at least ``onnx_graph.MATMUL_HEAVY`` of the graph's MACs are in
        MatMul/Gemm, the only graphs where dynamic int8 pays. Where the graph has
        LayerNormalization or Softmax (a transformer; a CNN's facts stay as they were):
        ``transformer`` True and ``fusible``: ORT's transformer optimizer fuses something in
        it and the fused graph computes the same (``ort_fuse.fusible``)."""
        facts: dict[str, Any] = {
            "matmul_heavy": matmul_mac_fraction(model.onnx_path) >= MATMUL_HEAVY
        }
        if op_types(model.onnx_path) & {"LayerNormalization", "Softmax"}:
            facts.update(transformer=True, fusible=fusible(model.onnx_path))
        return facts

    def must_run(self, fp32_onnx: Path) -> bool:
        """A quantization-aware export (QuantizeLinear nodes in the graph) would run as int8
        in ORT under an fp32 label: the identity step removes its fake-quant pairs."""
        import onnx

        model = onnx.load(str(fp32_onnx), load_external_data=False)
        return any(n.op_type == "QuantizeLinear" for n in model.graph.node)

    def is_identity(self, config: QuantizeConfig) -> bool:
        """Only unfused fp32 leaves the graph unchanged."""
        return config.mode is QuantMode.FP32 and not config.fuse

    def apply(self, artifact: Path, config: QuantizeConfig, ctx: StageContext) -> StageOutput[Path]:
        """Write the converted model to a new file under ``ctx.workdir``; return its path.

        The result is checked: it loads and runs in ORT on calibration inputs with the
        input's output shape, and its graph has the expected nodes (static: exactly the
        non-excluded Conv/Gemm/MatMul read DequantizeLinear weights; dynamic: at least one
        MatMulInteger or QAttention; fp16: float16 initializers). Otherwise
        CandidateError("quantize", ...). The sensitive nodes kept float and the number of
        learned activation ranges used are the info (``fp32_nodes``, ``learned_ranges``), when
        there are any; a fusion's ``fuse``: ``{"attention": "k of n", "ops": {op: count}}``.
        """
        import onnx

        src = Path(artifact)
        if not src.is_file():
            raise CandidateError("quantize", f"ONNX file not found: {src}")
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        out = _output_path(src, config, ctx.workdir)
        model = onnx.load(str(src))
        inputs = graph_inputs(model, ctx)
        check_x = inputs.feeds(calibration_inputs(ctx, min(8, config.calibration_samples), inputs))
        ref = _session(src).run(None, check_x)[0]
        try:
            with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
                done = quantize_ort.convert(src, out, config, ctx, Path(tmp), inputs)
        except CandidateError:
            raise
        except Exception as exc:
            out.unlink(missing_ok=True)
            raise CandidateError(
                "quantize", f"{config.mode.value} failed: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            got = _session(out).run(None, check_x)[0]
        except Exception as exc:
            raise CandidateError(
                "quantize", f"{config.mode.value} model does not run in ONNX Runtime: {exc}"
            ) from exc
        if got.shape != ref.shape or not np.isfinite(got).all():
            raise CandidateError(
                "quantize",
                f"{config.mode.value} output has shape {got.shape} (expected {ref.shape}) "
                f"or non-finite values",
            )
        excluded = frozenset(done.sensitive + done.first_last)
        quantize_ort.check_graph(out, config, model, excluded)
        info: dict[str, Any] = {}
        if done.sensitive or done.learned_ranges:
            info = {"fp32_nodes": list(done.sensitive), "learned_ranges": done.learned_ranges}
        if done.fused is not None:
            info["fuse"] = {"attention": done.fused.attention, "ops": dict(done.fused.counts)}
        return StageOutput(out, info) if info else StageOutput(out)
