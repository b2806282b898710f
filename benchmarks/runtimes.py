"""Each target on its own runtime (issue 25, "Done means"): edgeopt's best candidate within
1 pt on OpenVINO and on LiteRT vs the by-hand recipe of that ecosystem, on the CIFAR-size
ResNet-18 and MobileNetV2 trained on the digits at 3x32x32 (``models/build_real.py``).

One part per invocation, each writing its own RESULTS.md section (per part, model and width):

    python benchmarks/runtimes.py openvino --model resnet18_cifar --width 0.5
    python benchmarks/runtimes.py litert --model mobilenetv2_cifar --width 0.5
    python benchmarks/runtimes.py openvino --quick          # the bundled resnet_small, 3 min

For a part:

1. ``edgeopt optimize MODEL --data DATA --target openvino-host`` (or ``litert-host``) with a
   time budget: every candidate converted and measured on that runtime by edgeopt itself;
   each complete front member is exported with ``edgeopt export --format auto`` (the file the
   runtime loads);
2. the by-hand recipes, public tools only, built in a spawned child process (the runtimes
   stay out of this one): OpenVINO: ``openvino.convert_model`` of the torch model's ONNX
   (fp32 weights), then NNCF's default post-training quantization (``nncf.quantize``, 300
   calibration samples); LiteRT: litert-torch's fp32 file, then ai-edge-quantizer's
   dynamic-range (``dynamic_wi8_afp32``) and full-integer (``static_wi8_ai8``, 300
   calibration samples) recipes;
3. test accuracy of every file through its runtime (in a spawned child), then one
   interleaved latency pass (edgeopt's timing child, 1 thread, batch 1): ratio to the fp32
   file of the same runtime, median over rounds.

Goal: edgeopt's best within 1 pt >= 2x faster than each by-hand int8 recipe, at no larger size.

Needs ``edgeopt[openvino,litert]`` and, for the OpenVINO part's by-hand recipe, NNCF
(``pip install nncf``: four small packages beside openvino; not an edgeopt dependency).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import multiprocessing
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_models as rm  # noqa: E402
from results_md import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "runtimes"
TARGETS = {"openvino": "openvino-host", "litert": "litert-host"}
SUFFIX = {"openvino": ".xml", "litert": ".tflite"}
CALIB = 300
MAX_DROP = 0.01
GOAL_SPEEDUP = 2.0
HAND_FP32 = "fp32 (by hand)"
HAND = {
    "openvino": ["int8 NNCF default PTQ"],
    "litert": [
        "int8 dynamic range (AEQ dynamic_wi8_afp32)",
        "int8 full integer (AEQ static_wi8_ai8)",
    ],
}


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


# ----------------------------------------------------------------------------------- children
def in_child(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a spawned process (OpenVINO and LiteRT crash a process that forks or
    loads the other after them), with its result."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def build_by_hand(part: str, model: str, x_calib: np.ndarray, out: str) -> list[tuple[str, str]]:
    """(label, path) of the by-hand files of ``part``, the fp32 file first (in a child)."""
    import torch

    from edgeopt.export.convert import ConvertOptions
    from edgeopt.export.litert import to_litert
    from edgeopt.loading import load_model
    from edgeopt.onnx_export import export_onnx

    torch.set_num_threads(2)
    loaded = load_model(model)
    shape = tuple(loaded.input_shape)
    dst = Path(out)
    dst.mkdir(parents=True, exist_ok=True)
    if part == "litert":
        made = [(HAND_FP32, "fp32")] + list(
            zip(HAND[part], ("int8_dynamic", "int8_static"), strict=True)
        )
        files = []
        for label, mode in made:
            path = dst / f"{mode}.tflite"
            opts = ConvertOptions(quant_mode=mode)
            to_litert(loaded.module, shape, path, opts, x_calib if mode == "int8_static" else None)
            files.append((label, str(path)))
        return files
    import nncf
    import openvino as ov

    onnx_path = export_onnx(loaded.module, shape, dst / "fp32.onnx")
    ov_model = ov.convert_model(str(onnx_path))
    ov.save_model(ov_model, str(dst / "fp32.xml"), compress_to_fp16=False)
    calib = nncf.Dataset([x[None] for x in x_calib])
    int8 = nncf.quantize(ov.convert_model(str(onnx_path)), calib, subset_size=len(x_calib))
    ov.save_model(int8, str(dst / "int8_nncf.xml"), compress_to_fp16=False)
    return [(HAND_FP32, str(dst / "fp32.xml")), (HAND[part][0], str(dst / "int8_nncf.xml"))]


def accuracies(paths: list[str], x: np.ndarray, y: np.ndarray) -> list[float]:
    """Top-1 accuracy of each file through its own runtime, 1 thread (in a child)."""
    from edgeopt.measure.accuracy import onnx_accuracy

    return [onnx_accuracy(p, x, y, threads=1) for p in paths]


# ----------------------------------------------------------------------------------- edgeopt
def export_front(search: rm.SearchOutcome, part: str, out: Path) -> list[tuple[str, Path]]:
    """Every complete front member exported in the target's format (``--format auto``)."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for label, _onnx in search.front:
        number = int(re.match(r"#(\d+)", label).group(1))  # type: ignore[union-attr]
        dst = out / f"t{number}{SUFFIX[part]}"
        cmd = rm.edgeopt_exe() + ["export", str(search.run_dir), "--trial", str(number)]
        cmd += ["--format", "auto", "--out", str(dst)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode == 0 and dst.is_file():
            files.append((label, dst))
        else:
            log(f"  export of {label} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return files


# ----------------------------------------------------------------------------------- measure
@dataclass
class Point:
    """One file, measured here."""

    label: str
    kind: str  # "by hand" or "edgeopt"
    path: Path
    accuracy: float = float("nan")
    size_mb: float = float("nan")
    ratio: float = float("nan")


@dataclass
class PartResult:
    """One part's outcome."""

    search: rm.SearchOutcome
    points: list[Point] = field(default_factory=list)
    fp32_ms: float = float("nan")
    load: float | None = None


def measure(
    points: list[Point], x: np.ndarray, y: np.ndarray, sample: np.ndarray
) -> tuple[float, float | None]:
    """Accuracy and size of every point, then one interleaved pass: ratio to the first
    (the by-hand fp32 file). Returns the first's median milliseconds and the 1-minute load
    average while timing."""
    from edgeopt.measure.local_runner import measure_latency
    from edgeopt.measure.runtime import size_mb

    accs = in_child(accuracies, [str(p.path) for p in points], x, y)
    for p, a in zip(points, accs, strict=True):
        p.accuracy, p.size_mb = a, size_mb(p.path)
    stats = measure_latency(
        [p.path for p in points],
        threads=1,
        input_shape=tuple(x.shape[1:]),
        sample=sample,
        min_rounds=10,
        time_budget_s=60.0,
    )
    for p, s in zip(points, stats, strict=True):
        p.ratio = s.ratio_to_first
    return stats[0].p50_ms, (stats[0].load or {}).get("loadavg_1m")


# ----------------------------------------------------------------------------------- report
def render(part: str, name: str, a: argparse.Namespace, r: PartResult, cmd: str, s: float) -> str:
    """The RESULTS.md section (without markers)."""
    from edgeopt.measure.runtime import host_description

    target = TARGETS[part]
    base = r.points[0] if r.points else None
    lines = [
        f"## {part}: edgeopt vs the by-hand recipe (benchmarks/runtimes.py), {name}"
        + (": quick check, not the proof" if a.quick else f" at width {a.width:g}"),
        "",
        f"- date: {dt.date.today().isoformat()}; command: `{cmd}`; runtime {s / 60:.1f} min"
        + (f"; load average (1 min) during timing {r.load:.2f}" if r.load is not None else ""),
        f"- machine: {host_description(part)}",
        f"- search: `edgeopt optimize --target {target} --timeout {a.budget}`: "
        f"{r.search.complete} complete, {r.search.stopped} stopped, {r.search.failed} failed, "
        f"{r.search.wall_s / 60:.1f} min" + (f"; {r.search.error}" if r.search.error else ""),
        f"- every number measured on this host through {part}: test accuracy; latency = median "
        "over rounds of (file / by-hand fp32 file) from one interleaved pass, 1 thread, batch 1"
        f" (by-hand fp32: {r.fp32_ms:.3f} ms); size = the runtime's file(s).",
        "",
        "| model | from | test acc | vs fp32 | latency vs fp32 | speed-up | size MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in r.points:
        drop = (p.accuracy - base.accuracy) * 100 if base else float("nan")
        lines.append(
            f"| {p.label} | {p.kind} | {p.accuracy:.4f} | {drop:+.1f} pt | {p.ratio:.3f} | "
            f"{1 / p.ratio:.2f}x | {p.size_mb:.3f} |"
        )
    lines += ["", goals(part, r)]
    return "\n".join(lines)


def goals(part: str, r: PartResult) -> str:
    """The goal line: edgeopt's fastest within 1 pt vs each by-hand int8 recipe."""
    if not r.points:
        return "Goal: **not measured** (no by-hand files)."
    bar = r.points[0].accuracy - MAX_DROP - 1e-9
    mine = [p for p in r.points if p.kind == "edgeopt" and p.accuracy >= bar]
    if not mine:
        return "Goal: **not met**: edgeopt has no candidate within 1 pt on this runtime."
    best = min(mine, key=lambda p: p.ratio)
    checks = []
    for p in r.points:
        if p.kind == "by hand" and p.label != HAND_FP32:
            speed = p.ratio / best.ratio
            ok = speed >= GOAL_SPEEDUP and best.size_mb <= p.size_mb
            checks.append(
                (f"{speed:.2f}x vs {p.label} (size {best.size_mb:.3f} vs {p.size_mb:.3f} MB)", ok)
            )
    met = all(ok for _, ok in checks)
    text = "; ".join(c for c, _ in checks)
    return (
        f"edgeopt's best within 1 pt ({best.label}): {text}. Goal (>= {GOAL_SPEEDUP:g}x, no "
        f"larger): **{'met' if met else 'not met'}**"
    )


# ----------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=list(TARGETS))
    ap.add_argument(
        "--model", default="resnet18_cifar", choices=["resnet18_cifar", "mobilenetv2_cifar"]
    )
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=None, help="build_real's training epochs")
    ap.add_argument("--budget", default="10m", help="the search's --timeout")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="bundled resnet_small, 3 min search")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from edgeopt.data import load_npz

    a = parse_args(argv)
    if a.part == "openvino" and importlib.util.find_spec("nncf") is None:
        sys.exit("the OpenVINO part's by-hand recipe is NNCF's: pip install nncf")
    command = "python benchmarks/runtimes.py " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:])
    )
    t0 = time.monotonic()
    if a.quick:
        name, model, data_path, a.budget = (
            "resnet_small",
            ROOT / "models/resnet_small.pt",
            ROOT / "models/digits.npz",
            "3m",
        )
    else:
        name = a.model
        model, data_path = rm.ensure_model(name, a.width, a.epochs)
    tag = f"{a.part}-{name}" + ("-quick" if a.quick else f"-w{a.width:g}")
    work = WORK / tag
    work.mkdir(parents=True, exist_ok=True)
    data = load_npz(data_path)
    assert data.x_test is not None and data.y_test is not None
    budget_s = float(a.budget[:-1]) * (60 if a.budget.endswith("m") else 1)
    log(f"{tag}: edgeopt optimize --target {TARGETS[a.part]}, {a.budget}")
    search = rm.run_search(model, data_path, work / "run", budget_s, a.seed, TARGETS[a.part])
    log(
        f"  {search.complete} complete, {search.failed} failed"
        + (f"; {search.error}" if search.error else "")
    )
    log(f"{tag}: by-hand recipes")
    hand = in_child(build_by_hand, a.part, str(model), data.x_train[:CALIB], str(work / "byhand"))
    points = [Point(label, "by hand", Path(p)) for label, p in hand]
    points += [
        Point(label, "edgeopt", p) for label, p in export_front(search, a.part, work / "edgeopt")
    ]
    result = PartResult(search, points)
    log(f"{tag}: measuring {len(points)} files (one interleaved pass)")
    result.fp32_ms, result.load = measure(points, data.x_test, data.y_test, data.x_val[:1])
    body = render(a.part, name, a, result, command, time.monotonic() - t0)
    start = f"<!-- runtimes:{tag}:start -->"
    write_section(start, start.replace(":start", ":end"), body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
