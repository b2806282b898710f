"""``edgeopt export``: copy one trial's exact model (and a .json of its config and numbers)
out of a run, optionally rebuilding it to check it."""

from __future__ import annotations

from pathlib import Path

import click

from edgeopt.cli.run_source import run_source, run_source_options
from edgeopt.records import RunRecord, as_run
from edgeopt.search.run.export_format import FORMAT_CHOICES


@click.command()
@run_source_options
@click.option("--trial", "number", type=int, help="Trial number to export.")
@click.option(
    "--best",
    is_flag=True,
    help="Export the trial the report recommends (its pick); instead of --trial.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the model: .onnx, or the runtime's file (.ort, OpenVINO .xml, .tflite).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMAT_CHOICES),
    default=None,
    help="onnx, ort (ORT Mobile) or openvino (IR .xml + .bin): the file the search made for "
    "that target, else converted from the trial's ONNX on the spot; tflite: the .tflite the "
    "search made for a LiteRT target (refused for a trial with none); auto: the run's first "
    "target's format. Default: --out's suffix.",
)
@click.option(
    "--rebuild",
    is_flag=True,
    help="Also rebuild the model from its config and check it gives the same outputs.",
)
@click.option(
    "--trust-pickle",
    is_flag=True,
    help="--rebuild may unpickle the run's model file (runs code from that file).",
)
@click.option(
    "--trust-arch",
    is_flag=True,
    help="--rebuild may import and run the architecture the run's model file names.",
)
@click.option(
    "--arch",
    metavar="MODULE:CALLABLE",
    help="--rebuild: the builder the run was made with (a run directory never names code "
    "edgeopt runs; it must match the recorded one).",
)
@click.option(
    "--data",
    "data_ref",
    metavar="MODULE:CALLABLE",
    help="--rebuild: the Datasets callable the run's data came from (never recorded in it).",
)
def export(
    run_dir: str | None,
    storage: str | None,
    study_name: str,
    artifacts: str | None,
    number: int | None,
    best: bool,
    out: str,
    fmt: str | None,
    rebuild: bool,
    trust_pickle: bool,
    trust_arch: bool,
    arch: str | None,
    data_ref: str | None,
) -> None:
    """Copy trial N's exact ONNX model (or, with --best, the report's pick) out of RUN_DIR
    (or the shared study in --storage, from the artifact store), with a .json of its
    config and numbers.

    With --format ort or openvino (or an --out ending in .ort or .xml) the trial's ONNX file
    is written beside the runtime's files (model.onnx, then model.ort and
    model.required_operators.config, or model.xml and model.bin) and converted with the
    runtime's own tool; the .json records the runtime.

    The .json lands beside the model (model.onnx -> model.json), outside the run directory;
    for image-folder data, so does the preprocessing recipe (model.preprocess.json), which
    the exported model also carries in its ONNX metadata.
    The file must be the one the study recorded (its SHA-256). --rebuild builds the
    candidate again from the recorded config (the torch phase re-runs) and reports the
    largest output difference on the validation inputs; exit 1 when it does not match.
    """
    from edgeopt.errors import ConfigError, EdgeoptError
    from edgeopt.profiles import resolve_targets
    from edgeopt.profiles.runtime_spec import RUNTIMES
    from edgeopt.search.run.collect import load_run
    from edgeopt.search.run.export_format import convert_profile, export_runtime
    from edgeopt.search.run.replay import export_paths, export_trial
    from edgeopt.search.study.source import check_output

    if best == (number is not None):
        raise ConfigError(
            "give either --trial N or --best" + (", not both" if best else ""),
            hint="--best exports the trial the report recommends; --trial N any complete one",
        )
    source = run_source(run_dir, storage, study_name, artifacts)
    target = Path(out)

    def check(paths: list[Path]) -> None:
        check_output(
            paths, target.parent, source.protected(), flag="--out", example="release/model.onnx"
        )

    check([target, target.with_suffix(".json")])
    records = as_run(load_run(source))
    profiles = None
    if fmt not in (None, "onnx") or target.suffix.lower() != ".onnx":
        profiles = resolve_targets(records.targets).profiles  # how the file is converted
    runtime = export_runtime(fmt, target, profiles)
    check(export_paths(records, target, runtime))  # and X.preprocess.json, for image folders
    if best:
        number = _pick(records)
    assert number is not None
    local = Path(run_dir) if run_dir else None
    result = export_trial(
        records,
        local,
        number,
        target,
        rebuild=rebuild,
        artifacts=source.artifacts,
        trust={
            "trust_pickle": trust_pickle,
            "trust_arch": trust_arch,
            "arch": arch,
            "data": data_ref,
        },
        runtime=runtime,
        profile=convert_profile(runtime, profiles or ()),
    )
    trial = records.trial(number)
    assert trial is not None  # export_trial found it
    from edgeopt.report.model import score_noun

    kind = score_noun(records)  # accuracy, fidelity or the run's --metric
    test = trial.test_accuracy
    click.echo(f"trial {number}: {trial.describe or 'unchanged'}")
    if result.artifact is not None:
        files = " + ".join(str(p) for p in result.artifact.paths)
        # LiteRT's file was converted from the trial's torch model, not from the ONNX beside it
        made = "the ONNX candidate beside it:" if runtime == "litert" else "from"
        click.echo(f"model: {files} ({RUNTIMES[runtime].label}, {made} {result.onnx})")
    else:
        click.echo(f"model: {result.onnx}")
    click.echo(f"config and numbers: {result.metadata}")
    if result.preprocess is not None:
        click.echo(f"preprocessing: {result.preprocess} (also in the model's ONNX metadata)")
    line = f"validation {kind} {trial.val_accuracy:.4f} (measured)"
    if test is not None:
        line += f"; test {kind} {test:.4f} (measured, {records.test_split} split)"
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


def _pick(records: RunRecord) -> int:
    """The trial the report recommends (``edgeopt.report.pick.choose``); ConfigError saying
    why when there is none."""
    from edgeopt.errors import ConfigError
    from edgeopt.report import summarize

    s = summarize(records)
    if s.pick is None:
        raise ConfigError(
            f"no trial to recommend: {s.no_pick_reason}",
            hint="export a complete trial by number with --trial N (see the report)",
        )
    return s.pick.number
