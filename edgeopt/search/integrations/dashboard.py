"""A run's study in optuna-dashboard, with edgeopt's objective names on its axes.

optuna-dashboard is an optional extra (``pip install 'edgeopt[dashboard]'``): it is imported
only here, when a dashboard is asked for.
"""

from __future__ import annotations

import contextlib
import errno
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from edgeopt.errors import ConfigError
from edgeopt.search.integrations.dashboard_guard import Guard
from edgeopt.search.study.artifacts import open_store
from edgeopt.search.study.source import RunSource
from edgeopt.search.study.storage import open_storage, redact

INSTALL_HINT = "pip install 'edgeopt[dashboard]'"


@dataclass(frozen=True)
class Dashboard:
    """A run's study, ready to serve.

    ``metric_names`` are the objective names the dashboard labels its axes with (empty when
    the study records none); ``named`` is False when they could not be written into the
    study (a read-only storage), so the dashboard shows "Objective 0" etc. instead.
    """

    study_name: str
    study_id: int
    where: str
    metric_names: tuple[str, ...]
    named: bool
    app: Any  # the WSGI application

    def study_path(self) -> str:
        """The study's page, relative to the server's root."""
        return f"/dashboard/studies/{self.study_id}"


def name_metrics(study: optuna.Study) -> tuple[str, ...]:
    """Set the study's metric names from its ``objectives`` user attribute (edgeopt's
    objective names, e.g. ``latency_ms[host-cpu]``), which optuna-dashboard shows on its axes.

    Needs a writable storage; writes nothing when they are already set or the study records
    no names (or not one per direction). Returns the names."""
    names = [str(n) for n in study.user_attrs.get("objectives") or []]
    if len(names) != len(study.directions):
        return ()
    if study.metric_names != names:
        with warnings.catch_warnings():  # experimental in Optuna, and stable since 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    return tuple(names)


def open_dashboard(run_dir: str | Path) -> Dashboard:
    """The dashboard application for the run in ``run_dir`` (its ``--storage`` when it used
    one, else its ``study.db``), with the metric names set.

    Raises ConfigError (exit 2) when optuna-dashboard is not installed, or the run or its
    study cannot be read."""
    try:
        import optuna_dashboard
    except ImportError as exc:
        raise ConfigError(
            "edgeopt dashboard needs optuna-dashboard, which is not installed",
            hint=INSTALL_HINT,
        ) from exc
    source = RunSource.local(run_dir)
    study = source.open_study()  # a clear error for a missing or damaged study
    try:
        names = name_metrics(study)
        named = True
    except Exception:  # a read-only storage: the dashboard still shows the study, unnamed
        names, named = tuple(str(n) for n in study.user_attrs.get("objectives") or []), False
    storage = open_storage(source.storage)
    return Dashboard(
        study_name=source.study_name,
        study_id=storage.get_study_id_from_name(source.study_name),
        where=redact(source.storage),
        metric_names=names,
        named=named,
        app=optuna_dashboard.wsgi(storage, artifact_store=_artifact_store(source)),
    )


def _artifact_store(source: RunSource) -> Any:
    """The run's artifact store (trial ONNX files and logs) for the dashboard's artifact
    view, or None when the run has none or it cannot be opened (the dashboard works without)."""
    spec = source.artifacts
    if not spec:
        return None

    try:
        return open_store(spec, write=False)
    except ConfigError:
        return None


@contextlib.contextmanager
def serving(dashboard: Dashboard, host: str, port: int, *, writes: bool = False) -> Iterator[Any]:
    """Bind ``host:port`` and yield the (threaded, wsgiref) server; call its
    ``serve_forever()`` to serve until interrupted. ConfigError when the address cannot be
    bound (in use, or not an address of this machine).

    The server answers only requests that name it in their ``Host`` header, and only reads
    unless ``writes`` (then only writes from its own page): ``dashboard_guard.Guard``."""

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """One line per request would bury the command's own output."""

    try:
        server = make_server(
            host, port, dashboard.app, server_class=Server, handler_class=QuietHandler
        )
    except OSError as exc:
        in_use = exc.errno == errno.EADDRINUSE
        raise ConfigError(
            f"cannot serve on {host}:{port}: "
            + ("the port is in use" if in_use else (exc.strerror or str(exc))),
            hint="pass another --port"
            if in_use
            else "pass --host 127.0.0.1 or this machine's address",
        ) from exc
    # the guard needs the bound port (--port 0 lets the system pick one)
    server.set_app(Guard(dashboard.app, host, server.server_address[1], writes=writes))
    try:
        yield server
    finally:
        server.server_close()
