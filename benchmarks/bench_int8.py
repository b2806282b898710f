"""int8 without the accuracy loss (issue 13): plain int8 vs sensitivity-guided mixed precision
vs quantization-aware fine-tuning, on the example models and the digits data.

For each model: the fp32 export, plain static int8 (u8/s8 per-channel, MinMax, 128 samples),
the same with the k most sensitive nodes kept fp32, and QAT (``--qat-epochs`` epochs,
distilled from the original) then plain int8. Accuracy is ORT's on val and test (measured on
this host); speedup is fp32 latency / candidate latency from one interleaved run (measured on
this host, 1 thread, batch 1); size is the ONNX file. Writes its section of RESULTS.md.

    python benchmarks/bench_int8.py [--models plain_cnn,resnet_small] [--k 2,4] [--qat-epochs 2]
    python benchmarks/bench_int8.py --models models/real/mobilenetv2_cifar.pt \
        --data models/real/digits32.npz             # a real-size model (models/build_real.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench_int8:start -->", "<!-- bench_int8:end -->"


def main() -> None:
    """Run the comparison and print/write the table."""
    from edgeopt.data import load_npz
    from edgeopt.loading import load_model
    from edgeopt.measure.local_runner import measure_latency
    from edgeopt.measure.runtime import size_mb
    from edgeopt.onnx_export import export_onnx
    from edgeopt.profiles import load_profile
    from edgeopt.stages import STAGES, QatConfig, StageContext
    from edgeopt.training import evaluate_onnx

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="plain_cnn,resnet_small,mobilenet_small")
    ap.add_argument("--k", default="2,4")
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--qat-lr", type=float, default=1e-3)
    ap.add_argument("--data", default=str(ROOT / "models" / "digits.npz"))
    ap.add_argument(
        "--section",
        default="",
        help="a RESULTS.md section of its own, e.g. real (default: the main one)",
    )
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_npz(args.data)
    assert data.x_test is not None and data.y_test is not None
    profile = load_profile("cpu")
    quantize, qat = STAGES["quantize"], STAGES["qat"]
    plain = quantize.by_hand(profile, None).config  # type: ignore[arg-type, union-attr]
    rows: list[str] = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for spec in args.models.split(","):
            path = Path(spec) if spec.endswith(".pt") else ROOT / "models" / f"{spec}.pt"
            name = path.stem
            loaded = load_model(path)
            module = loaded.module
            shape = tuple(loaded.input_shape)
            ctx = StageContext(
                workdir=tmp / name,
                profile=profile,
                data=data,
                teacher=module,
                input_shape=shape,
                cache_dir=tmp / "cache",
            )
            fp32 = export_onnx(module, shape, tmp / f"{name}.onnx", check_inputs=data.x_val[:8])
            variants: list[tuple[str, Path, str]] = [("fp32", fp32, "")]
            variants.append(("plain int8", quantize.apply(fp32, plain, ctx).artifact, ""))
            for k in (int(v) for v in args.k.split(",") if v):
                cfg = dataclasses.replace(plain, fp32_nodes=k)
                variants.append(
                    (f"mixed, {k} nodes fp32", quantize.apply(fp32, cfg, ctx).artifact, "")
                )
            t0 = time.perf_counter()
            qat_out = qat.apply(module, QatConfig(epochs=args.qat_epochs, lr=args.qat_lr), ctx)
            qmod = qat_out.artifact
            qat_s = time.perf_counter() - t0
            qfp = export_onnx(
                qmod,
                shape,
                tmp / f"{name}.qat.onnx",
                check_inputs=data.x_val[:8],
                rel_error=qat_out.export_rel_error,
            )
            variants.append(
                (
                    f"QAT {args.qat_epochs}ep + int8",
                    quantize.apply(qfp, plain, ctx).artifact,
                    f"QAT {qat_s:.0f} s",
                )
            )
            stats = measure_latency([p for _, p, _ in variants], threads=1, input_shape=shape)
            for (label, path, note), st in zip(variants, stats, strict=True):
                val = evaluate_onnx(path, data.x_val, data.y_val, threads=1)
                test = evaluate_onnx(path, data.x_test, data.y_test, threads=1)
                rows.append(
                    f"| {name} | {label} | {100 * val:.1f} | {100 * test:.1f} | "
                    f"{1 / st.ratio_to_first:.2f}x | {st.p50_ms:.3f} | {size_mb(path):.3f} | "
                    f"{note} |"
                )
                print(rows[-1], flush=True)
    minutes = (time.perf_counter() - t_all) / 60
    table = "\n".join(
        [
            "## int8 without the accuracy loss (bench_int8.py"
            + (f", {args.section} models" if args.section else "")
            + ")",
            "",
            f"Command: `python benchmarks/bench_int8.py {' '.join(sys.argv[1:])}`",
            "",
            "All numbers measured on this host: accuracy by ONNX Runtime on the digits val/test "
            "splits; speedup = fp32 latency / candidate latency, interleaved in one run (1 "
            "thread, batch 1); p50 in ms; size of the ONNX file in MB. "
            f"QAT: {args.qat_epochs} epochs, lr {args.qat_lr:g}, distilled from the original. "
            f"Run time {minutes:.1f} min.",
            "",
            "| model | variant | val % | test % | speedup vs fp32 | p50 ms | size MB | note |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if not args.no_write:
        if args.section:
            tag = f"bench_int8_{args.section}"
            write_section(f"<!-- {tag}:start -->", f"<!-- {tag}:end -->", table)
        else:
            write_section(START, END, table)


if __name__ == "__main__":
    main()
