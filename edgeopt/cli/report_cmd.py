"""``edgeopt report``: read a run (its directory, or its shared study from any machine) and
write its reports."""

from __future__ import annotations

from pathlib import Path

import click

from edgeopt.cli.run_source import run_source, run_source_options


@click.command()
@run_source_options
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
def report(
    run_dir: str | None,
    storage: str | None,
    study_name: str,
    artifacts: str | None,
    formats: str,
    out_dir: str | None,
) -> None:
    """Write the reports of the run in RUN_DIR, or of the shared study in --storage.

    HTML (one offline file with plots), Markdown (short, for CI summaries and PR comments),
    JSON (with schema_version) and CSV (one row per trial). Every number is labelled
    measured (on the machine named per trial) or estimated (from a hardware profile).
    """
    from edgeopt.errors import ConfigError
    from edgeopt.fileio import refuse_symlinks
    from edgeopt.report import FILE_NAMES, parse_formats, render_reports, summarize
    from edgeopt.report.terminal import recommended_line
    from edgeopt.rundir import RunDir
    from edgeopt.search.run.collect import report_records
    from edgeopt.search.study.source import check_output

    fmts = parse_formats(formats)  # an unknown format fails before the run is read
    source = run_source(run_dir, storage, study_name, artifacts)
    if out_dir is None and run_dir is None:
        raise ConfigError("--out is required with --storage", hint="e.g. --out report/")
    own = RunDir(str(run_dir)).report_dir if run_dir else None
    out = Path(out_dir) if out_dir else own
    assert out is not None
    names = [out / FILE_NAMES[f] for f in fmts]
    check_output(names, out, source.protected(), flag="--out", example="report/", allowed=own)
    if own is not None and out == own:  # a planted link must not carry the reports elsewhere
        refuse_symlinks(own.parent, [own, *names])
    records = report_records(source)
    for path in render_reports(records, out, fmts):
        click.echo(str(path))
    local = source.run.path if source.run is not None else None
    click.echo(recommended_line(summarize(records), local))  # the reports' pick, last
