"""How well does the cost model rank and predict real host latency?

Calibrates the host profile on this machine (micro-benchmarks + 12 example models at width 12,
written to a temporary file; the shipped profile is untouched) and builds model variants from
``edgeopt.zoo`` (three families, several widths, 16x16 and 32x32 inputs, fp32 and int8 QDQ
u8s8 per-channel), measures them with ONNX Runtime interleaved over rounds (medians of per-round
medians: this VM's speed drifts), estimates them with the calibrated profile, and reports the
Kendall rank correlation and the median relative error. Results go to a delimited section of
``benchmarks/RESULTS.md``.

    python benchmarks/estimate_accuracy.py [--rounds 9] [--no-calibrate] [--profile cpu]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from results_md import write_section

if TYPE_CHECKING:
    from edgeopt.profiles import HardwareProfile

START = "<!-- estimate-accuracy:start -->"
END = "<!-- estimate-accuracy:end -->"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

FAMILIES = {
    "plain_cnn": (8, 16, 32),
    "resnet_small": (8, 16),
    "mobilenet_small": (8, 16, 24),
}
SIZES = (16, 32)


def build_variants(tmp: Path) -> list[tuple[str, Path, list[int]]]:
    """(name, onnx path, input shape) for every fp32 and int8 variant."""
    import torch

    from edgeopt.measure.calibrate import quantize_qdq
    from edgeopt.onnx_export import export_onnx
    from edgeopt.zoo import SMALL_BUILDERS as BUILDERS

    torch.manual_seed(0)
    out = []
    for fam, widths in FAMILIES.items():
        for w in widths:
            model = BUILDERS[fam](in_channels=1, width=w)
            for hw in SIZES:
                name = f"{fam}-w{w}-{hw}x{hw}"
                shape = [1, 1, hw, hw]
                fp = export_onnx(model, (1, hw, hw), tmp / f"{name}.onnx")
                out.append((name, fp, shape))
                q = quantize_qdq(fp, tmp / f"{name}.int8.onnx", shape)
                out.append((f"{name}-int8", q, shape))
    return out


def measure_and_estimate(
    args: argparse.Namespace,
) -> tuple[list[tuple[str, Path, list[int]]], list[float], list[float], HardwareProfile]:
    """Build the variants, time them on this host (calibrating the host profile in the same
    interleaved run unless ``--no-calibrate``) and estimate them: (variants, measured ms,
    estimated ms, profile used)."""
    from edgeopt.estimate import estimate
    from edgeopt.measure.calibrate import calibrate_host, example_models, time_models
    from edgeopt.profiles import load_profile, validate_profile_file
    from edgeopt.zoo import SMALL_BUILDERS as BUILDERS

    with tempfile.TemporaryDirectory(prefix="edgeopt-estimate-accuracy-") as td:
        tmp = Path(td)
        print("building model variants ...")
        variants = build_variants(tmp)
        rng = np.random.default_rng(0)
        feeds = [(p, rng.standard_normal(s).astype(np.float32)) for _, p, s in variants]
        if args.no_calibrate:
            profile = load_profile(args.profile)
            print(f"measuring {len(variants)} variants, {args.rounds} interleaved rounds ...")
            measured = time_models(feeds, threads=profile.threads, rounds=args.rounds)
        else:
            # Calibration and evaluation share one interleaved timing run (the VM drifts).
            print("calibrating the host profile and measuring the variants in one run ...")
            cal_path = tmp / "host-calibrated.toml"
            result = calibrate_host(
                cal_path,
                rounds=args.rounds,
                examples=example_models(BUILDERS),
                log=print,
                extra=feeds,
            )
            for line in result.summary():
                print("  " + line)
            profile = validate_profile_file(cal_path)
            measured = result.extra_ms
        est = [estimate(p, profile).latency_ms for _, p, _ in variants]
    return variants, measured, est, profile


def _agreement(est: list[float], measured: list[float], idx: list[int]) -> tuple[float, float]:
    """(Kendall tau, median relative error) over the variants ``idx``."""
    from scipy.stats import kendalltau

    e, m = [est[i] for i in idx], [measured[i] for i in idx]
    tau = float(kendalltau(e, m).statistic)
    return tau, statistics.median(abs(a - b) / b for a, b in zip(e, m, strict=True))


def render(
    args: argparse.Namespace,
    variants: list[tuple[str, Path, list[int]]],
    measured: list[float],
    est: list[float],
    profile: HardwareProfile,
    runtime_s: float,
    command: str,
) -> str:
    """This benchmark's section of RESULTS.md."""
    from edgeopt.measure.runtime import host_description

    names = [n for n, _, _ in variants]
    tau, med = _agreement(est, measured, list(range(len(names))))
    within10 = sum(abs(e - m) / m <= 0.10 for e, m in zip(est, measured, strict=True)) / len(est)
    fp32 = _agreement(est, measured, [i for i, n in enumerate(names) if not n.endswith("-int8")])
    int8 = _agreement(est, measured, [i for i, n in enumerate(names) if n.endswith("-int8")])
    rows = [
        f"| {n} | {m:.4f} | {e:.4f} | {e / m:.2f} |"
        for n, e, m in zip(names, est, measured, strict=True)
    ]
    return "\n".join(
        [
            "## Cost model vs measured host latency (estimate accuracy)",
            "",
            f"- date: {dt.date.today().isoformat()}",
            f"- command: `{command.strip()}` (runtime {runtime_s:.0f} s)",
            f"- machine: {host_description()}",
            f"- profile: {profile.name} "
            + ("calibrated in this run" if not args.no_calibrate else "as shipped"),
            f"- variants: {len(variants)} ({len(variants) // 2} fp32 + {len(variants) // 2} int8"
            " QDQ u8s8 per-channel), zoo families plain_cnn / resnet_small / mobilenet_small,"
            " widths 8-32, inputs 16x16 and 32x32, 1 thread",
            f"- measured: ORT CPU, {args.rounds} interleaved rounds, median of round medians",
            "",
            "| metric | all | fp32 only | int8 only |",
            "|---|---|---|---|",
            f"| Kendall tau | **{tau:.3f}** | {fp32[0]:.3f} | {int8[0]:.3f} |",
            f"| median relative error | **{med:.1%}** | {fp32[1]:.1%} | {int8[1]:.1%} |",
            f"| within +/-10% | {within10:.0%} | | |",
            "",
            "<details><summary>per model (ms)</summary>",
            "",
            "| model | measured (this host) | estimated (profile) | est/meas |",
            "|---|---|---|---|",
            *rows,
            "",
            "</details>",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the section and (unless ``--no-write``) update RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds")
    parser.add_argument("--no-calibrate", action="store_true", help="use --profile as it is")
    parser.add_argument("--profile", default="cpu", help="host profile (alias or .toml path)")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)

    logging.getLogger().setLevel(logging.ERROR)
    t_start = time.perf_counter()
    variants, measured, est, profile = measure_and_estimate(args)
    runtime_s = time.perf_counter() - t_start
    command = "python benchmarks/estimate_accuracy.py " + " ".join(argv or sys.argv[1:])
    text = render(args, variants, measured, est, profile, runtime_s, command)
    print(text)
    if not args.no_write:
        write_section(START, END, text)
        print(f"updated {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
