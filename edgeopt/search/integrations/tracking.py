"""MLflow tracking of a search: ``edgeopt optimize --mlflow [URI]``.

One parent run per study (run name = the study's name; params = the settings that define the
search; tags = targets, objectives, edgeopt version) and one nested child run per finished
trial: its Optuna params, its numbers as metrics each with a ``provenance.<metric>`` tag
(measured / estimated), its state and baseline name as tags, and its ONNX file as an artifact.

The parent is found again by the tag ``edgeopt.study_key``, a random id the study itself
records (study user attribute ``edgeopt:uid``), so a resumed run, another worker process and
another machine sharing the study all log under the same parent, and a trial with a child run
already is not logged twice. The tracking URI is the command line's: it is not written to
``run.json`` and pooled workers get it as an argument.

Each worker logs its own trials as they finish; the process that started the search also logs,
before and after it, any finished trial without a child run (trials from an earlier run
without ``--mlflow``, or ones a failure left out). A tracking server that does not answer at
start-up is a usage error (``check_uri``); later, logging never stops the search: the first
failure is one warning line, and this process logs nothing more. MLflow's HTTP retries and
timeouts are bounded (``mlflow_http``), so that failure costs seconds, not minutes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgeopt import __version__
from edgeopt.errors import ConfigError
from edgeopt.metrics import Metric
from edgeopt.records import TrialRecord
from edgeopt.records import TrialState as RecordState
from edgeopt.search.integrations.mlflow_http import bound_http_requests, is_http, probe
from edgeopt.search.study.records import trial_record

if TYPE_CHECKING:
    from edgeopt.search.study.context import SearchContext

log = logging.getLogger(__name__)

DEFAULT_URI = ""
"""``--mlflow`` without a value: an SQLite store in the run directory (``default_uri``)."""
DB_NAME = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
EXPERIMENT = "edgeopt"  # MLFLOW_EXPERIMENT_NAME, MLflow's own variable, overrides it
UID_ATTR = "edgeopt:uid"
STUDY_KEY_TAG = "edgeopt.study_key"
TRIAL_TAG = "edgeopt.trial"
PARENT_TAG = "mlflow.parentRunId"
INSTALL_HINT = "pip install 'edgeopt[mlflow]'"

# MLflow's run status for each finished trial state
_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}
_TIMINGS = ("build_s", "measure_s", "trial_s")  # seconds, measured by the worker
_PARAM_MAX = 6000  # MLflow's limit on a param value
_TAG_MAX = 5000
_BATCH = 100  # MLflow's limit on params (and tags) per log_batch call


def require_mlflow() -> None:
    """Raise ConfigError (exit 2) when MLflow is not installed; call before any search work."""
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "--mlflow needs MLflow, which is not installed", hint=INSTALL_HINT
        ) from exc


def resolve_uri(value: str, run_dir: Path) -> str:
    """The tracking URI for ``--mlflow VALUE``: ``DEFAULT_URI`` is ``sqlite:///RUN_DIR/mlflow.db``
    (MLflow 3 refuses new file stores), a relative SQLite path is made absolute (workers may
    start elsewhere), and anything else is passed to MLflow as it is."""
    if value == DEFAULT_URI:
        return "sqlite:///" + str((run_dir / DB_NAME).resolve())
    if value.startswith("sqlite:///") and not value.startswith("sqlite:////"):
        rest = value.removeprefix("sqlite:///")
        if rest and not rest.startswith(":memory:"):
            return "sqlite:///" + str(Path(rest).resolve())
    return value


def check_uri(uri: str) -> None:
    """Raise ConfigError when MLflow cannot use ``uri`` as a tracking store (an unknown
    scheme, a file store, a database it cannot open, a server that does not answer within
    a few seconds). Bounds MLflow's HTTP retries and timeouts for this process and the
    workers it starts (``mlflow_http``). Call before any search work."""
    from mlflow.tracking import MlflowClient

    _quiet_mlflow_logs()
    bound_http_requests()
    try:
        MlflowClient(tracking_uri=uri)
    except Exception as exc:
        hint = "use sqlite:///PATH/mlflow.db, http://HOST:PORT, or --mlflow alone for a store "
        hint += "in the run directory"
        raise ConfigError(f"--mlflow {uri}: {_first_line(exc)}", hint=hint) from exc
    if is_http(uri):
        probe(uri, os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT)


class Tracker:
    """Logs one study's trials to MLflow for one process. Build it with ``join``."""

    def __init__(self, client: Any, experiment_id: str, parent_id: str, ctx: SearchContext):
        self.client = client
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        self.ctx = ctx
        self.failed = False

    @classmethod
    def join(
        cls, uri: str, ctx: SearchContext, study: optuna.Study, *, reopen: bool = False
    ) -> Tracker | None:
        """The study's parent run in ``uri``, created on first use. ``reopen`` (the process
        that starts the search) marks a finished parent running again. Returns None, after
        one warning, when MLflow fails: the search goes on without it."""
        try:
            from mlflow.tracking import MlflowClient

            _quiet_mlflow_logs()
            bound_http_requests()  # a worker started by hand has not run check_uri
            client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment(client, uri)
            uid = study.user_attrs.get(UID_ATTR)
            if uid is None:
                uid = uuid.uuid4().hex
                study.set_user_attr(UID_ATTR, uid)
            parent = _find_parent(client, experiment_id, str(uid))
            if parent is None:
                parent = _create_parent(client, experiment_id, str(uid), ctx, study)
            elif reopen and parent.info.status != "RUNNING":
                client.update_run(parent.info.run_id, status="RUNNING")
            return cls(client, experiment_id, parent.info.run_id, ctx)
        except Exception as exc:
            _warn(exc)
            return None

    def log_trial(self, study: optuna.Study, number: int) -> None:
        """Log finished trial ``number`` as a child run, unless it has one already."""
        if self.failed:
            return
        try:
            trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
            if trial is None or trial.state not in _STATUS:
                return
            if number not in self._logged(number):
                self._log(trial)
        except Exception as exc:
            self._fail(exc)

    def catch_up(self, study: optuna.Study) -> None:
        """Log every finished trial without a child run (call while no worker runs)."""
        if self.failed:
            return
        try:
            logged = self._logged()
            for trial in study.get_trials(deepcopy=False, states=tuple(_STATUS)):
                if trial.number not in logged:
                    self._log(trial)
        except Exception as exc:
            self._fail(exc)

    def finish(self, *, stopped: bool) -> None:
        """Mark the parent run finished (KILLED after a Ctrl-C: re-running resumes it)."""
        if self.failed:
            return
        try:
            self.client.set_terminated(self.parent_id, "KILLED" if stopped else "FINISHED")
        except Exception as exc:
            self._fail(exc)

    # ------------------------------------------------------------------ internals
    def _fail(self, exc: Exception) -> None:
        self.failed = True
        _warn(exc)

    def _children(self, number: int | None = None) -> Iterator[Any]:
        query = f"tags.`{PARENT_TAG}` = '{self.parent_id}'"
        if number is not None:
            query += f" and tags.`{TRIAL_TAG}` = '{number}'"
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=query, max_results=1000, page_token=token
            )
            yield from page
            token = page.token
            if not token:
                return

    def _logged(self, number: int | None = None) -> set[int]:
        """Trial numbers with a complete child run. A child left RUNNING (its process died
        while logging it) is deleted, so the trial is logged again."""
        done = set()
        for run in self._children(number):
            if run.info.status == "RUNNING":
                self.client.delete_run(run.info.run_id)
            else:
                done.add(int(run.data.tags[TRIAL_TAG]))
        return done

    def _log(self, t: FrozenTrial) -> None:
        from mlflow.entities import Metric as MlMetric
        from mlflow.entities import Param, RunTag

        rec = trial_record(t, self._objective_names(t))
        tags = {
            PARENT_TAG: self.parent_id,
            TRIAL_TAG: str(t.number),
            "edgeopt.state": t.state.name,
            "edgeopt.candidate": str(rec.describe),
            "edgeopt.logged_by": f"{socket.gethostname()}:{os.getpid()}",
        }
        if rec.baseline:
            tags["edgeopt.baseline"] = rec.baseline
        if t.user_attrs.get("worker"):  # who ran it: not part of the run's record
            tags["edgeopt.worker"] = str(t.user_attrs["worker"])
        reason = rec.fail_reason or rec.stopped_reason
        if reason:
            tags["edgeopt.reason"] = str(reason)[:_TAG_MAX]
        if rec.fail_stage:
            tags["edgeopt.fail_stage"] = rec.fail_stage
        run = self.client.create_run(
            self.experiment_id,
            start_time=_ms(t.datetime_start),
            tags=tags,
            run_name=f"trial-{t.number}",
        )
        run_id = run.info.run_id
        stamp = _ms(t.datetime_complete) or 0
        numbers = record_numbers(rec)
        metrics = [MlMetric(k, v, stamp, 0) for k, (v, _) in numbers.items()]
        provenance = [RunTag(f"provenance.{k}", p) for k, (_, p) in numbers.items()]
        params = [Param(k, str(v)[:_PARAM_MAX]) for k, v in t.params.items()]
        for i in range(0, max(len(params), len(provenance), 1), _BATCH):
            self.client.log_batch(
                run_id,
                metrics=metrics if i == 0 else [],
                params=params[i : i + _BATCH],
                tags=provenance[i : i + _BATCH],
            )
        onnx = self._onnx(rec)
        if onnx is not None:
            self.client.log_artifact(run_id, str(onnx), "onnx")
        self.client.set_terminated(run_id, _STATUS[t.state], end_time=_ms(t.datetime_complete))

    def _objective_names(self, t: FrozenTrial) -> list[str]:
        return [o.name for o in self.ctx.objectives] if t.values else []

    def _onnx(self, rec: TrialRecord) -> Path | None:
        """The trial's ONNX file when this machine has it (it may be on another one)."""
        if rec.state is not RecordState.COMPLETE or not rec.onnx:
            return None
        path = self.ctx.run.inside(rec.onnx)
        return path if path.is_file() else None


def trial_numbers(t: FrozenTrial, objective_names: list[str]) -> dict[str, tuple[float, str]]:
    """A finished trial's numbers (``record_numbers``), its objectives named
    ``objective_names``."""
    return record_numbers(trial_record(t, objective_names))


def record_numbers(rec: TrialRecord) -> dict[str, tuple[float, str]]:
    """A trial's numbers as MLflow metric name -> (value, provenance).

    The objectives under their names (``latency_ms[mobile]`` -> ``latency_ms.mobile``; with
    one target, just ``latency_ms``), every other number measured or estimated per target,
    validation ``accuracy`` when it is no objective, and the worker's timings in seconds."""
    single = len(rec.measurements) <= 1
    out: dict[str, tuple[float, str]] = {}
    for target, entries in rec.measurements.items():
        for metric, entry in entries.items():
            key = metric if single or not _per_target(metric) else f"{metric}.{target}"
            _put(out, key, entry.value, str(entry.provenance or "measured"))
    for name, value in rec.values.items():
        metric, _, target = name.partition("[")
        key = metric if single or not target else f"{metric}.{target.rstrip(']')}"
        if key not in out:  # accuracy: validation, measured with ORT on the worker
            _put(out, key, value, "measured")
    if "accuracy" not in out:
        _put(out, "accuracy", rec.val_accuracy, "measured")
    for key in _TIMINGS:
        _put(out, key, getattr(rec.timing, key), "measured")
    return out


def _put(out: dict[str, tuple[float, str]], key: str, value: Any, provenance: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if math.isfinite(value):
        out[_safe_key(key)] = (float(value), provenance)


def _per_target(metric: str) -> bool:
    try:
        return Metric(metric).per_target
    except ValueError:
        return True


def _safe_key(key: str) -> str:
    """``key`` with the characters MLflow refuses in names replaced."""
    return re.sub(r"[^\w.\-/ :]", "_", key)


def _experiment(client: Any, uri: str) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=_artifact_root(uri)))
    except Exception:  # another process created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _artifact_root(uri: str) -> str | None:
    """An SQLite store keeps its artifacts beside the database (``mlartifacts/``), not in
    the current directory; a server decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return str(Path(uri.removeprefix("sqlite:///")).parent / ARTIFACT_DIR)


def _find_parent(client: Any, experiment_id: str, uid: str) -> Any:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{STUDY_KEY_TAG}` = '{uid}'",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0] if runs else None


def _create_parent(
    client: Any, experiment_id: str, uid: str, ctx: SearchContext, study: optuna.Study
) -> Any:
    from mlflow.entities import Param

    tags = {
        STUDY_KEY_TAG: uid,
        "edgeopt.study": ctx.config.study_name,
        "edgeopt.targets": ",".join(p.name for p in ctx.profiles),
        "edgeopt.objectives": ",".join(o.name for o in ctx.objectives),
        "edgeopt.version": __version__,
        "edgeopt.run_dir": str(ctx.run.path.resolve()),
    }
    run = client.create_run(experiment_id, tags=tags, run_name=ctx.config.study_name)
    params = [Param(k, v[:_PARAM_MAX]) for k, v in search_params(ctx.config.search_key()).items()]
    for i in range(0, len(params), _BATCH):
        client.log_batch(run.info.run_id, params=params[i : i + _BATCH])
    return run


def search_params(key: Mapping[str, Any]) -> dict[str, str]:
    """The search key flattened to MLflow params: ``model.path``, ``budgets.max_size_mb``,
    ``targets`` = ``mobile,cpu``; unset values left out."""
    out: dict[str, str] = {}
    for name, value in key.items():
        if isinstance(value, Mapping):
            for sub, v in search_params(value).items():
                out[f"{name}.{sub}"] = v
        elif isinstance(value, list | tuple):
            if value:
                out[name] = ",".join(map(str, value))
        elif value is not None:
            out[name] = json.dumps(value) if isinstance(value, bool) else str(value)
    return out


def _ms(when: Any) -> int | None:
    return int(when.timestamp() * 1000) if when is not None else None


_warned = False


def _warn(exc: BaseException) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "MLflow logging stopped (%s); the search goes on, and re-running with --mlflow logs "
            "the trials left out",
            _first_line(exc),
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def _quiet_mlflow_logs() -> None:
    # MLflow and alembic announce database creation and migrations at INFO on stderr
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
