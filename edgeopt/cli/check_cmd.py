"""``edgeopt check``: pass/fail release gates for one model on one target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgeopt.cli.options import (
    ModelOptions,
    budget_options,
    check_time_budget,
    metric_option,
    packed_model_options,
    preprocess_options,
    seq_lens_option,
)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", help="Profile name, alias or TOML (default: from the config, else cpu).")
@click.option(
    "--data", type=click.Path(), help=".npz, or a folder of images, for accuracy budgets."
)
@metric_option(
    "What --min-accuracy/--max-accuracy-drop judge (default: from the config, else "
    "top-1 accuracy); f1/precision/recall are macro averages, auc macro one-vs-rest.",
    default=None,
)
@click.option(
    "--baseline", type=click.Path(dir_okay=False), help="The last released model to compare with."
)
@budget_options
@click.option(
    "--time-budget",
    default=5.0,
    show_default=True,
    help="Seconds of latency timing (host; at most 3600).",
)
@seq_lens_option("shown beside the budgets, which judge the main length.")
@click.option("--junit", type=click.Path(dir_okay=False), help="Write JUnit XML here.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@preprocess_options
@packed_model_options
def check(
    model: str,
    target: str | None,
    data: str | None,
    metric: str | None,
    baseline: str | None,
    budgets: dict[str, Any],
    time_budget: float,
    seq_lens: str | None,
    junit: str | None,
    as_json: bool,
    model_opts: ModelOptions,
    recipe_flags: Any,
) -> None:
    """Check MODEL against budgets on a target; exit 0 when all pass, 1 when one fails.

    Budgets come from the flags, else from [tool.edgeopt] in the nearest pyproject.toml (or
    edgeopt.toml), searched from the current folder upward; flags win. Host numbers are
    measured, other targets estimated, and the table says which. --baseline compares
    latency interleaved in the same run (--max-regression 5% = at most 5 % slower).
    --data DIR (an image folder) is read with the preprocessing MODEL carries in its
    metadata, else the flags' (over the config file's [data] table), else defaults for its
    input shape.
    Exit 2 on usage or input errors.
    """
    from edgeopt.bench import BenchRequest, run_bench
    from edgeopt.budgets import parse_limits
    from edgeopt.check import resolve_config, validate, verdict_from_bench
    from edgeopt.cli.data_notes import echo_scoring_notes
    from edgeopt.cli.scoring_data import echo_skipped_images, load_models_and_data
    from edgeopt.errors import BudgetError
    from edgeopt.profiles import load_profile
    from edgeopt.seq_lens import parse_seq_lens

    check_time_budget(time_budget)
    lengths = parse_seq_lens(seq_lens) if seq_lens is not None else ()
    flags: dict[str, Any] = {
        "target": target,
        "data": str(Path(data).resolve()) if data else None,
        "baseline": str(Path(baseline).resolve()) if baseline else None,
        "metric": metric,
        **parse_limits(budgets, lambda key: "--" + key.replace("_", "-")),
    }
    cfg = resolve_config(flags)
    profile = load_profile(cfg.target)
    validate(cfg, bool(profile.measured), runner=profile.runner is not None)
    models = [m for m in (model, cfg.baseline) if m]

    def check_labels(data: Any) -> None:
        if data is not None:
            from edgeopt.measure.task_metrics import check_defined

            check_defined(cfg.metric, data.y, f"the {data.scored} split of {cfg.data}")

    # any split: check never trains
    bundle, loaded = load_models_and_data(
        cfg.data, models, model_opts, recipe_flags, check_labels, table=cfg.recipe
    )
    request = BenchRequest(
        loaded,
        profile,
        [profile.threads],
        data=bundle,
        time_budget_s=time_budget,
        metric=cfg.metric,
        seq_lens=lengths,
    )
    bench = run_bench(request)
    verdict = verdict_from_bench(cfg, model, bench)
    if as_json:
        click.echo(json.dumps(verdict.to_dict(), indent=2))
    else:
        click.echo(render_verdict(verdict))
    echo_scoring_notes(bundle, bench)
    echo_skipped_images(bundle)
    if junit:
        _write_junit(Path(junit), verdict)  # after the table: a bad path still shows results
    if not verdict.passed:
        failed = verdict.failed
        raise BudgetError(
            f"{len(failed)} of {len(verdict.results)} budget(s) failed: "
            + "; ".join(r.describe() for r in failed)
        )


def _write_junit(path: Path, verdict: Any) -> None:
    """Write the JUnit XML; a path that cannot be written is a usage error (exit 2), not a
    failed budget (exit 1), which is what CI would read from a plain crash."""
    from edgeopt.check import junit_xml
    from edgeopt.errors import ConfigError
    from edgeopt.fileio import write_atomic

    try:
        write_atomic(path, junit_xml(verdict))
    except OSError as exc:
        raise ConfigError(
            f"cannot write the JUnit report {path}: {exc.strerror or exc}",
            hint="pass --junit a path in a folder that exists and is writable",
        ) from exc


def render_verdict(verdict: Any) -> str:
    """The pass/fail table of an ``edgeopt.check.Verdict``."""
    from edgeopt.bench import measured_on
    from edgeopt.budgets import fmt_value

    where = measured_on(verdict.device) if verdict.measured else "estimated from the profile"
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
    for n, v in verdict.latency_by_seq.items():
        lines.append(
            f"{'p50 at ' + n + ' tokens':<18} {v['value']:>9.4g} ms "
            f"{'':>14} {v['provenance']:<10}  (no budget)"
        )
    n_ok = sum(r.passed for r in verdict.results)
    lines.append("")
    lines.append(f"{n_ok} of {len(verdict.results)} budgets passed")
    return "\n".join(lines)
