"""Benchmark of the compression stages on the residual and depthwise example models.

For each model: fp32, int8 static QDQ (u8 activations / s8 weights, the x86 profile's types),
ORT's default ``quantize_static`` (s8/s8, per-tensor: the by-hand baseline), and prune 50% +
fine-tune (CE, and KD from the unpruned model) followed by each quantization. Accuracy is on
the digits test split, in ONNX Runtime; latency is measured interleaved in one isolated process
against the model's own fp32 export (``edgeopt.measure.local_runner.measure_latency``), and the
speedup is the median over rounds of the per-round ratio.

Run:  python benchmarks/bench_stages.py [--models resnet_small,mobilenet_small] [--epochs 8]
Writes its table into benchmarks/RESULTS.md between the ``stages`` markers.
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

import torch
from results_md import write_section
from torch import nn

from edgeopt import zoo
from edgeopt.data import DataBundle, load_npz
from edgeopt.measure.local_runner import measure_latency
from edgeopt.measure.runtime import host_description
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import load_profile
from edgeopt.stages import (
    STAGES,
    FinetuneConfig,
    PruneConfig,
    QuantizeConfig,
    QuantMode,
    StageContext,
)
from edgeopt.stages.prune_ops import count_macs_params
from edgeopt.training import TrainConfig, evaluate, evaluate_onnx, fit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- stages:start -->", "<!-- stages:end -->"


@dataclass
class Row:
    model: str
    variant: str
    path: Path
    accuracy: float
    macs: int
    speedup: float = float("nan")
    p50_ms: float = float("nan")
    cv: float = float("nan")


def load_example(name: str, data: DataBundle) -> tuple[nn.Module, tuple[int, ...], str]:
    """The bundle built by models/build.py, or the zoo architecture trained here briefly."""
    path = ROOT / "models" / f"{name}.pt"
    if path.exists():
        from edgeopt.loading import load_model

        loaded = load_model(path)
        return loaded.module.eval(), tuple(loaded.input_shape), f"models/{name}.pt"
    torch.manual_seed(0)
    model = zoo.BUILDERS[name](width=32 if name == "resnet_small" else 16)
    fit(model, data, TrainConfig(epochs=15, lr=0.05), seed=0)
    return model.eval(), data.input_shape, f"edgeopt.zoo.{name} trained 15 epochs here"


def bench_model(
    name: str, data: DataBundle, work: Path, epochs: int, threads: int, budget_s: float
) -> tuple[list[Row], str]:
    model, shape, source = load_example(name, data)
    profile = load_profile("cpu")
    ctx = StageContext(
        workdir=work, profile=profile, data=data, teacher=model, input_shape=shape, seed=0
    )
    x_test, y_test = data.split("test")
    quant = STAGES["quantize"]
    base_q = quant.identity(profile)
    int8 = QuantizeConfig(
        mode=QuantMode.INT8_STATIC,
        calibration_samples=256,
        per_channel=True,
        activation_type=base_q.activation_type,
        weight_type=base_q.weight_type,
    )
    ort_default = QuantizeConfig(mode=QuantMode.ORT_DEFAULT, calibration_samples=256)

    macs0, _ = count_macs_params(model, shape)
    fp32 = export_onnx(model, shape, work / f"{name}.fp32.onnx", check_inputs=x_test[:8])
    rows = [Row(name, "fp32", fp32, evaluate_onnx(fp32, x_test, y_test), macs0)]
    for label, cfg in (("int8 static u8/s8", int8), ("ORT default quantize_static", ort_default)):
        p = quant.apply(fp32, cfg, ctx).artifact
        rows.append(Row(name, label, p, evaluate_onnx(p, x_test, y_test), macs0))

    pcfg = PruneConfig(ratio=0.5, round_to=profile.pruning.channel_multiple)
    pruned_out = STAGES["prune"].apply(model, pcfg, ctx)
    pruned = pruned_out.artifact
    macs1 = pruned_out.info["prune_report"]["macs_after"]
    no_ft = evaluate(pruned, x_test, y_test)
    notes = [
        f"{name}: {source}; prune 0.5 (L2, uniform, round_to {pcfg.round_to}) "
        f"without fine-tuning: {no_ft:.3f} test accuracy"
    ]
    for tag, distill in (("CE", False), ("KD", True)):
        fcfg = FinetuneConfig(
            epochs=epochs,
            lr=0.02,
            batch_size=64,
            schedule="cosine",
            patience=0,
            distill=distill,
            temperature=4.0,
            alpha=0.7,
        )
        t0 = time.perf_counter()
        tuned = STAGES["finetune"].apply(pruned, fcfg, ctx).artifact
        secs = time.perf_counter() - t0
        notes.append(f"{name}: fine-tune {tag} {epochs} epochs in {secs:.0f} s")
        p32 = export_onnx(
            tuned, shape, work / f"{name}.p50{tag}.fp32.onnx", check_inputs=x_test[:8]
        )
        if tag == "CE":
            rows.append(
                Row(
                    name, "prune 50% + FT(CE), fp32", p32, evaluate_onnx(p32, x_test, y_test), macs1
                )
            )
        for label, cfg in (("int8 u8/s8", int8), ("ORT default", ort_default)):
            p = quant.apply(p32, cfg, ctx).artifact
            rows.append(
                Row(
                    name,
                    f"prune 50% + FT({tag}) + {label}",
                    p,
                    evaluate_onnx(p, x_test, y_test),
                    macs1,
                )
            )

    stats = measure_latency(
        [r.path for r in rows],
        threads=threads,
        input_shape=shape,
        sample=x_test[:1],
        min_rounds=10,
        max_rounds=120,
        time_budget_s=budget_s,
    )
    for r, s in zip(rows, stats, strict=True):
        r.speedup, r.p50_ms, r.cv = 1.0 / s.ratio_to_first, s.p50_ms, s.cv
    notes.append(f"{name}: {stats[0].rounds} interleaved rounds")
    return rows, "\n".join(f"- {n}" for n in notes)


def render(rows: list[Row], notes: str, command: str, seconds: float, threads: int) -> str:
    lines = [
        "## Compression stages (bench_stages.py)",
        "",
        f"Date: {dt.date.today().isoformat()}  ",
        f"Command: `{command}` ({seconds:.0f} s)  ",
        f"Machine: {host_description()}, {threads} ORT threads, batch 1",
        "",
        "Speedup = median over interleaved rounds of (fp32 round median / variant round "
        "median), against the same model's fp32 export; accuracy = digits test split "
        "(360 samples, 1 sample = 0.28 pt) in ONNX Runtime.",
        "",
        "The example models are tiny (≤ 7 M MACs, ~0.1 ms per inference), so fixed per-node "
        "costs dominate: int8 and pruning ratios here understate what they give on larger "
        "inputs (research/compression.md §6.2: u8/s8 ≈ 3× on ResNet-18 at 224²).",
        "",
        "| model | variant | test acc | Δ acc vs fp32 (pt) | p50 ms | speedup vs fp32 "
        "| MACs | round CV |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = {r.model: r.accuracy for r in rows if r.variant == "fp32"}
    for r in rows:
        lines.append(
            f"| {r.model} | {r.variant} | {r.accuracy:.3f} | "
            f"{100 * (r.accuracy - base[r.model]):+.1f} | {r.p50_ms:.3f} | "
            f"{r.speedup:.2f}× | {r.macs / 1e6:.2f} M | {r.cv:.2f} |"
        )
    return "\n".join([*lines, "", notes, ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet_small,mobilenet_small")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=60.0, help="latency time budget per model")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = load_npz(ROOT / "models" / "digits.npz")
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        for name in args.models.split(","):
            r, n = bench_model(name, data, Path(tmp), args.epochs, args.threads, args.budget_s)
            rows += r
            notes.append(n)
    command = "python " + " ".join(
        shlex.quote(a) for a in ["benchmarks/bench_stages.py", *(argv or sys.argv[1:])]
    )
    text = render(rows, "\n".join(notes), command, time.perf_counter() - t0, args.threads)
    print(text)
    if not args.no_write:
        write_section(START, END, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
