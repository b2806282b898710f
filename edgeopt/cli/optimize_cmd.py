"""``edgeopt optimize``: the joint search that leaves a run directory with a Pareto front."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgeopt.cli.data_arg import DATA_HELP, DataArg
from edgeopt.cli.machine_use import data_use_options, devices_for, threads_for, with_data_use
from edgeopt.cli.options import (
    TARGET_HELP,
    TargetOption,
    Utf8Path,
    augment_option,
    metric_option,
    model_options,
    preprocess_options,
    search_budget_options,
)
from edgeopt.cli.seq_arg import seq_lens_arg
from edgeopt.cli.space_arg import space_options, with_user_space
from edgeopt.config import SAMPLERS

if TYPE_CHECKING:
    from edgeopt.profiles import Targets
    from edgeopt.search.study.context import Trust


def _targets(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


@click.command()
@click.argument("model", type=Utf8Path(dir_okay=False))
@click.option("--target", default="cpu", show_default=True, cls=TargetOption, help=TARGET_HELP)
@click.option("--data", type=DataArg(), help=DATA_HELP)
@click.option(
    "--trials",
    type=click.IntRange(min=1),
    help="Total trials in the study (default 20 unless --timeout).",
)
@click.option("--timeout", "timeout_text", help="Stop starting trials after e.g. 20m, 1h or 90s.")
@click.option(
    "--objectives",
    default="accuracy,latency,size",
    show_default=True,
    help="From accuracy, latency, size, memory, energy.",
)
@metric_option(
    "What 'accuracy' means in the objective and the accuracy budgets: top-1 accuracy, "
    "or macro F1/precision/recall, or macro one-vs-rest ROC AUC (needs --data)."
)
@search_budget_options
@click.option(
    "--sampler",
    type=click.Choice(SAMPLERS),
    default="tpe",
    show_default=True,
)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option(
    "--plain-search",
    is_flag=True,
    help="Trials from the sampler alone: no expert seeds, sibling variants, promotions or "
    "early stopping (a baseline to compare search strategies against; with --sampler tpe, "
    "the TPE-only one).",
)
@space_options
@seq_lens_arg
@click.option(
    "--out",
    "run_dir",
    type=Utf8Path(file_okay=False),
    help="Run directory (default runs/<model>-<target>).",
)
@click.option(
    "--storage",
    help="Optuna storage URL shared by machines, e.g. postgresql://user@host/db "
    "(pip install 'edgeopt[postgres]'); default: study.db in the run directory.",
)
@click.option(
    "--artifacts",
    type=Utf8Path(file_okay=False),
    help="Shared folder (or s3://BUCKET) for every trial's ONNX file and log, so that report "
    "and export on any machine can read them; use with --storage on many machines.",
)
@click.option(
    "--study", "study_name", default="edgeopt", show_default=True, help="Study name in the storage."
)
@click.option("--workers", type=click.IntRange(min=1), default=1, help="Local worker processes.")
@click.option(
    "--trial-timeout",
    "trial_timeout_text",
    default="auto",
    show_default=True,
    help="Time cap per trial, with a unit (e.g. 15m); auto: 16x one fine-tune epoch as measured at "
    "setup, plus 2 minutes (at least 3 minutes).",
)
@click.option(
    "--trial-memory-gb", type=float, default=8.0, show_default=True, help="Memory cap per trial."
)
@click.option(
    "--threads",
    "threads_text",
    default="auto",
    show_default=True,
    help="Torch threads per trial (training and scoring); auto: the CPUs this process may "
    "use, divided by --workers. Latency is timed at the target profile's own thread count.",
)
@click.option(
    "--train-device",
    default="auto",
    show_default=True,
    metavar="auto|cpu|cuda[:N]",
    help="Where pruning, fine-tuning and QAT run; auto: the GPUs when torch sees any, else "
    "the CPU. Workers take one GPU each, round-robin. Export and measurement stay on the host.",
)
@click.option("--no-report", is_flag=True, help="Skip writing the report at the end.")
@click.option(
    "--mlflow",
    "mlflow_uri",
    is_flag=False,
    flag_value="",
    metavar="[URI]",
    help="Log the study and each trial to MLflow (pip install 'edgeopt[mlflow]'): alone, to "
    "mlflow.db in the run directory; --mlflow=URI for another store, e.g. http://host:5000.",
)
@preprocess_options
@augment_option
@data_use_options
@model_options
def optimize(
    model: str,
    target: str,
    data: str | None,
    trials: int | None,
    timeout_text: str | None,
    objectives: str,
    metric: str,
    sampler: str,
    seed: int,
    plain_search: bool,
    user_space: tuple[str | None, str | None],
    seq_lens: tuple[int, ...],
    run_dir: str | None,
    storage: str | None,
    artifacts: str | None,
    study_name: str,
    workers: int,
    trial_timeout_text: str,
    trial_memory_gb: float,
    threads_text: str,
    train_device: str,
    no_report: bool,
    mlflow_uri: str | None,
    arch: str | None,
    arch_kwargs: str | None,
    input_shape: tuple[str, ...],
    trust_pickle: bool,
    trust_arch: bool,
    budgets: dict[str, float | None],
    recipe_flags: Any,
    data_workers: str,
    data_cache_gb: float,
) -> None:
    """Search pruning, fine-tuning/distillation and quantization jointly for MODEL.

    Leaves a run directory with the Optuna study, one ONNX file per trial, the Pareto front
    and a report. Re-running the same command resumes the study. Host latency is measured
    (interleaved against the original, in a separate process); other targets are estimated
    from their profile, and every number says which.
    """
    from edgeopt.cli.data_notes import echo_run_data_notes
    from edgeopt.cli.options import parse_arch_kwargs
    from edgeopt.cli.scoring_data import folder_recipe_flags
    from edgeopt.config import Budgets, RunConfig, parse_duration
    from edgeopt.inputs import parse_input_flags
    from edgeopt.loading import ModelSpec
    from edgeopt.profiles import resolve_targets
    from edgeopt.rundir import default_run_dir
    from edgeopt.search.run.setup import prepare
    from edgeopt.search.study.context import Trust
    from edgeopt.search.study.storage import adopt_password

    targets = _targets(target)
    given = parse_input_flags(input_shape)
    recipe = folder_recipe_flags(data, recipe_flags)  # before any work: flags with an npz
    timeout_s = parse_duration(timeout_text) if timeout_text else None
    if trials is None and timeout_s is None:
        trials = 20
    specs = tuple(str(Path(t).resolve()) if t.endswith(".toml") else t for t in targets)
    resolved = resolve_targets(specs)  # once: every later step of this run uses these profiles
    config = RunConfig(
        model=ModelSpec(
            path=str(Path(model).resolve()),
            arch=arch,
            arch_kwargs=parse_arch_kwargs(arch_kwargs),
            input_shape=given if isinstance(given, tuple) else None,
            trust_pickle=trust_pickle,
            trust_arch=trust_arch,
            inputs=given if not isinstance(given, tuple) else None,
        ),
        targets=specs,
        data=_data_spec(data),
        objectives=tuple(o.strip() for o in objectives.split(",") if o.strip()),
        metric=metric,
        budgets=Budgets(**budgets),  # the --max-*/--min-* flags
        sampler=sampler,
        seed=seed,
        plain_search=plain_search,
        study_name=study_name,
        storage=adopt_password(storage) if storage else None,  # never into run.json
        artifacts=_artifacts_spec(artifacts),
        trial_timeout_s=(
            None
            if trial_timeout_text.strip().lower() == "auto"
            else parse_duration(trial_timeout_text, "--trial-timeout")
        ),
        trial_memory_gb=trial_memory_gb,
        threads=threads_for(threads_text, workers),
        train_device=train_device,
        seq_lens=seq_lens,
    ).with_profile_digests(resolved)
    config = with_user_space(config, user_space, resolved)  # checked before any work
    devices = devices_for(config.train_device, workers)  # before any work: cuda without a GPU
    config = with_data_use(config, devices, data_workers, data_cache_gb)
    out = Path(run_dir) if run_dir else default_run_dir(model, targets)
    t0 = time.monotonic()
    mlflow = _mlflow(mlflow_uri, out)
    baseline = prepare(  # validates every input before any search work
        config, out, resolved, recipe, search_timeout_s=timeout_s
    )
    click.echo(f"edgeopt optimize: {model} -> {out}  (targets: {', '.join(targets)})", err=True)
    _announce(out, baseline, config, shape_given=bool(input_shape))
    echo_run_data_notes(config, baseline, out)  # small splits: warned before any search work
    if resolved.flavour_note:
        click.echo(f"warning: {resolved.flavour_note}", err=True)
    data_ref = config.data.ref if config.data else None  # never recorded: workers get it
    trust = Trust(pickle=trust_pickle, arch=trust_arch, arch_ref=arch, data_ref=data_ref)
    _search_and_report(
        out, trials, timeout_s, workers, not no_report, trust, mlflow, resolved, devices
    )
    click.echo(f"done in {time.monotonic() - t0:.0f}s; run directory {out}", err=True)


def _data_spec(data: str | None) -> Any:
    """``--data``: an npz file, a folder of images (set-up adds its preprocessing), or a
    ``module:callable`` (its reference kept out of every record)."""
    from edgeopt.data import DataKind, DataSpec
    from edgeopt.data.callable import is_data_ref

    if not data:
        return None
    if is_data_ref(data):
        return DataSpec.from_ref(data)
    path = Path(data).resolve()
    return DataSpec(DataKind.FOLDER, str(path)) if path.is_dir() else DataSpec.npz(path)


def _announce(out: Path, baseline: Any, config: Any, *, shape_given: bool) -> None:
    """What the user should know before the search starts."""
    from edgeopt.rundir import RunDir

    recorded = RunDir(out).read_config().model.input_shape
    if recorded and not shape_given:  # the model file records none: prepare took --data's
        click.echo(f"input shape {','.join(map(str, recorded))} taken from --data", err=True)
    _echo_baseline(baseline, config.metric)
    storage = config.storage
    if storage and not config.artifacts and not storage.startswith("sqlite"):
        click.echo(
            "note: without --artifacts, trial models stay in this run directory; report and "
            "export on another machine cannot read them",
            err=True,
        )


def _artifacts_spec(text: str | None) -> str | None:
    """An artifact folder as an absolute path (workers may start elsewhere); s3:// as is."""
    if not text or text.startswith("s3://"):
        return text
    return str(Path(text).expanduser().resolve())


def _echo_baseline(baseline: Any, metric: str = "accuracy") -> None:
    from edgeopt.metrics import task_metric_noun

    kind = baseline.accuracy_kind
    what = kind if kind == "fidelity" else task_metric_noun(metric)
    line = f"baseline: validation {what} {baseline.val_accuracy:.4f} (measured, ORT on this host)"
    for name, ms in baseline.host_latency_ms.items():
        line += f"; latency {ms:.3f} ms on {name} (measured)"
    click.echo(line, err=True)
    if kind == "fidelity":
        click.echo(
            "no --data: 'accuracy' is top-1 agreement with the original model on synthetic "
            "inputs (fidelity), not task accuracy",
            err=True,
        )
    _echo_probe(baseline)


def _echo_probe(baseline: Any) -> None:
    """What each stage's probe found (``Stage.probe_notes``), and the auto trial timeout."""
    from edgeopt.stages import STAGES

    for name, stage in STAGES.items():
        for line in stage.probe_notes(baseline.stage_facts.get(name, {})):
            click.echo(line, err=True)
    if baseline.auto_timeout_s is not None:
        click.echo(f"auto trial timeout {baseline.auto_timeout_s:.0f}s", err=True)


def _mlflow(value: str | None, out: Path) -> str | None:
    """The MLflow tracking URI for ``--mlflow [URI]``, checked before any search work."""
    if value is None:
        return None
    from edgeopt.search.integrations import tracking

    tracking.require_mlflow()
    uri = tracking.resolve_uri(value, out)
    if value != tracking.DEFAULT_URI:  # the default store is created in the run directory
        tracking.check_uri(uri)
    return uri


def _search_and_report(
    out: Path,
    trials: int | None,
    timeout_s: float | None,
    workers: int,
    report: bool,
    trust: Trust,
    mlflow: str | None = None,
    targets: Targets | None = None,
    devices: tuple[str, ...] | None = None,
) -> None:
    """Search, score the front on the test split, print it, write the reports; then exit
    128 + the stop signal after one (Ctrl-C: 130), or 1 when nothing feasible was found."""
    from edgeopt.report import summarize
    from edgeopt.report.terminal import recommended_line, render_front
    from edgeopt.search.run.collect import write_run_reports
    from edgeopt.search.run.loop import run_search
    from edgeopt.search.run.setup import finalize
    from edgeopt.stopping import Stopper, current

    stopper = current() or Stopper()  # the one the command line installed
    run_search(
        out,
        n_trials=trials,
        timeout_s=timeout_s,
        workers=workers,
        progress=lambda event: _progress(event, timeout_s),
        on_stop=lambda: click.echo(stopper.message(), err=True),
        trust=trust,
        mlflow=mlflow,
        targets=targets,
        devices=devices,
    )
    click.echo(
        "computing test-split numbers for the front and re-measuring its host latency...",
        err=True,
    )
    elsewhere = finalize(out, targets, trust.data_ref).get("built_elsewhere") or {}
    if elsewhere:
        machines = ", ".join(sorted(set(elsewhere.values())))
        click.echo(
            f"note: front trial(s) {', '.join(sorted(elsewhere, key=int))} were built on "
            f"{machines} without --artifacts: that machine scores them on the test split "
            "when it finishes (run every machine with --artifacts DIR to read them here)",
            err=True,
        )
    records = _records(out)
    click.echo(render_front(records))
    if report:
        with stopper.finishing(), stopper.abortable():  # a first signal lets it finish
            paths = write_run_reports(out, out / "report", formats=("html", "md", "json", "csv"))
        click.echo(f"report: {', '.join(str(p) for p in paths)}")
    click.echo(recommended_line(summarize(records), out))  # the report's pick, last
    if stopper.exit_code is not None:
        click.echo(f"stopped by {stopper.label}; re-run the same command to resume", err=True)
        sys.exit(stopper.exit_code)
    nothing_feasible(records)


def nothing_feasible(run: dict[str, Any]) -> None:
    """Raise (exit 1) when no trial is on the feasible front, naming why: every trial
    failed, or no trial met the budgets (the binding budget and the closest trial)."""
    from edgeopt.errors import EdgeoptError

    trials = run["trials"]
    if any(t.get("on_front") for t in trials):
        return
    complete = [t for t in trials if t["state"] == "complete"]
    if not complete:
        reasons = sorted({str(t.get("fail_reason") or t.get("stopped_reason")) for t in trials})
        raise EdgeoptError(
            f"no trial completed ({len(trials)} failed or stopped early): {reasons[0][:200]}"
            if reasons
            else "no trial ran",
            hint="see the trial logs under trials/ and the report",
        )
    budgets = run["config"]["budgets"]
    name, over, trial = min(
        (_worst_violation(t["constraints"], budgets) + (t,) for t in complete),
        key=lambda x: x[1],
    )
    raise EdgeoptError(
        f"no trial met the budgets: the closest, trial {trial['number']} "
        f"({trial['describe']}), is over {name} by {over:.0%} of the budget",
        hint=f"relax {_flag(name)} or search longer (more --trials / --timeout)",
    )


def _worst_violation(constraints: dict[str, float], budgets: dict[str, Any]) -> tuple[str, float]:
    """The constraint a trial misses most, relative to its budget's size."""
    from edgeopt.budgets import BUDGET_OF_CONSTRAINT

    worst = ("", 0.0)
    for key, value in constraints.items():
        limit = budgets.get(BUDGET_OF_CONSTRAINT[key.split("[")[0]]) or 1.0
        rel = value / abs(limit)
        if rel > worst[1]:
            worst = (key, rel)
    return worst


def _flag(constraint: str) -> str:
    from edgeopt.budgets import BUDGET_OF_CONSTRAINT

    return "--" + BUDGET_OF_CONSTRAINT[constraint.split("[")[0]].replace("_", "-")


def _progress(event: Any, timeout_s: float | None = None) -> None:
    """One line per trial in a log (stderr not a terminal); on a terminal, the trial's line
    and an indented status line (front, best candidate, ETA)."""
    from edgeopt.search.run.progress import render

    for line in render(event, timeout_s=timeout_s, one_line=not sys.stderr.isatty()):
        click.echo(line, err=True)


def _records(run_dir: Path) -> dict[str, Any]:
    from edgeopt.search.run.collect import load_run

    return load_run(run_dir)
