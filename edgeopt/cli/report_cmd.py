"""``edgeopt report`` and ``edgeopt export``: read a run directory, write reports or one model."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--format",
    "formats",
    default="html,md,json,csv",
    show_default=True,
    help="Comma-separated: html, md, json, csv.",
)
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False), help="Folder (default RUN_DIR/report)."
)
def report(run_dir: str, formats: str, out_dir: str | None) -> None:
    """Write the reports of the run in RUN_DIR.

    HTML (one offline file with plots), Markdown (short, for CI summaries and PR comments),
    JSON (with schema_version) and CSV (one row per trial). Every number is labelled
    measured (on this host) or estimated (from a hardware profile).
    """
    from edgeopt.report import parse_formats
    from edgeopt.rundir import RunDir
    from edgeopt.search.records import write_run_reports

    fmts = parse_formats(formats)  # an unknown format fails before the run is read
    out = Path(out_dir) if out_dir else RunDir(run_dir).report_dir
    for path in write_run_reports(Path(run_dir), out, fmts):
        click.echo(str(path))


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--trial", "number", type=int, required=True, help="Trial number to export.")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Where to write the .onnx."
)
@click.option(
    "--rebuild",
    is_flag=True,
    help="Also rebuild the model from its config and check it gives the same outputs.",
)
def export(run_dir: str, number: int, out: str, rebuild: bool) -> None:
    """Copy trial N's exact ONNX model out of RUN_DIR, with a .json of its config and numbers.

    The .json lands beside the model (model.onnx -> model.json). --rebuild builds the
    candidate again from the recorded config (the torch phase re-runs) and reports the
    largest output difference on the validation inputs; exit 1 when it does not match.
    """
    from edgeopt.errors import EdgeoptError
    from edgeopt.search.records import load_run
    from edgeopt.search.replay import export_trial

    records = load_run(Path(run_dir))
    result = export_trial(records, Path(run_dir), number, Path(out), rebuild=rebuild)
    trial = next(t for t in records["trials"] if t["number"] == number)
    kind = records.get("baseline", {}).get("accuracy_kind", "accuracy")
    test = trial.get("test_accuracy")
    click.echo(f"trial {number}: {trial.get('describe') or 'unchanged'}")
    click.echo(f"model: {result.onnx}")
    click.echo(f"config and numbers: {result.metadata}")
    line = f"validation {kind} {trial.get('val_accuracy'):.4f} (measured)"
    if test is not None:
        line += f"; test {kind} {test:.4f} (measured, {records.get('test_split')} split)"
    click.echo(line)
    if result.rebuild is not None:
        r = result.rebuild
        verdict = "matches" if r.matches else "DOES NOT match"
        click.echo(
            f"rebuild {verdict}: max abs output difference {r.max_abs_diff:.3g} "
            f"(tolerance {r.tolerance:.3g}) on {r.n_inputs} inputs ({r.inputs}); "
            f"top-1 agreement {r.top1_agreement:.2%}"
        )
        if not r.matches:
            raise EdgeoptError(
                f"the model rebuilt from trial {number}'s config differs from the recorded one",
                hint="the code, data or library versions changed since the run; the exported "
                "file is the recorded model",
            )
