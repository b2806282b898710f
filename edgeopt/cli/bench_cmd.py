"""``edgeopt bench``: latency, memory, size (and accuracy) of one model, optionally vs another."""

from __future__ import annotations

import json
from typing import Any

import click

from edgeopt.cli.options import (
    ModelOptions,
    check_time_budget,
    metric_option,
    packed_model_options,
    parse_thread_counts,
    preprocess_options,
    seq_lens_option,
)
from edgeopt.metrics import task_metric_noun
from edgeopt.profiles.runtime_spec import RUNTIMES, Runtime


def _on_host(runtime: str) -> str:
    """How the footnote names the runtime (a bench record's ``runtime``) that timed and
    scored the models here: bench scores each file in the runtime its target runs."""
    try:
        return RUNTIMES[Runtime(runtime)].host_words
    except ValueError:
        return runtime


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", default="cpu", show_default=True, help="Profile name, alias or TOML.")
@click.option("--threads", help="Intra-op thread counts to measure, e.g. 1,2 (host only).")
@click.option("--vs", "other", type=click.Path(dir_okay=False), help="A second model to compare.")
@click.option(
    "--data",
    type=click.Path(),
    help=".npz, or a folder of images (DIR/test|val/<class>/*), to measure accuracy on.",
)
@metric_option(
    "With --data, a task metric shown beside top-1 accuracy (macro f1/precision/recall, "
    "macro one-vs-rest auc)."
)
@click.option(
    "--time-budget",
    default=8.0,
    show_default=True,
    help="Seconds of timing per run (at most 3600).",
)
@seq_lens_option("one latency column per length.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@preprocess_options
@packed_model_options
def bench(
    model: str,
    target: str,
    threads: str | None,
    other: str | None,
    data: str | None,
    metric: str,
    time_budget: float,
    seq_lens: str | None,
    as_json: bool,
    model_opts: ModelOptions,
    recipe_flags: Any,
) -> None:
    """Measure MODEL on this host, or estimate it on a target profile.

    Host latency runs in a separate process: warm-up, interleaved rounds, p50 = median of
    round medians. With --vs, the speed ratio is the median of per-round ratios, measured
    interleaved in the same run, which stays stable while the machine's speed drifts.
    With --data DIR (an image folder), images are read with the preprocessing the model
    carries in its metadata (as edgeopt export writes it), else the flags' (over a [data]
    table in edgeopt.toml or [tool.edgeopt.data] in pyproject.toml), else defaults.
    """
    from edgeopt.bench import BenchRequest, run_bench
    from edgeopt.cli.data_notes import echo_scoring_notes
    from edgeopt.cli.scoring_data import echo_skipped_images, load_models_and_data
    from edgeopt.profiles import load_profile
    from edgeopt.seq_lens import parse_seq_lens

    check_time_budget(time_budget)
    lengths = parse_seq_lens(seq_lens) if seq_lens is not None else ()
    profile = load_profile(target)
    thread_counts = parse_thread_counts(threads) if threads else [profile.threads]
    models = [m for m in (model, other) if m]
    bundle, loaded = load_models_and_data(
        data, models, model_opts, recipe_flags, lambda d: _check_metric(metric, d, data)
    )
    request = BenchRequest(
        loaded,
        profile,
        thread_counts,
        data=bundle,
        time_budget_s=time_budget,
        metric=metric,
        seq_lens=lengths,
    )
    report = run_bench(request)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_table(report))
    echo_scoring_notes(bundle, report)
    echo_skipped_images(bundle)


def _check_metric(metric: str, bundle: Any, data: str | None) -> None:
    """ConfigError when ``--metric`` cannot be measured: no labelled data, or AUC on one
    class."""
    from edgeopt.config import check_metric
    from edgeopt.measure.task_metrics import check_defined

    check_metric(metric, has_data=bundle is not None)
    if bundle is not None:
        check_defined(metric, bundle.y, f"the {bundle.scored} split of {data}")


def _fmt(v: dict[str, Any] | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v['value']:.{digits}f}"


def render_table(report: dict[str, Any]) -> str:
    """The human view of a bench report: one row per model and thread count."""
    from edgeopt.bench import measured_on

    where = (
        measured_on(report.get("device"))
        if report["measured"]
        else f"estimated from profile '{report['target']}'"
    )
    lines = [f"target: {report['target']} ({where})", f"host: {report['host']}", ""]
    # --metric other than top-1: one more column beside accuracy
    task = report.get("metric") if report.get("metric") != "accuracy" else None
    # the paths as typed: two files named model.onnx in two folders stay apart
    width = max(28, *(len(str(r["model"])) for r in report["results"]))
    lens = [str(n) for n in report.get("seq_lens", [])]
    head = (
        f"{'model':<{width}} {'thr':>3} {'p50 ms':>9} {'p90 ms':>9} "
        + "".join(f"{'p50@' + n + ' ms':>11} " for n in lens)
        + f"{'mem MB':>8} "
        f"{'size MB':>8} {'energy mJ':>14} {'accuracy':>9}"
        + (f" {task:>9}" if task else "")
        + "  source"
    )
    lines += [head, "-" * len(head)]
    for row in report["results"]:
        energy = row.get("energy_mj")
        e = "-" if energy is None else f"{energy['value']:.3f}"  # measured: a value
        if energy is not None and "low" in energy:  # estimated: an interval
            e = f"{energy['low']:.3f}-{energy['high']:.3f}"
        acc = row.get("accuracy")
        lines.append(
            f"{row['model']:<{width}} {row['threads'] or '-':>3} "
            f"{_fmt(row['latency_p50_ms']):>9} {_fmt(row.get('latency_p90_ms')):>9} "
            + "".join(f"{_fmt(row['latency_by_seq'][n]['latency_p50_ms']):>11} " for n in lens)
            + f"{_fmt(row['peak_memory_mb'], 2):>8} {_fmt(row['size_mb'], 3):>8} {e:>14} "
            f"{_fmt(acc, 4):>9}"
            + (f" {_fmt(row.get(task), 4):>9}" if task else "")
            + f"  {row['latency_p50_ms']['provenance']}"
        )
    lines.append("")
    lines.append(
        "latency/memory: "
        + (
            measured_on(report.get("device"))
            + f" ({_on_host(report.get('runtime', 'ort'))}, batch 1; "
            "memory = model's share of process peak RSS)"
            if report["measured"]
            else "estimated by the cost model, not measured"
        )
        + "; size: measured file size"
        + (
            f"; accuracy{' and ' + task_metric_noun(task) if task else ''}: measured on this host "
            f"({_on_host(report.get('runtime', 'ort'))}) on the "
            f"{report['accuracy_split']} split"
            if report.get("accuracy_split")
            else ""
        )
    )
    if lens:
        lines.append(
            f"p50@N: at N tokens (synthetic inputs; the other columns at {report['seq_len']}), "
            + ("timed interleaved per length" if report["measured"] else "estimated")
        )
    for cmp in report.get("comparisons", []):
        lines.append(comparison_line(cmp, report["target"]))
    energies = [r["energy_mj"] for r in report["results"] if "energy_mj" in r]
    if report["measured"] and energies:
        e = energies[0]
        lines.append(
            f"energy: measured on {e['device']} ({e.get('source', 'power reading')})"
            if e["provenance"] == "measured"
            else "energy: estimated by the cost model (the device exposes no power reading)"
        )
    for a in report.get("assumptions", []):
        lines.append(f"assumption: {a}")
    return "\n".join(lines)


def comparison_line(cmp: dict[str, Any], target: str) -> str:
    """``A is 1.98x slower than B at 1 thread(s) (measured: ...)``, with the paths as typed;
    an estimate has no thread count and says ``estimated on TARGET`` instead."""
    ratio = cmp["ratio"]
    verdict = "faster" if ratio > 1 else "slower"
    factor = ratio if ratio > 1 else 1 / ratio
    head = f"{cmp['a']} is {factor:.2f}x {verdict} than {cmp['b']}"
    if cmp["provenance"] != "measured":
        return f"{head}, estimated on {target} (cost model)"
    return (
        f"{head} at {cmp['threads']} thread(s) (measured: median of {cmp['rounds']} "
        f"interleaved round ratios, CV {cmp['ratio_cv']:.1%})"
    )
