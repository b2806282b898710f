"""Set a run up before the search (validate, export and measure the original) and finish it
afterwards (test-split numbers for the front, never seen by the search)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import TrialState

from edgeopt.config import RunConfig
from edgeopt.data import (
    EVAL_SAMPLES,
    DataKind,
    DataSource,
    DataSpec,
    add_to_salt,
    first_inputs,
    in_model_order,
    is_streamed,
    open_source,
)
from edgeopt.data.metadata import carry, read_recipe
from edgeopt.data.preprocess import Preprocess
from edgeopt.data.recipe_choice import RecipeFlags, choose_recipe
from edgeopt.errors import ConfigError
from edgeopt.fileio import write_json
from edgeopt.heap import release_free_memory
from edgeopt.loading import check_model_and_data, load_spec
from edgeopt.measure.accuracy import onnx_score, source_task_metric, source_task_metric_entries
from edgeopt.measure.runtime import host_description
from edgeopt.measure.service import reference_latency_ms
from edgeopt.measure.task_metrics import check_defined
from edgeopt.profiles import HardwareProfile, Targets, resolve_targets
from edgeopt.profiles.runtime_spec import RUNTIMES
from edgeopt.rundir import Baseline, RunDir
from edgeopt.runtime_child import shared_runtime_child
from edgeopt.search.run.final_measure import add_final_latency
from edgeopt.search.run.guard import check_out_dir
from edgeopt.search.run.seq_measure import check_model_takes
from edgeopt.search.study.artifacts import open_store, trial_artifacts
from edgeopt.search.study.context import SearchContext, run_targets
from edgeopt.search.study.shared import record_test_numbers
from edgeopt.search.trial.protocol import SYNTHETIC_N, scoring_inputs
from edgeopt.search.trial.runtimes import convert_originals, recorded, target_scores
from edgeopt.stages import STAGES, ProbeInput

log = logging.getLogger(__name__)

BASELINE_LATENCY_BUDGET_S = 6.0


def prepare(
    config: RunConfig,
    run_dir: Path,
    targets: Targets | None = None,
    recipe: RecipeFlags | None = None,
    *,
    search_timeout_s: float | None = None,
) -> Baseline:
    """Validate everything before any search work, then write the run directory, the
    baseline (the original model as ONNX, its validation accuracy and, for the host, its
    reference latency) and the study. Idempotent: a resumed run reuses them; two processes
    setting up one directory at once take turns. ``targets``: ``config.targets`` as the entry
    point resolved them (else resolved here); ``run.json`` records their digests.
    ``recipe``: the preprocessing flags (and config table) of an image-folder run, resolved
    against the model here (``choose_recipe``); a resume must give the recorded one.
    ``search_timeout_s`` (``--timeout``) sizes the fine-tune rounds of a new run's probe."""
    from edgeopt.search.study.lifecycle import check_joinable, open_study

    check_out_dir(config, RunDir(run_dir))  # before any work: what --out may hold
    targets = targets or resolve_targets(config.targets)
    targets.check()  # fails fast when the targets share no model format or repeat one
    targets.check_searchable()  # or name a measured runtime not converted to or installed
    if config.profile_digests is None:
        config = config.with_profile_digests(targets)
    source = None
    if config.data and config.data.kind is DataKind.CALLABLE:  # a resume: fingerprint checked
        config = replace(config, data=_callable_spec(config.data, RunDir(run_dir)))
    elif config.data is None:
        _check_callable_named(RunDir(run_dir))
    if config.data and config.data.kind in (DataKind.NPZ, DataKind.CALLABLE):
        source = open_source(config.data)
        config = replace(config, data=config.data.with_fingerprint(source.fingerprint()))
    loaded = load_spec(config.model, source.input_shape if source is not None else None)
    check_model_takes(loaded, config.seq_lens)  # --seq-lens: before any run directory work
    if loaded.artifact_path is not None:
        raise ConfigError(
            f"{loaded.source} is a runtime's file ({loaded.format.value}): optimize starts "
            "from the trained model",
            hint="pass the torch model or the .onnx it was made from; bench and check "
            "take this file",
        )
    if loaded.is_onnx:  # a measured LiteRT target times the original's .tflite
        for p in targets.profiles:
            if p.measured and RUNTIMES[p.runtime_name].needs_torch:
                raise ConfigError(
                    f"--target {p.name}: {RUNTIMES[p.runtime_name].label} files are converted "
                    f"from the torch model, and {loaded.source} is an ONNX file",
                    hint="optimize the torch model (.pt) for this target, or target cpu",
                )
    if config.data and config.data.kind is DataKind.FOLDER:  # its recipe needs the model
        flags = recipe or RecipeFlags()
        spec = _folder_spec(config.data, RunDir(run_dir), loaded, flags)
        spec = _augment_spec(spec, RunDir(run_dir), flags)
        source = open_source(spec)  # a resume: refused when the folder changed
        ratio = getattr(source, "ratio", None)
        spec = replace(spec, split=ratio.to_dict() if ratio is not None else None)
        config = replace(config, data=spec.with_fingerprint(source.fingerprint()))
    # an input shape taken from the data is recorded: workers and a resume load alike
    config = replace(config, model=config.model.with_data_shape(loaded))
    check_model_and_data(loaded, source)  # sample shape, labels < the model's outputs
    source = in_model_order(source, loaded.inputs)  # torch takes the inputs by position
    if source is not None:
        _check_metric_defined(config, source)
    if config.storage:  # a shared study: reachable, and started with these settings
        check_joinable(config, config.storage)
    if config.artifacts:
        open_store(config.artifacts)  # a folder every machine writes to: fail fast if not
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    with run.lock("setup"):
        run.write_config(config)
        if is_streamed(source) and not run.data_file.exists():
            assert source is not None
            write_json(run.data_file, {**source.describe(), "eval_samples": EVAL_SAMPLES})
        if run.baseline_file.exists():
            baseline = run.read_baseline()
        else:
            salt = _salt(config, source)
            baseline = _make_baseline(
                config, loaded, source, targets.profiles, run, salt, search_timeout_s
            )
            run.write_baseline(baseline)
    open_study(SearchContext.open(run.path, targets=targets))
    return baseline


def _make_baseline(
    config: RunConfig,
    loaded: Any,
    data: DataSource | None,
    profiles: Sequence[HardwareProfile],
    run: RunDir,
    salt: str,
    search_timeout_s: float | None = None,
) -> Baseline:
    from edgeopt.onnx_export import loaded_to_onnx

    run.baseline_dir.mkdir(parents=True, exist_ok=True)
    sample = first_inputs(data, "val", 8) if data is not None else None
    if sample is None and not loaded.inputs.is_single:  # no float stand-in for token ids
        sample = loaded.inputs.synthetic(8, seed=config.seed)
    if sample is not None:  # what workers time candidates on, without opening the data
        np.save(run.sample_file, sample)
    src = Path(loaded_to_onnx(loaded, run.baseline_dir, sample))
    dst = run.baseline_onnx
    if src != dst:
        dst.write_bytes(src.read_bytes())
        if src.parent == run.baseline_dir:
            src.unlink()
    carry(dst, config.data.recipe if config.data else None)  # what the app must repeat
    if data is not None:
        val = source_task_metric(dst, data, "val", config.metric)
        test = source_task_metric(dst, data, "test", config.metric)
    else:
        val = test = 1.0  # fidelity of the model to itself
    latency: dict[str, float] = {}
    # for targets that run another runtime (LiteRT's from the torch module)
    originals = convert_originals(run, profiles, loaded.module, tuple(loaded.input_shape))
    for p in profiles:
        if p.measured:  # on the profile's runner: this host or its [runner] device
            latency[p.name] = reference_latency_ms(
                originals.get(p.name, dst),
                p,
                input_shape=loaded.input_shape,
                sample=sample,
                time_budget_s=BASELINE_LATENCY_BUDGET_S,
            )
    return Baseline(
        salt=salt,
        input_shape=tuple(loaded.input_shape),
        onnx_input=bool(loaded.is_onnx),
        host=host_description(),
        accuracy_kind="accuracy" if data is not None else "fidelity",
        val_accuracy=val,
        test_accuracy=test,
        host_latency_ms=latency,
        hopeless_below=_hopeless_below(config, val),
        synthetic_inputs=None if data is not None else SYNTHETIC_N,
        **_probe_fields(config, loaded, data, dst, search_timeout_s),
    )


def _probe_fields(
    config: RunConfig,
    loaded: Any,
    data: DataSource | None,
    onnx_path: Path,
    search_timeout_s: float | None,
) -> dict[str, Any]:
    """Every stage's ``probe`` of the model (``Baseline.stage_facts``; for an ONNX input
    the probes see the file only) and the auto trial timeout from their measured costs."""
    model = ProbeInput(
        module=None if loaded.is_onnx else loaded.module,
        onnx_path=onnx_path,
        input_shape=tuple(loaded.input_shape),
        inputs=None if loaded.inputs.is_single else loaded.inputs,
        data=data,
        threads=config.threads,
        search_timeout_s=search_timeout_s,
    )
    facts = {name: dict(stage.probe(model)) for name, stage in STAGES.items()}
    release_free_memory()  # the probes' training steps: freed, but kept by the allocator
    cost = stage_seconds(facts)
    return {"stage_facts": facts, "auto_timeout_s": None if cost is None else auto_timeout(cost)}


def stage_seconds(stage_facts: Mapping[str, Mapping[str, Any]]) -> float | None:
    """Every stage's measured ``trial_seconds`` from its probe's facts (the longest fine-tune
    and the longest QAT), added up; None where none measured one (an ONNX input)."""
    costs = [STAGES[name].trial_seconds(f) for name, f in stage_facts.items()]
    return sum(c for c in costs if c is not None) if any(c is not None for c in costs) else None


TIMEOUT_OVERHEAD_S = 120.0
"""The auto trial timeout allows the stages' measured costs plus this much for start-up,
pruning, export, quantization and scoring."""
TIMEOUT_MIN_S = 180.0


def auto_timeout(stage_seconds: float) -> float:
    """The default per-trial timeout when the stages may take ``stage_seconds`` in a trial."""
    return round(max(TIMEOUT_MIN_S, stage_seconds + TIMEOUT_OVERHEAD_S), 1)


def _salt(config: RunConfig, source: DataSource | None) -> str:
    """Identifies model + data (``source``) + seed: part of every cache key."""
    h = hashlib.sha256(Path(config.model.path).read_bytes())
    if source is not None:
        add_to_salt(h, source)
    h.update(str(config.seed).encode())
    return h.hexdigest()[:16]


def _check_metric_defined(config: RunConfig, data: DataSource) -> None:
    """ConfigError, before any work, when ``--metric`` is undefined on a split."""
    where = (config.data.path or "the --data callable") if config.data else None
    check_defined(config.metric, data.labels("val"), f"the validation split of {where}")
    if "test" in data.splits:
        check_defined(config.metric, data.labels("test"), f"the test split of {where}")


def _check_callable_named(run: RunDir) -> None:
    """ConfigError when ``run`` records callable data, which a command line without
    ``--data`` cannot resume: the record never names the code (``DataSpec.check_named``)."""
    recorded = run.read_config().data if run.run_file.exists() else None
    if recorded is not None:
        recorded.check_named()


def _callable_spec(spec: DataSpec, run: RunDir) -> DataSpec:
    """A callable's spec with the fingerprint the run recorded when it resumes (checked when
    the data opens), else as given."""
    recorded = run.read_config().data if run.run_file.exists() else None
    if spec.fingerprint is None and recorded is not None and recorded.kind is spec.kind:
        return replace(spec, fingerprint=recorded.fingerprint)
    return spec


def _folder_spec(spec: DataSpec, run: RunDir, loaded: Any, flags: RecipeFlags) -> DataSpec:
    """An image folder's spec with its preprocessing: the one the run recorded when it
    resumes (with its split and fingerprint, checked when the folder opens; flags that give
    another recipe are a ConfigError naming both), else the spec's own, else the one the
    model carries (ONNX metadata), the flags give or the default for its input shape
    (``choose_recipe``), checked against the model."""
    input_shape = tuple(loaded.input_shape)
    recorded = run.read_config().data if run.run_file.exists() else None
    if recorded is None or (recorded.kind, recorded.path) != (spec.kind, spec.path):
        recorded = None
    if spec.recipe is not None:
        recipe = Preprocess.from_dict(spec.recipe)
        recipe.check(input_shape)
        return replace(spec, recipe=recipe.to_dict())
    if recorded is not None and recorded.recipe is not None and not flags.any():
        return recorded
    carried = read_recipe(loaded.onnx_path) if loaded.is_onnx else None
    chosen = choose_recipe(input_shape, [(str(loaded.source), carried)], flags).recipe
    if recorded is not None and recorded.recipe is not None:
        was = Preprocess.from_dict(recorded.recipe)
        if was != chosen:
            raise ConfigError(
                f"{flags.flags()} gives the preprocessing {chosen.describe()}, but the run in "
                f"{run.path} was recorded with {was.describe()}",
                hint="drop those settings to resume with the recorded preprocessing, or use "
                "another --out directory",
            )
        return recorded
    return replace(spec, recipe=chosen.to_dict())


def _augment_spec(spec: DataSpec, run: RunDir, flags: RecipeFlags) -> DataSpec:
    """An image folder's spec with its training augmentation: the one the flags (or the
    config table) give, else the one the run recorded when it resumes (the default for a run
    recorded before the setting), else the spec's own. Settings that differ from the recorded
    one are a ConfigError naming both."""
    given = flags.augmentation()
    recorded = run.read_config().data if run.run_file.exists() else None
    if recorded is None or (recorded.kind, recorded.path) != (spec.kind, spec.path):
        recorded = None  # not this run's folder: write_config refuses it
    if given is None:
        return spec if recorded is None else replace(spec, augment=recorded.augment)
    if recorded is not None and recorded.augmentation != given:
        raise ConfigError(
            f"{flags.setting('augment')} differs from the augmentation the run in {run.path} "
            f"was recorded with ({recorded.augmentation})",
            hint="drop that setting to resume with the recorded augmentation, or use another "
            "--out directory",
        )
    return replace(spec, augment=str(given))


def _hopeless_below(config: RunConfig, val_accuracy: float) -> float | None:
    """A fine-tune whose first epoch ends under 3/4 of the accuracy budget is abandoned.
    Only for ``--metric accuracy``: the epoch's number is top-1 accuracy, which bounds no
    other metric."""
    if config.metric != "accuracy":
        return None
    b = config.budgets
    bars = []
    if b.min_accuracy is not None:
        bars.append(b.min_accuracy)
    if b.max_accuracy_drop is not None:
        bars.append(val_accuracy - b.max_accuracy_drop)
    return 0.75 * max(bars) if bars else None


def finalize(
    run_dir: Path, targets: Targets | None = None, data_ref: str | None = None
) -> dict[str, Any]:
    """``_finalize``; a stop signal (KeyboardInterrupt) keeps what was saved and returns it
    (the report says what is missing). ``targets``: as the entry point resolved them;
    ``data_ref``: the command line's ``--data module:callable`` (never recorded)."""
    try:
        return _finalize(run_dir, targets, data_ref)
    except KeyboardInterrupt:
        log.warning("final numbers interrupted; what was saved stands")
        return RunDir(run_dir).read_final()


def _finalize(run_dir: Path, targets: Targets | None, data_ref: str | None) -> dict[str, Any]:
    """Test-split accuracy for the front and the baselines (never seen by the search).

    Stored in ``final.json`` as ``{"test_accuracy": {trial number: value}, "test_split",
    "task_metrics": {trial number: {"val": {metric: entry}, "test": {...}}},
    "built_elsewhere": {trial number: machine}}`` (the last: trials another machine built
    without an artifact store, which only that machine can score) and in the
    study (``shared.record_test_numbers``), so that every machine's report has them.
    ``test_accuracy`` is the run's ``--metric`` on the ONNX candidate, ``target_test_accuracy``
    (``{trial number: {target: value}}``) the same through each target's own runtime where it
    loads a converted file (an OpenVINO IR, a .ort); ``task_metrics`` (labelled data only) holds
    all of ``edgeopt.metrics.TASK_METRICS`` with intervals
    (``edgeopt.measure.task_metrics.task_metric_entries``). A trial another machine built is
    read from the artifact store; one already scored by any machine is not scored again.
    """
    from edgeopt.search.study.source import BuiltElsewhere, RunSource, scratch_dir

    run = RunDir(run_dir)
    opened = RunSource.local(run.path).open()
    study, config = opened.study, opened.config
    local_baseline = run.read_baseline()
    spec = config.data.with_ref(data_ref) if config.data else None
    data = open_source(spec, verify=False) if spec else None  # set-up checked it
    final = dict(opened.final)
    final.setdefault("task_metrics", {})
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    wanted = {t.number for t in study.best_trials} if complete else set()
    wanted |= {t.number for t in complete if t.user_attrs.get("baseline")}
    elsewhere: dict[str, str] = {}
    interrupted = False
    profiles = run_targets(config, targets).profiles

    def score(path: Path, hint: str) -> float:  # test split, in ``path``'s runtime
        if data is None:
            shape = config.model.inputs or local_baseline.input_shape  # inputs: several
            x, y = scoring_inputs(data, "test", shape)
            return onnx_score(path, x, y, reference=run.baseline_onnx, precision_hint=hint)
        return source_task_metric(path, data, "test", config.metric, precision_hint=hint)

    with scratch_dir() as tmp, shared_runtime_child():  # one runtime child scores every file
        for t in complete:
            key = str(t.number)
            done = key in final["test_accuracy"] and (data is None or key in final["task_metrics"])
            if t.number not in wanted or done:
                continue
            record = {
                "number": t.number,
                "onnx": t.user_attrs.get("onnx"),
                "onnx_sha256": t.user_attrs.get("onnx_sha256"),
                "artifacts": trial_artifacts(t.system_attrs),
                "machine": t.user_attrs.get("machine"),
            }
            try:
                onnx = opened.trial_onnx(record, Path(tmp))
                scores = target_scores(run, recorded(t.user_attrs), profiles, score)
                if scores:
                    final.setdefault("target_test_accuracy", {})[key] = scores
                if data is None:
                    final["test_accuracy"][key] = score(onnx, "f32")
                    continue
                task = {s: source_task_metric_entries(onnx, data, s) for s in ("val", "test")}
            except BuiltElsewhere:  # that machine scores it when it finishes
                machine = (t.user_attrs.get("machine") or {}).get("hostname", "another machine")
                elsewhere[key] = str(machine)
                continue
            except KeyboardInterrupt:  # a stop signal: keep what is scored, report the rest
                log.warning("test-split scoring interrupted at trial %s; the rest unscored", key)
                interrupted = True
                break
            final["task_metrics"][key] = task
            final["test_accuracy"][key] = task["test"][config.metric]["value"]
    final["built_elsewhere"] = elsewhere
    if data is None:
        final["test_split"] = "synthetic"
    else:
        final["test_split"] = "test" if "test" in data.splits else "val"
    run.write_final(final)
    record_test_numbers(study, final)
    if interrupted:
        return final  # and no final re-measure
    # then host latency of the same trials, re-measured in one pass (final_measure: the
    # numbers above are saved first, so a Ctrl-C during the pass loses nothing)
    sample = run_sample(run, data)
    chosen = [t for t in complete if t.number in wanted]
    return add_final_latency(opened, run, final, chosen, profiles, sample=sample)


def run_sample(run: RunDir, data: DataSource | None) -> np.ndarray | None:
    """One validation input to time candidates on: from ``baseline/sample.npy`` (a run set up
    before it existed: from ``data``; synthetic for a data-free model with several inputs);
    None without data for one float input."""
    if run.sample_file.exists():
        return np.load(run.sample_file)[:1]
    if data is None:
        return None
    return first_inputs(data, "val", 1)
