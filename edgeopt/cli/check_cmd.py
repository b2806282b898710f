"""``edgeopt check``: pass/fail release gates for one model on one target."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from edgeopt.cli.options import load_model_from_options, model_options


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", help="Profile name, alias or TOML (default: from the config, else cpu).")
@click.option("--data", type=click.Path(dir_okay=False), help=".npz for accuracy budgets.")
@click.option("--max-latency-ms", type=float, help="Latency budget (p50, batch 1).")
@click.option("--max-size-mb", type=float, help="Model file size budget.")
@click.option("--max-memory-mb", type=float, help="Peak memory budget.")
@click.option("--max-energy-mj", type=float, help="Energy per inference budget (estimated).")
@click.option("--min-accuracy", type=float, help="Accuracy floor on the test split (fraction).")
@click.option(
    "--baseline", type=click.Path(dir_okay=False), help="The last released model to compare with."
)
@click.option(
    "--max-regression", help="How much slower than --baseline is allowed, e.g. 5% or 0.05."
)
@click.option("--max-accuracy-drop", help="Accuracy drop vs --baseline allowed, e.g. 0.01 or 1%.")
@click.option(
    "--time-budget", default=5.0, show_default=True, help="Seconds of latency timing (host)."
)
@click.option("--junit", type=click.Path(dir_okay=False), help="Write JUnit XML here.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@model_options
def check(
    model: str,
    target: str | None,
    data: str | None,
    max_latency_ms: float | None,
    max_size_mb: float | None,
    max_memory_mb: float | None,
    max_energy_mj: float | None,
    min_accuracy: float | None,
    baseline: str | None,
    max_regression: str | None,
    max_accuracy_drop: str | None,
    time_budget: float,
    junit: str | None,
    as_json: bool,
    arch: str | None,
    arch_kwargs: str | None,
    input_shape: str | None,
    trust_pickle: bool,
) -> None:
    """Check MODEL against budgets on a target; exit 0 when all pass, 1 when one fails.

    Budgets come from the flags, else from [tool.edgeopt] in the nearest pyproject.toml (or
    edgeopt.toml), searched from the current folder upward; flags win. Host numbers are
    measured, other targets estimated, and the table says which. --baseline compares
    latency interleaved in the same run (--max-regression 5% = at most 5 % slower).
    Exit 2 on usage or input errors.
    """
    from edgeopt.bench import BenchRequest, run_bench
    from edgeopt.check import parse_fraction, resolve_config, validate, verdict_from_bench
    from edgeopt.data import load_npz
    from edgeopt.errors import BudgetError
    from edgeopt.profiles import load_profile

    flags: dict[str, Any] = {
        "target": target,
        "data": str(Path(data).resolve()) if data else None,
        "baseline": str(Path(baseline).resolve()) if baseline else None,
        "max_latency_ms": max_latency_ms,
        "max_size_mb": max_size_mb,
        "max_memory_mb": max_memory_mb,
        "max_energy_mj": max_energy_mj,
        "min_accuracy": min_accuracy,
        "max_regression": (
            parse_fraction(max_regression, "--max-regression") if max_regression else None
        ),
        "max_accuracy_drop": (
            parse_fraction(max_accuracy_drop, "--max-accuracy-drop") if max_accuracy_drop else None
        ),
    }
    cfg = resolve_config(flags)
    profile = load_profile(cfg.target)
    validate(cfg, bool(profile.measured))
    loaded = [load_model_from_options(model, arch, arch_kwargs, input_shape, trust_pickle)]
    if cfg.baseline:
        loaded.append(
            load_model_from_options(cfg.baseline, arch, arch_kwargs, input_shape, trust_pickle)
        )
    bundle = load_npz(cfg.data) if cfg.data else None
    with tempfile.TemporaryDirectory(prefix="edgeopt-check-") as tmp:
        bench = run_bench(
            BenchRequest(
                models=loaded,
                profile=profile,
                threads=[profile.threads],
                data=bundle,
                workdir=Path(tmp),
                time_budget_s=time_budget,
            )
        )
    verdict = verdict_from_bench(cfg, model, bench)
    if junit:
        from edgeopt.check import junit_xml
        from edgeopt.fileio import write_atomic

        write_atomic(Path(junit), junit_xml(verdict))
    if as_json:
        click.echo(json.dumps(verdict.to_dict(), indent=2))
    else:
        click.echo(render_verdict(verdict))
    if not verdict.passed:
        failed = verdict.failed
        raise BudgetError(
            f"{len(failed)} of {len(verdict.results)} budget(s) failed: "
            + "; ".join(r.describe() for r in failed)
        )


def render_verdict(verdict: Any) -> str:
    """The pass/fail table of an ``edgeopt.check.Verdict``."""
    from edgeopt.check import fmt_value

    where = "measured on this host" if verdict.measured else "estimated from the profile"
    lines = [
        f"edgeopt check: {verdict.model} on {verdict.target} ({where})",
        f"budgets from: {verdict.source or 'flags'}"
        + (" (flags override it)" if verdict.source else ""),
        "",
    ]
    head = f"{'budget':<18} {'value':>12} {'limit':>14} {'provenance':<10}  result"
    lines += [head, "-" * len(head)]
    for r in verdict.results:
        op = "<=" if r.kind == "max" else ">="
        lines.append(
            f"{r.name:<18} {fmt_value(r.value, r):>12} {op + ' ' + fmt_value(r.limit, r):>14} "
            f"{r.provenance:<10}  {'PASS' if r.passed else 'FAIL'}"
            + (f"   ({r.detail})" if r.detail else "")
        )
    n_ok = sum(r.passed for r in verdict.results)
    lines.append("")
    lines.append(f"{n_ok} of {len(verdict.results)} budgets passed")
    return "\n".join(lines)
