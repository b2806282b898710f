"""Calibrate a measured profile with ONNX Runtime micro-benchmarks, then check it on real models.

The host profile is timed on this host; a profile with a ``[runner]`` (``profiles calibrate
--target board.toml``) is timed by its runner: the graphs are built here, timed on the
device, and fitted here (``render_device_toml`` writes the device's profile).

Micro-benchmarks are small generated graphs, each a chain of identical layers so that the
per-inference invoke overhead is amortised: a dense 3x3 conv, a 1x1 conv, a depthwise conv, a
gemm, an elementwise chain and a chain of tiny ops (per-kernel overhead), in fp32 and as int8
QDQ models (uint8 activations, int8 per-channel weights, the x86 fast path). All are timed in
one process by the interleaved timer (:mod:`edgeopt.measure.timing`) and summarised by the
median of per-round medians, since this VM's speed drifts.

The example models of the second step come from the caller (the CLI passes the zoo's), so
this package does not depend on the example-model zoo.

Modules: ``host`` (``calibrate_host``: time, fit, write), ``micro`` (the graphs), ``fit`` (the
numbers), ``render`` (the TOML).
"""

from edgeopt.measure.calibrate.fit import CalibrationResult, fit, fit_quantized
from edgeopt.measure.calibrate.host import FIT_WIDTH, ExampleModel, calibrate_host, example_models
from edgeopt.measure.calibrate.micro import build_micro, quantize_qdq
from edgeopt.measure.calibrate.render import render_device_toml, render_host_toml
from edgeopt.measure.local_runner import time_models

__all__ = [
    "FIT_WIDTH",
    "CalibrationResult",
    "ExampleModel",
    "build_micro",
    "calibrate_host",
    "example_models",
    "fit",
    "fit_quantized",
    "quantize_qdq",
    "render_device_toml",
    "render_host_toml",
    "time_models",
]
