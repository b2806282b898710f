"""``optimize --mlflow``: real searches logged to real MLflow stores, read back with MlflowClient:
one parent run per study, one child per trial with its params, numbers, provenance and ONNX
file, no duplicates on resume, and failures that never stop the search."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from edgeopt.cli import main
from edgeopt.search.integrations.tracking import (
    DEFAULT_URI,
    resolve_uri,
    search_params,
    trial_numbers,
)

mlflow_tracking = pytest.importorskip("mlflow.tracking")
# MLflow's SQLAlchemy store uses a loader strategy SQLAlchemy 2.1 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")

PARENT = "mlflow.parentRunId"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no report home from tests
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # pooled workers inherit it
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


def _optimize(model: Path, data: Path, out: Path, *extra: str) -> Any:
    args = ["optimize", str(model), "--data", str(data), "--target", "mobile", "--out", str(out)]
    return CliRunner().invoke(main, [*args, "--no-report", *extra])


def _runs(uri: str) -> tuple[Any, Any, list[Any]]:
    """(client, parent run, child runs by trial number) of the ``edgeopt`` experiment."""
    client = mlflow_tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("edgeopt")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if PARENT not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    children = sorted(
        (r for r in runs if PARENT in r.data.tags), key=lambda r: int(r.data.tags["edgeopt.trial"])
    )
    assert all(r.data.tags[PARENT] == parents[0].info.run_id for r in children)
    return client, parents[0], children


def _study(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run_dir / 'study.db'}")


def _finished(run_dir: Path) -> list[Any]:
    # queued (WAITING) trials are not run yet, so have no MLflow run
    return _study(run_dir).get_trials(states=FINISHED)


def _check_child(client: Any, child: Any, trial: Any, run_dir: Path, tmp: Path) -> None:
    """The child run holds exactly what the study recorded for ``trial``."""
    tags, metrics = child.data.tags, child.data.metrics
    assert tags["edgeopt.state"] == trial.state.name
    assert child.data.params == {k: str(v) for k, v in trial.params.items()}
    if trial.user_attrs.get("baseline"):
        assert tags["edgeopt.baseline"] == trial.user_attrs["baseline"]
    if trial.state != TrialState.COMPLETE:
        return
    names = _study(run_dir).user_attrs["objectives"]  # accuracy, latency_ms[...], size_mb
    values = dict(zip(names, trial.values, strict=True))
    latency = next(v for k, v in values.items() if k.startswith("latency_ms["))
    assert metrics["latency_ms"] == pytest.approx(latency)
    assert metrics["size_mb"] == pytest.approx(values["size_mb"])
    assert metrics["accuracy"] == pytest.approx(values["accuracy"])
    # the mobile profile is estimated; file size and accuracy are measured on this host
    assert tags["provenance.latency_ms"] == "estimated"
    assert tags["provenance.energy_mj"] == "estimated"
    assert tags["provenance.size_mb"] == "measured"
    assert tags["provenance.accuracy"] == "measured"
    assert all(f"provenance.{k}" in tags for k in metrics)
    got = client.download_artifacts(child.info.run_id, "onnx/model.onnx", str(tmp))
    assert Path(got).read_bytes() == (run_dir / trial.user_attrs["onnx"]).read_bytes()


def test_default_store_has_one_parent_a_child_per_trial_and_resume_adds_no_duplicates(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    out = tmp_path / "run"
    res = _optimize(model_files["onnx"], tiny_data, out, "--trials", "3", "--mlflow")
    assert res.exit_code == 0, res.output
    uri = f"sqlite:///{out / 'mlflow.db'}"
    client, parent, children = _runs(uri)
    assert parent.info.run_name == "edgeopt" and parent.info.status == "FINISHED"
    assert parent.data.params["targets"] == "mobile"
    assert parent.data.params["sampler"] == "tpe" and parent.data.params["seed"] == "0"
    assert parent.data.tags["edgeopt.targets"] == "mobile-sd8gen2"
    assert parent.data.tags["edgeopt.version"]
    assert [c.data.tags["edgeopt.trial"] for c in children] == ["0", "1", "2"]
    trials = _finished(out)
    for child, trial in zip(children, trials, strict=True):
        _check_child(client, child, trial, out, tmp_path / f"dl{trial.number}")
    assert (out / "mlartifacts").is_dir()  # artifacts stay in the run directory

    # resumed by two pooled workers: they log the new trials under the same parent
    res = _optimize(
        model_files["onnx"], tiny_data, out, "--trials", "5", "--workers", "2", "--mlflow"
    )
    assert res.exit_code == 0, res.output
    client, again, children = _runs(uri)
    assert again.info.run_id == parent.info.run_id
    assert [c.data.tags["edgeopt.trial"] for c in children] == ["0", "1", "2", "3", "4"]
    for child in children[3:]:  # each worker process logged the trial it ran
        assert child.data.tags["edgeopt.logged_by"] == child.data.tags["edgeopt.worker"]
        assert child.data.tags["edgeopt.worker"] != f"{socket.gethostname()}:{os.getpid()}"
    assert len(_finished(out)) == 5


def test_an_explicit_sqlite_uri_also_logs_trials_run_before_without_mlflow(
    tmp_path: Path, model_files: dict, tiny_data: Path, onnx_run: Path
) -> None:
    out = tmp_path / "run"
    shutil.copytree(onnx_run, out)  # 2 trials run without --mlflow (``_optimize``'s settings)
    db = tmp_path / "tracking" / "t.db"
    db.parent.mkdir()
    res = _optimize(
        model_files["onnx"], tiny_data, out, "--trials", "3", f"--mlflow=sqlite:///{db}"
    )
    assert res.exit_code == 0, res.output
    client, parent, children = _runs(f"sqlite:///{db}")
    assert [c.data.tags["edgeopt.trial"] for c in children] == ["0", "1", "2"]  # 0, 1: caught up
    for child, trial in zip(children, _finished(out), strict=True):
        _check_child(client, child, trial, out, tmp_path / f"dl{trial.number}")
    assert (db.parent / "mlartifacts").is_dir()  # beside the database, not in the cwd
    assert not (out / "mlflow.db").exists()


def test_without_mlflow_installed_the_flag_is_a_usage_error_before_any_work(
    tmp_path: Path, model_files: dict, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    out = tmp_path / "run"
    res = _optimize(model_files["onnx"], tiny_data, out, "--trials", "1", "--mlflow")
    assert res.exit_code == 2
    assert "--mlflow needs MLflow" in res.stderr and "edgeopt[mlflow]" in res.stderr
    assert not out.exists()


def test_a_file_store_uri_is_refused_before_any_work(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    out = tmp_path / "run"
    res = _optimize(model_files["onnx"], tiny_data, out, f"--mlflow=file://{tmp_path / 'mlruns'}")
    assert res.exit_code == 2
    assert "Error: --mlflow file://" in res.stderr and "sqlite:///" in res.stderr
    assert not out.exists()


def _cli(model: Path, data: Path, out: Path, uri: str, timeout_s: float) -> tuple[Any, float]:
    """``edgeopt optimize ... --mlflow=URI`` in its own process, with MLflow's own HTTP
    settings (none of ours in the environment): (completed process, seconds it took)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_")}
    args = ["optimize", model, "--data", data, "--target", "mobile"]
    args += ["--out", out, "--trials", "1", "--no-report", f"--mlflow={uri}"]
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", "from edgeopt.cli import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )
    return proc, time.monotonic() - t0


def _closed_port() -> int:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_tracking_server_that_does_not_answer_is_a_usage_error_within_seconds(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """MLflow's own retries held this silent for minutes before any work."""
    uri = f"http://127.0.0.1:{_closed_port()}"
    out = tmp_path / "run"
    proc, took = _cli(model_files["onnx"], tiny_data, out, uri, timeout_s=60)
    assert proc.returncode == 2, proc.stderr
    assert f"Error: MLflow tracking server {uri} does not answer (connection refused)" in (
        proc.stderr
    )
    assert "Hint: start it" in proc.stderr and "drop --mlflow" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert took < 30, took
    assert not out.exists()  # no run directory, no trial


def test_a_tracking_server_that_accepts_but_never_answers_is_a_usage_error(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    with socket.socket() as s:  # connections are accepted by the kernel; nothing answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
        out = tmp_path / "run"
        proc, took = _cli(model_files["onnx"], tiny_data, out, uri, timeout_s=90)
    assert proc.returncode == 2, proc.stderr
    assert f"MLflow tracking server {uri} does not answer within 5 s" in proc.stderr
    assert took < 45, took
    assert not out.exists()


@contextlib.contextmanager
def _http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering with ``handler``: its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Tests keep stderr for their own output."""

    def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _NotMlflow(_Quiet):
    """Some other web server: 404 pages for every path."""

    def do_GET(self) -> None:
        self._answer(404, b"<html>Not Found</html>", "text/html")

    do_POST = do_GET


class _FailsAfterStart(_Quiet):
    """MLflow's answer for an experiment not created yet, then 429 (too many requests) for
    everything: MLflow retries those, by default 7 times over about four minutes."""

    def do_GET(self) -> None:
        if self.path.startswith("/api/2.0/mlflow/experiments/get-by-name"):
            body = b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no experiment"}'
            self._answer(404, body)
        else:
            self._answer(429, b'{"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "busy"}')

    def do_POST(self) -> None:
        self._answer(429, b'{"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "busy"}')


def test_a_web_server_that_is_no_mlflow_server_is_a_usage_error(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    out = tmp_path / "run"
    with _http_server(_NotMlflow) as uri:
        proc, _ = _cli(model_files["onnx"], tiny_data, out, uri, timeout_s=120)
    assert proc.returncode == 2, proc.stderr
    assert f"{uri} does not answer as an MLflow tracking server (HTTP 404" in proc.stderr
    assert not out.exists()


def test_a_server_failing_after_start_warns_once_and_the_search_goes_on_at_once(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """The probe passes; every later call fails, and MLflow's retries are bounded."""
    out = tmp_path / "run"
    with _http_server(_FailsAfterStart) as uri:
        proc, took = _cli(model_files["onnx"], tiny_data, out, uri, timeout_s=150)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "MLflow logging stopped" in line]
    assert len(warnings) == 1, proc.stderr
    assert len(_finished(out)) == 1
    assert took < 100, took


def test_numbers_of_a_two_target_trial_are_named_per_target_with_their_provenance() -> None:
    def mv(value: float, provenance: str) -> dict[str, Any]:
        return {"value": value, "provenance": provenance}

    trial = optuna.trial.create_trial(
        params={"quantize.mode": "int8_static"},
        distributions={"quantize.mode": CategoricalDistribution(["fp32", "int8_static"])},
        values=[0.9, 1.5, 0.25, 0.01],
        user_attrs={
            "val_accuracy": 0.9,
            "build_s": 2.0,
            "measurements": {
                "host-cpu": {"values": {"latency_ms": mv(1.5, "measured")}},
                "mobile": {
                    "values": {"latency_ms": mv(0.25, "estimated"), "size_mb": mv(0.01, "measured")}
                },
                "host-cpu:raw": {"values": {"latency_ms": mv(9.0, "measured")}},  # not a target
            },
        },
    )
    names = ["accuracy", "latency_ms[host-cpu]", "latency_ms[mobile]", "size_mb"]
    assert trial_numbers(trial, names) == {
        "latency_ms.host-cpu": (1.5, "measured"),
        "latency_ms.mobile": (0.25, "estimated"),
        "size_mb": (0.01, "measured"),  # the same file on every target: one metric
        "accuracy": (0.9, "measured"),
        "build_s": (2.0, "measured"),
    }


def test_tracking_uris_and_search_params() -> None:
    run = Path("some/run")
    assert resolve_uri(DEFAULT_URI, run) == f"sqlite:///{(run / 'mlflow.db').resolve()}"
    assert resolve_uri("sqlite:///rel/x.db", run) == f"sqlite:///{Path('rel/x.db').resolve()}"
    assert resolve_uri("sqlite:////abs/x.db", run) == "sqlite:////abs/x.db"
    assert resolve_uri("http://host:5000", run) == "http://host:5000"
    key = {"model": {"path": "/m.pt", "arch": None}, "targets": ["cpu", "mobile"], "seed": 0}
    key |= {"budgets": {"max_size_mb": 2.0, "max_latency_ms": None}, "data": None}
    assert search_params(key) == {
        "model.path": "/m.pt",
        "targets": "cpu,mobile",
        "seed": "0",
        "budgets.max_size_mb": "2.0",
    }
