"""The runtimes a profile may name (``[runtime] name``) and what each ships: one table, data
only (no runtime is imported here).

A runtime's artifact is the file its target loads: ``ort`` loads the ONNX file itself,
``ort-format`` ORT Mobile's ``.ort`` (with the reduced-operator config a minimal ORT build
needs), ``openvino`` the IR ``.xml`` with its ``.bin`` beside it, ``litert`` a TFLite
flatbuffer ``.tflite``, converted from the torch model (``needs_torch``: litert-torch reads
torch, not ONNX). ``tensorrt`` is named so profiles may say what their device runs; edgeopt
cannot produce its files here (``convertible`` is False), and asking for one is a
ConfigError saying so.

Adding a runtime: one :class:`Runtime` member, one :data:`RUNTIMES` row, a converter in
``edgeopt.export.convert`` and a session factory in ``edgeopt.measure.session``
(tests/test_runtime_table.py checks the three tables name the same runtimes).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from edgeopt.errors import ConfigError


class Runtime(StrEnum):
    """A runtime's name as ``[runtime] name`` spells it."""

    ORT = "ort"
    ORT_FORMAT = "ort-format"
    LITERT = "litert"
    OPENVINO = "openvino"
    TENSORRT = "tensorrt"


@dataclass(frozen=True)
class RuntimeKind:
    """What one runtime loads and what it needs installed.

    ``format`` is the name ``edgeopt export --format`` gives its artifact; ``suffixes`` are the
    artifact's files, the first the one a user passes (``.xml``: its ``.bin`` goes beside it);
    ``extra`` is the pip extra that installs it (None: part of edgeopt); ``probe_module`` the
    module whose import says it is installed; ``label`` its name in messages; ``convertible``
    whether edgeopt converts to it here (the runtimes it cannot are named for estimates only).
    ``min_agreement_float`` / ``min_agreement_int8``: the least top-1 agreement of the
    converted file with its ONNX candidate (a float / an int8 candidate) on up to 256
    validation inputs; a search candidate whose conversion agrees less fails.
    ``needs_torch`` whether its converter reads the torch model rather than the ONNX file
    (the search converts each candidate's torch module for it; ``export`` copies the file the
    search made, a run keeping no torch model).
    ``contrib_ops`` whether it runs ONNX Runtime's ``com.microsoft`` contrib ops (the fused
    ``Attention``/``SkipLayerNormalization`` of ``quantize.fuse``): only plain ORT does (an
    ORT Mobile build, QNN and OpenVINO are not known to).
    ``own_quantizer`` whether its file is quantized by the runtime's own tool rather than
    being the ONNX candidate's ORT quantization (LiteRT: ai-edge-quantizer), so the ORT
    quantizer's options (calibration method, float nodes, first/last exclusion) do not reach
    it (``edgeopt.profiles.merge.quantizes_with_ort``).
    ``on_host``: how footnotes (``bench``, the reports) name it when it ran a number on this
    host, with the backend it ran on (empty: ``label``).
    """

    runtime: Runtime
    format: str
    suffixes: tuple[str, ...]
    extra: str | None
    probe_module: str
    label: str
    convertible: bool
    needs_torch: bool = False
    min_agreement_float: float = 0.995
    min_agreement_int8: float = 0.97
    contrib_ops: bool = False
    own_quantizer: bool = False
    on_host: str = ""

    @property
    def host_words(self) -> str:
        """``on_host``, or ``label`` where it has none."""
        return self.on_host or self.label

    def min_agreement(self, int8: bool) -> float:
        """The parity tolerance for a float or an int8 candidate."""
        return self.min_agreement_int8 if int8 else self.min_agreement_float

    @property
    def suffix(self) -> str:
        """The suffix of the file a user passes (``.onnx``, ``.ort``, ``.xml``, ...)."""
        return self.suffixes[0]


RUNTIMES: dict[Runtime, RuntimeKind] = {
    Runtime.ORT: RuntimeKind(
        Runtime.ORT,
        "onnx",
        (".onnx",),
        None,
        "onnxruntime",
        "ONNX Runtime",
        True,
        contrib_ops=True,
        on_host="ORT CPU",
    ),
    Runtime.ORT_FORMAT: RuntimeKind(
        Runtime.ORT_FORMAT,
        "ort",
        (".ort", ".required_operators.config"),
        None,
        "onnxruntime",
        "ORT Mobile (.ort format)",
        True,
        on_host="ORT CPU, .ort file",
    ),
    Runtime.LITERT: RuntimeKind(
        Runtime.LITERT,
        "tflite",
        (".tflite",),
        "litert",
        "ai_edge_litert",
        "LiteRT",
        True,
        needs_torch=True,
        own_quantizer=True,
        on_host="LiteRT, XNNPACK",
    ),
    Runtime.OPENVINO: RuntimeKind(
        Runtime.OPENVINO,
        "openvino",
        (".xml", ".bin"),
        "openvino",
        "openvino",
        "OpenVINO",
        True,
        on_host="OpenVINO CPU",
    ),
    Runtime.TENSORRT: RuntimeKind(
        Runtime.TENSORRT, "tensorrt", (".engine",), "tensorrt", "tensorrt", "TensorRT", False
    ),
}
"""Every runtime, by name."""

FORMATS: dict[str, Runtime] = {k.format: r for r, k in RUNTIMES.items()}
"""``--format`` name -> the runtime whose artifact it is."""

PRECISION_HINTS = ("f32", "bf16", "f16")
"""OpenVINO's ``inference_precision`` values a profile may ask for (``[runtime]
precision_hint``): OpenVINO runs float models in bf16 on CPUs with avx512_bf16 unless told
f32, so fp32 timings need ``f32`` (the default)."""


IO_TYPES = ("int8",)
"""``[runtime] io_type`` values (LiteRT only): ``int8`` for a device that loads only
full-integer files with int8 inputs and outputs (Edge TPU, TFLite Micro). Left out, the file
keeps the interface its converter gives it."""


def runtime_of_file(path: str | Path) -> Runtime | None:
    """The runtime that loads ``path``, by its suffix; None for a suffix no runtime loads."""
    suffix = Path(path).suffix.lower()
    for r, kind in RUNTIMES.items():
        if kind.suffix == suffix:
            return r
    return None


def convertible(runtime: Runtime) -> RuntimeKind:
    """``RUNTIMES[runtime]``; ConfigError when edgeopt cannot produce its files here."""
    kind = RUNTIMES[runtime]
    if not kind.convertible:
        raise ConfigError(
            f"converting to {kind.label} ({kind.format}) is not supported yet: its converter "
            "is not installable here",
            hint="export --format onnx (or ort, openvino); a profile naming this runtime is "
            "estimated on the ONNX file",
        )
    return kind


def require_installed(runtime: Runtime) -> None:
    """ConfigError naming the pip extra when ``runtime``'s package is not installed (found
    without importing it)."""
    kind = RUNTIMES[runtime]
    if importlib.util.find_spec(kind.probe_module) is None:
        extra = f"pip install 'edgeopt[{kind.extra}]'" if kind.extra else "reinstall edgeopt"
        raise ConfigError(
            f"{kind.label} is not installed here (no module {kind.probe_module})", hint=extra
        )
