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

import numpy as np

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

    from edgeopt.export import export_onnx
    from edgeopt.measure.calibrate import _quantize
    from edgeopt.zoo import BUILDERS

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
                q = _quantize(fp, tmp / f"{name}.int8.onnx", shape)
                out.append((f"{name}-int8", q, shape))
    return out


def write_section(text: str) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md, leaving the rest alone."""
    block = f"{START}\n{text.rstrip()}\n{END}\n"
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n\n"
    if START in old and END in old:
        head, rest = old.split(START, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + block + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    tmp = RESULTS.with_name(RESULTS.name + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(RESULTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds")
    parser.add_argument("--no-calibrate", action="store_true", help="use --profile as it is")
    parser.add_argument("--profile", default="cpu", help="host profile (alias or .toml path)")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)

    from scipy.stats import kendalltau

    from edgeopt.measure.calibrate import calibrate_host, time_interleaved
    from edgeopt.measure.estimate import estimate
    from edgeopt.measure.runtime import host_description
    from edgeopt.profiles import load_profile, validate_profile_file

    logging.getLogger().setLevel(logging.ERROR)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeopt-estimate-accuracy-") as td:
        tmp = Path(td)
        print("building model variants ...")
        variants = build_variants(tmp)
        rng = np.random.default_rng(0)
        feeds = [(p, rng.standard_normal(s).astype(np.float32)) for _, p, s in variants]
        if args.no_calibrate:
            profile = load_profile(args.profile)
            print(f"measuring {len(variants)} variants, {args.rounds} interleaved rounds ...")
            measured = time_interleaved(feeds, threads=profile.threads, rounds=args.rounds)
        else:
            # Calibration and evaluation share one interleaved timing run (the VM drifts).
            print("calibrating the host profile and measuring the variants in one run ...")
            cal_path = tmp / "host-calibrated.toml"
            result = calibrate_host(cal_path, rounds=args.rounds, log=print, extra=feeds)
            for line in result.summary():
                print("  " + line)
            profile = validate_profile_file(cal_path)
            measured = result.extra_ms
        est = [estimate(p, profile).latency_ms for _, p, _ in variants]
    runtime_s = time.perf_counter() - t_start

    rel = [abs(e - m) / m for e, m in zip(est, measured, strict=True)]
    tau = float(kendalltau(est, measured).statistic)
    med = statistics.median(rel)
    within10 = sum(r <= 0.10 for r in rel) / len(rel)
    groups = {}
    for tag, pick in (
        ("fp32", lambda n: not n.endswith("-int8")),
        ("int8", lambda n: n.endswith("-int8")),
    ):
        idx = [i for i, (n, _, _) in enumerate(variants) if pick(n)]
        groups[tag] = (
            float(kendalltau([est[i] for i in idx], [measured[i] for i in idx]).statistic),
            statistics.median(rel[i] for i in idx),
        )

    rows = [
        f"| {n} | {m:.4f} | {e:.4f} | {e / m:.2f} |"
        for (n, _, _), e, m in zip(variants, est, measured, strict=True)
    ]
    command = "python benchmarks/estimate_accuracy.py " + " ".join(argv or sys.argv[1:])
    text = "\n".join(
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
            f"| Kendall tau | **{tau:.3f}** | {groups['fp32'][0]:.3f} | {groups['int8'][0]:.3f} |",
            f"| median relative error | **{med:.1%}** | {groups['fp32'][1]:.1%} |"
            f" {groups['int8'][1]:.1%} |",
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
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"updated {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
