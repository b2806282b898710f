"""OpenVINO's int8 (issue 25, "What to build" 3): NNCF's post-training quantization vs
edgeopt's own int8 ONNX (ORT's static QDQ) converted to IR, on the same float models.

For each float model (the original model's export, and float candidates a search exported,
e.g. ``benchmarks/runtimes.py``'s ``edgeopt/t13.onnx``):

1. ``fp32``: ``openvino.convert_model`` of the float ONNX (fp32 weights);
2. ``edgeopt int8 -> IR``: the float ONNX through edgeopt's quantize stage with the
   ``openvino-host`` profile's by-hand settings (static QDQ, u8 activations / s8 per-channel
   weights, MinMax), then converted;
3. ``NNCF int8``: ``nncf.quantize`` (default preset, fast bias correction) of the converted
   float model.

Both quantizers calibrate on the same samples (the quantize stage's seeded draw of the training
split, ``--calib`` of them). Every file is scored on the test split through OpenVINO (in a
spawned child: OpenVINO must not load into a process that forks afterwards) and timed in one
interleaved pass (edgeopt's timing child, 1 thread, batch 1, f32 precision hint); latency is
the median ratio to the same model's fp32 IR. One invocation per model set, each writing its
own RESULTS.md section:

    python benchmarks/openvino_int8.py --model models/real/w0.5-edefault/mobilenetv2_cifar.pt \\
        --data models/real/w0.5-edefault/digits32.npz --tag mobilenetv2_cifar-w0.5 \\
        --float benchmarks/work/runtimes/openvino-mobilenetv2_cifar-w0.5/edgeopt/t37.onnx

``--data`` is an ``.npz`` or an image folder (``DIR/train|val|test/<class>/``). Needs
``edgeopt[openvino]`` and ``pip install nncf`` (not an edgeopt dependency).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import write_section  # noqa: E402
from runtimes import accuracies, in_child  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "openvino_int8"
TEST_SAMPLES = 1000
VARIANTS = ("fp32", "edgeopt int8 -> IR", "NNCF int8")


@dataclass
class Row:
    """One file of one model, measured here."""

    model: str
    variant: str
    path: Path
    accuracy: float = float("nan")
    ratio: float = float("nan")
    size_mb: float = float("nan")


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def open_data(path: Path, input_shape: tuple[int, ...]) -> Any:
    """The data source of ``path``: an ``.npz`` or an image folder (default preprocessing)."""
    if path.suffix == ".npz":
        from edgeopt.data import NpzSource

        return NpzSource.open(path)
    from edgeopt.data.folder import FolderSource
    from edgeopt.data.preprocess import Preprocess

    return FolderSource(path, Preprocess.default_for(input_shape))


def edgeopt_int8(fp32: Path, out: Path, ctx: Any, calib: int) -> Path:
    """``fp32`` through edgeopt's quantize stage with ``ctx``'s profile's by-hand settings
    (``calib`` samples), its file written in ``out``."""
    import dataclasses

    from edgeopt.stages import STAGES

    stage = STAGES["quantize"]
    plain = stage.by_hand(ctx.profile, None).config
    config = dataclasses.replace(plain, calibration_samples=calib)
    out.mkdir(parents=True, exist_ok=True)
    return Path(stage.apply(fp32, config, dataclasses.replace(ctx, workdir=out)).artifact)


def to_ir(onnxes: list[str], x_calib: np.ndarray, out: str) -> list[list[str]]:
    """Per float ONNX (and its edgeopt int8 twin beside it): [fp32 IR, edgeopt int8 IR,
    NNCF int8 IR] (in a spawned child)."""
    import nncf
    import openvino as ov

    made = []
    for src in onnxes:
        stem = Path(out) / Path(src).stem
        files = []
        for name, onnx_path in (("fp32", src), ("ort_int8", f"{stem}.int8.onnx")):
            dest = f"{stem}.{name}.xml"
            ov.save_model(ov.convert_model(onnx_path), dest, compress_to_fp16=False)
            files.append(dest)
        calib = nncf.Dataset([x[None] for x in x_calib])
        int8 = nncf.quantize(ov.convert_model(src), calib, subset_size=len(x_calib))
        dest = f"{stem}.nncf.xml"
        ov.save_model(int8, dest, compress_to_fp16=False)
        files.append(dest)
        made.append(files)
    return made


def main(argv: list[str] | None = None) -> int:
    from edgeopt.loading import load_model
    from edgeopt.measure.local_runner import measure_latency
    from edgeopt.measure.runtime import host_description, size_mb
    from edgeopt.onnx_export import export_onnx
    from edgeopt.profiles import load_profile
    from edgeopt.stages import StageContext
    from edgeopt.stages.quantize_config import calibration_inputs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="the original model bundle")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--float", dest="floats", type=Path, nargs="*", default=[])
    ap.add_argument("--tag", required=True, help="the RESULTS.md section's key")
    ap.add_argument("--calib", type=int, default=128, help="calibration samples, both tools")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    command = "python benchmarks/openvino_int8.py " + " ".join(
        shlex.quote(v) for v in (argv if argv is not None else sys.argv[1:])
    )
    t0 = time.monotonic()
    import torch

    torch.set_num_threads(1)
    loaded = load_model(a.model)
    shape = tuple(int(d) for d in loaded.input_shape)
    source = open_data(a.data, shape)
    work = WORK / a.tag
    work.mkdir(parents=True, exist_ok=True)
    original = export_onnx(loaded.module, shape, work / "original.onnx")
    floats = [original] + [Path(f).resolve() for f in a.floats]
    names = ["original"] + [f.stem for f in a.floats]
    with tempfile.TemporaryDirectory(prefix="edgeopt-ovint8-") as tmp:
        ctx = StageContext(
            workdir=Path(tmp),
            profile=load_profile("openvino-host"),
            data=source,
            teacher=None,
            input_shape=shape,
        )
        for f in floats:
            log(f"edgeopt int8 of {f.name}")
            made = edgeopt_int8(f, Path(tmp) / f.stem, ctx, a.calib)
            made.replace(work / f"{f.stem}.int8.onnx")
            if f.parent != work:
                (work / f.name).write_bytes(f.read_bytes())
        x_calib = calibration_inputs(ctx, a.calib)  # the samples the quantize stage drew
    log("OpenVINO IR: converted, and NNCF's int8 (in a child)")
    irs = in_child(to_ir, [str(work / f.name) for f in floats], x_calib, str(work))
    x_test, y_test = source.subset("test", TEST_SAMPLES, 0)
    sample = source.subset("val", 1, 0)[0]
    rows: list[Row] = []
    for name, files in zip(names, irs, strict=True):
        rows += [Row(name, v, Path(p)) for v, p in zip(VARIANTS, files, strict=True)]
    log(f"scoring {len(rows)} files on {len(x_test)} test samples")
    accs = in_child(accuracies, [str(r.path) for r in rows], x_test, y_test)
    for r, acc in zip(rows, accs, strict=True):
        r.accuracy, r.size_mb = acc, size_mb(r.path)
    log("timing (one interleaved pass)")
    stats = measure_latency(
        [r.path for r in rows],
        threads=1,
        input_shape=shape,
        sample=sample,
        min_rounds=10,
        time_budget_s=90.0,
    )
    p50 = {r.path: s.p50_ms for r, s in zip(rows, stats, strict=True)}
    load = (stats[0].load or {}).get("loadavg_1m")
    for i in range(0, len(rows), 3):
        base = stats[i].ratio_to_first
        for j in range(3):
            rows[i + j].ratio = stats[i + j].ratio_to_first / base
    body = render(a, rows, p50, command, time.monotonic() - t0, host_description("openvino"), load)
    if not a.no_write:
        start = f"<!-- openvino_int8:{a.tag}:start -->"
        write_section(start, start.replace(":start", ":end"), body)
    print(body)
    return 0


def render(
    a: argparse.Namespace,
    rows: list[Row],
    p50: dict[Path, float],
    command: str,
    seconds: float,
    host: str,
    load: float | None,
) -> str:
    """The RESULTS.md section (without markers)."""
    lines = [
        f"## OpenVINO int8: NNCF vs edgeopt's int8 ONNX converted (benchmarks/openvino_int8.py),"
        f" {a.tag}",
        "",
        f"- date: {dt.date.today().isoformat()}; command: `{command}`; runtime "
        f"{seconds / 60:.1f} min"
        + (f"; load average (1 min) while timing {load:.2f}" if load else ""),
        f"- machine: {host}",
        f"- both quantizers calibrated on the same {a.calib} training samples; every number "
        "measured on this host through OpenVINO (CPU plugin, f32 hint, 1 thread, batch 1): test "
        "accuracy; latency = median ratio to the same model's fp32 IR in one interleaved pass; "
        "size = .xml + .bin.",
        "",
        "| model | file | test acc | vs its fp32 | p50 ms | latency vs its fp32 | size MB |",
        "|---|---|---|---|---|---|---|",
    ]
    base = {r.model: r for r in rows if r.variant == "fp32"}
    for r in rows:
        drop = (r.accuracy - base[r.model].accuracy) * 100
        lines.append(
            f"| {r.model} | {r.variant} | {r.accuracy:.4f} | {drop:+.1f} pt | {p50[r.path]:.3f} | "
            f"{r.ratio:.3f} | {r.size_mb:.3f} |"
        )
    by = {(r.model, r.variant): r for r in rows}
    lines.append("")
    for model in base:
        ours, nncf = by[(model, VARIANTS[1])], by[(model, VARIANTS[2])]
        lines.append(
            f"- {model}: edgeopt int8 -> IR runs at {ours.ratio / nncf.ratio:.2f}x NNCF's "
            f"latency ({ours.accuracy - nncf.accuracy:+.4f} test accuracy)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
