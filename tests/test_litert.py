"""LiteRT for real: the tiny torch model converted with litert-torch (fp32) and quantized with
ai-edge-quantizer (int8 dynamic, int8 static with int8 inputs and outputs), read back from the
flatbuffer, run in the LiteRT interpreter, and timed and scored by ``edgeopt bench``/``check``
on LiteRT targets. ``litert_torch``'s import (~4 s) and the conversions happen once, in the
module fixture, in a process of their own: the conversion starts JAX's threads, and a process
that forks after that may deadlock (JAX warns so), as later tests here fork."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

from edgeopt.cli import main
from edgeopt.errors import ConfigError
from edgeopt.estimate import estimate, kernel_work
from edgeopt.estimate.tflite_graph import _Reader
from edgeopt.export.convert import ConvertOptions, convert
from edgeopt.export.litert import to_litert
from edgeopt.export.tflite_facts import tflite_facts
from edgeopt.measure.session import model_session
from edgeopt.profiles import load_profile
from edgeopt.profiles.runtime_spec import Runtime
from edgeopt.runtime_child import in_runtime_child

SHAPE = (1, 16, 16)  # conftest's tiny model


def _run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


# converts the bundle's model as the tests ask; prints each file's facts (or the converter's
# error) as JSON: run in its own process (see the module docstring)
CONVERT = """
import json, sys
import numpy as np, torch
from edgeopt.errors import ConversionError
from edgeopt.export.convert import ConvertOptions
from edgeopt.export.litert import to_litert
from edgeopt import zoo
from edgeopt.loading import load_model
from edgeopt.onnx_export import export_onnx

torch.set_num_threads(1)
bundle, data, out = sys.argv[1:]
model = load_model(bundle).module
calib = np.load(data)["x_train"][:32]
facts = {}
for name, mode, per_channel, io_type in (
    ("fp32", "fp32", True, None),
    ("dynamic", "int8_dynamic", True, None),
    ("static", "int8_static", True, "int8"),
    ("tensorwise", "int8_static", False, "int8"),
):
    options = ConvertOptions(quant_mode=mode, per_channel=per_channel, io_type=io_type)
    facts[name] = to_litert(model, (1, 16, 16), f"{out}/{name}.tflite", options, calib).facts
# over 256 KB of int8 weights: ai-edge-quantizer stores each buffer over 1 KB at an offset
# past the flatbuffer, not inline (its model_modifier)
torch.manual_seed(0)
wide = zoo.plain_cnn(in_channels=1, num_classes=10, width=64).eval()
export_onnx(wide, (1, 16, 16), f"{out}/wide.onnx")
options = ConvertOptions(quant_mode="int8_static", io_type="int8")
facts["wide"] = to_litert(wide, (1, 16, 16), f"{out}/wide.tflite", options, calib).facts


class Branchy(torch.nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x  # data-dependent: torch.export cannot trace it


try:
    to_litert(Branchy(), (1, 16, 16), f"{out}/branchy.tflite")
except ConversionError as exc:
    facts["branchy_error"] = str(exc)
print(json.dumps(facts))
"""


@pytest.fixture(scope="module")
def lite(
    model_files: dict, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The tiny model as fp32, int8-dynamic and int8-static (int8 I/O; per channel, and per
    tensor) ``.tflite`` files, each with the model's ONNX file beside it (what the cost model
    estimates), and ``facts``: what ``to_litert`` recorded for each (JSON)."""
    d = tmp_path_factory.mktemp("litert")
    r = subprocess.run(
        [sys.executable, "-c", CONVERT, str(model_files["bundle"]), str(tiny_data), str(d)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr == ""  # the converters' chatter (Python's and C++'s) is silenced
    (d / "facts.json").write_text(r.stdout)
    files = {"facts": d / "facts.json"}
    for name in ("fp32", "dynamic", "static", "tensorwise"):
        files[name] = d / f"{name}.tflite"
        shutil.copyfile(model_files["onnx"], d / f"{name}.onnx")
    files["wide"] = d / "wide.tflite"  # and wide.onnx beside it
    return files


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    return in_runtime_child(_logits_here, str(path), x)  # LiteRT never loads here


def _logits_here(path: str, x: np.ndarray) -> np.ndarray:
    sess = model_session(path, threads=1)
    assert sess.runtime == "litert" and sess.batch == 1
    return np.concatenate([np.asarray(sess.run(x[i : i + 1])) for i in range(len(x))])


def test_fp32_tflite_matches_torch(
    lite: dict[str, Path], tiny_model: torch.nn.Module, tiny_data: Path
) -> None:
    x = np.load(tiny_data)["x_val"][:16]
    with torch.no_grad():
        want = tiny_model(torch.from_numpy(x)).numpy()
    got = _logits(lite["fp32"], x)
    assert got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-4
    facts = tflite_facts(lite["fp32"])
    assert facts.input_types == ("FLOAT32",) and not facts.all_integer
    assert "CONV_2D" in facts.ops and "FULLY_CONNECTED" in facts.ops


def test_static_int8_is_full_integer_with_int8_io_and_runs_on_float_input(
    lite: dict[str, Path], tiny_model: torch.nn.Module, tiny_data: Path
) -> None:
    facts = tflite_facts(lite["static"])
    assert facts.all_integer, facts.tensor_types
    assert facts.input_types == ("INT8",) and facts.output_types == ("INT8",)
    assert "FLOAT32" not in facts.tensor_types
    # the session quantizes the float input and dequantizes the output
    x = np.load(tiny_data)["x_val"][:16]
    got = _logits(lite["static"], x)
    want = _logits(lite["fp32"], x)
    assert got.dtype == np.float32
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
    dynamic = tflite_facts(lite["dynamic"])
    assert dynamic.input_types == ("FLOAT32",) and "INT8" in dynamic.tensor_types


def test_weights_are_per_tensor_where_the_profile_says_so(lite: dict[str, Path]) -> None:
    facts = json.loads(lite["facts"].read_text())
    assert facts["static"]["recipe"] == "static_wi8_ai8"
    assert facts["static"]["weight_granularity"] == "CHANNELWISE"
    assert facts["tensorwise"]["weight_granularity"] == "TENSORWISE"
    assert facts["static"]["signature"] == "serving_default"  # read from the file
    assert facts["dynamic"]["recipe"] == "dynamic_wi8_afp32"
    assert tflite_facts(lite["tensorwise"]).all_integer
    assert facts["branchy_error"].startswith("converting to LiteRT failed: ")
    assert "\n" not in facts["branchy_error"]


def test_what_litert_cannot_make_is_said(
    model_files: dict, tiny_model: torch.nn.Module, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="converted from the torch model") as e:
        convert(model_files["onnx"], Runtime.LITERT, tmp_path / "m.tflite")
    assert "pass the model's .pt" in (e.value.hint or "")
    with pytest.raises(ConfigError, match="only int8_static makes"):
        to_litert(
            tiny_model,
            SHAPE,
            tmp_path / "d.tflite",
            ConvertOptions("amd64", False, "int8_dynamic", True, "int8"),
        )
    with pytest.raises(ConfigError, match="needs calibration samples"):
        to_litert(
            tiny_model, SHAPE, tmp_path / "s.tflite", ConvertOptions(quant_mode="int8_static")
        )


def test_bench_times_and_scores_tflite_files_on_litert_host(
    lite: dict[str, Path], model_files: dict, tiny_data: Path
) -> None:
    r = _run(
        "bench", lite["fp32"], "--vs", lite["static"], "--target", "litert-host",
        "--data", tiny_data, "--time-budget", "0.5", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["runtime"] == "litert" and report["measured"] is True
    fp32, static = report["results"]
    assert fp32["latency_p50_ms"]["provenance"] == "measured"
    assert fp32["latency_p50_ms"]["value"] > 0 and static["latency_p50_ms"]["value"] > 0
    assert fp32["size_mb"]["value"] == pytest.approx(lite["fp32"].stat().st_size / 2**20)
    (cmp,) = report["comparisons"]  # timed interleaved in one child
    assert cmp["provenance"] == "measured" and cmp["ratio"] > 0
    split = report["accuracy_split"]
    x, y = (np.load(tiny_data)[f"{k}_{split}"] for k in ("x", "y"))
    want = float((_logits(lite["static"], x).argmax(1) == y).mean())
    assert static["accuracy"]["value"] == pytest.approx(want)
    text = _run("bench", lite["static"], "--target", "litert-host", "--time-budget", "0.5")
    assert text.exit_code == 0, text.output
    assert "measured on this host (LiteRT, XNNPACK, batch 1" in text.output
    # a torch model on a LiteRT target is converted (fp32) and scores as the fp32 file; the
    # real CLI in its own process (it imports JAX), whose converters print nothing
    cli = "from edgeopt.cli import main; main()"
    r = subprocess.run(
        [sys.executable, "-c", cli, "bench", str(model_files["bundle"]), "--target", "litert",
         "--data", str(tiny_data), "--time-budget", "0.5", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    (row,) = json.loads(r.stdout)["results"]
    assert row["accuracy"]["value"] == fp32["accuracy"]["value"]
    assert all(line.startswith("warning: the test split") for line in r.stderr.splitlines())


def test_a_tflite_on_a_target_of_another_runtime_is_exit_2(
    lite: dict[str, Path], model_files: dict
) -> None:
    r = _run("bench", lite["fp32"], "--target", "cpu")
    assert r.exit_code == 2, r.output
    assert r.stderr.splitlines() == [
        f"Error: {lite['fp32']} runs on LiteRT, but --target host-cpu runs ONNX Runtime",
        "Hint: use --target litert-host or --target coral-edgetpu-usb, or pass the model's "
        ".onnx (converted for the target as needed)",
    ]
    r = _run("bench", model_files["onnx"], "--target", "litert-host")
    assert r.exit_code == 2, r.output
    assert "litert-torch reads torch, not ONNX), and this is an ONNX file" in r.stderr
    assert "pass the model's .pt (or .pt2) instead" in r.stderr


def test_check_on_the_edge_tpu_takes_only_full_integer_files(lite: dict[str, Path]) -> None:
    r = _run("check", lite["fp32"], "--target", "edgetpu", "--max-latency-ms", "1000")
    assert r.exit_code == 2, r.output
    assert (
        f"{lite['fp32']} is not a full-integer int8 model, which --target coral-edgetpu-usb "
        "loads only: it holds FLOAT32 tensors"
    ) in r.stderr
    # the full-integer file is estimated from its own graph
    r = _run("check", lite["static"], "--target", "edgetpu", "--max-latency-ms", "1000")
    assert r.exit_code == 0, r.output


def test_a_tflite_is_estimated_from_its_own_graph(lite: dict[str, Path], tmp_path: Path) -> None:
    # the fixture puts the float ONNX model beside every .tflite: the same network
    onnx_kernels = kernel_work(lite["static"].with_suffix(".onnx"), frozenset())
    for name, dtype in (("fp32", "fp32"), ("static", "int8"), ("tensorwise", "int8")):
        kernels = kernel_work(lite[name], frozenset())
        heavy = [k for k in kernels if k.op_class in ("dense_conv", "pointwise_conv", "gemm")]
        assert heavy and {k.dtype for k in heavy} == {dtype}, (name, heavy)
        # NHWC filters read in the ONNX layout: the same MACs as the ONNX graph
        assert sum(k.macs for k in kernels) == sum(k.macs for k in onnx_kernels), name
    # the wide model's weights live at buffer offsets: read from there, the same MACs
    buffers = _Reader(lite["wide"]).model.buffers
    assert any(b.offset > 1 for b in buffers)
    wide = kernel_work(lite["wide"], frozenset())
    assert {k.dtype for k in wide if k.op_class == "dense_conv"} == {"int8"}
    wide_onnx = kernel_work(lite["wide"].with_suffix(".onnx"), frozenset())
    assert sum(k.macs for k in wide) == sum(k.macs for k in wide_onnx)
    tpu = load_profile("edgetpu")
    on_file = estimate(lite["static"], tpu)
    assert any("read from the TFLite file" in a for a in on_file.assumptions)
    # int8 weights: a quarter of the float file's
    assert on_file.weight_mb == pytest.approx(estimate(lite["fp32"], tpu).weight_mb / 4, rel=0.1)
    # the Edge TPU runs the full-integer file's convolutions; a float graph falls back
    assert on_file.fallback_fraction < estimate(lite["fp32"], tpu).fallback_fraction
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(lite["facts"].read_bytes())
    with pytest.raises(ConfigError, match="not a TFLite flatbuffer"):
        estimate(bad, tpu)
