"""An MLflow tracking server over HTTP: asked once, briefly, before any search work, and never
waited on for minutes afterwards.

MLflow's own defaults retry a failed request 7 times with exponential backoff and wait 120 s
for each answer: a tracking server that is down held ``optimize --mlflow=http://...`` silent
for minutes before the first trial, and one that fails later held a worker as long.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any
from urllib.parse import urlsplit

from edgeopt.errors import ConfigError

PROBE_TIMEOUT_S = 5.0
PROBE_ENDPOINT = "/api/2.0/mlflow/experiments/get-by-name"

HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # a server's Retry-After would otherwise set the wait, however long
    "MLFLOW_HTTP_RESPECT_RETRY_AFTER_HEADER": "false",
}
"""MLflow's HTTP settings for edgeopt's processes, where the environment sets none: a failing
server costs a logging call about half a minute at most (3 tries of 10 s), and then that
process logs nothing more (``tracking.Tracker``). Pooled workers inherit them."""

_HINT = "start it, fix the URI, or drop --mlflow (or --mlflow alone logs into the run directory)"


def bound_http_requests() -> None:
    """Set ``HTTP_BOUNDS`` in this process's environment, keeping any the user set."""
    for name, value in HTTP_BOUNDS.items():
        os.environ.setdefault(name, value)


def is_http(uri: str) -> bool:
    """Whether ``uri`` names a tracking server over HTTP(S)."""
    return uri.lower().startswith(("http://", "https://"))


def probe(uri: str, experiment: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Ask the tracking server at ``uri`` for ``experiment``, once, within ``timeout_s``.

    Raises ConfigError (exit 2) when it does not answer, refuses access, or answers as no
    MLflow tracking server does; returns when it answers as one (the experiment need not
    exist yet). Uses MLflow's own HTTP client, so its credentials and TLS settings apply."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    if not _valid_url(uri):
        raise ConfigError(f"MLflow tracking server {uri} is not a valid URL", hint=_HINT)
    try:
        resp = http_request(
            get_default_host_creds(uri),
            PROBE_ENDPOINT,
            "GET",
            max_retries=0,
            backoff_factor=0,
            backoff_jitter=0,
            timeout=timeout_s,
            raise_on_status=False,
            respect_retry_after_header=False,
            params={"experiment_name": experiment},
        )
    except Exception as exc:
        raise ConfigError(
            f"MLflow tracking server {uri} {_unreachable(exc, timeout_s)}", hint=_HINT
        ) from exc
    status = resp.status_code
    if status == 200 or _error_code(resp) == "RESOURCE_DOES_NOT_EXIST":
        return
    if status in (401, 403):
        raise ConfigError(
            f"MLflow tracking server {uri} refuses access (HTTP {status})",
            hint="set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
            "MLFLOW_TRACKING_TOKEN, or drop --mlflow",
        )
    raise ConfigError(
        f"{uri} does not answer as an MLflow tracking server (HTTP {status} for {PROBE_ENDPOINT})",
        hint="give the tracking server's address (e.g. http://HOST:5000, as `mlflow server` "
        "prints it), or drop --mlflow",
    )


def _valid_url(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        _ = parts.port  # ValueError for a port that is no number or out of range
    except ValueError:
        return False
    return bool(parts.hostname)


def _error_code(resp: Any) -> str | None:
    try:
        body = resp.json()
    except Exception:
        return None
    return body.get("error_code") if isinstance(body, dict) else None


def _unreachable(exc: BaseException, timeout_s: float) -> str:
    """Why the server could not be asked, in a few words, from the cause MLflow wraps."""
    import requests

    seen: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in seen:
        seen.append(cause)
        cause = cause.__cause__ or cause.__context__
    for err in seen:
        if isinstance(err, requests.exceptions.Timeout | socket.timeout):
            return f"does not answer within {timeout_s:g} s"
        if isinstance(err, ConnectionRefusedError):
            return "does not answer (connection refused)"
        if isinstance(err, socket.gaierror):
            return "cannot be reached (its host name does not resolve)"
        if isinstance(err, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
            return "is not a valid URL"
    text = " ".join(str(exc).split())
    if "Connection refused" in text or f"[Errno {errno.ECONNREFUSED}]" in text:
        return "does not answer (connection refused)"
    if "timed out" in text.lower():
        return f"does not answer within {timeout_s:g} s"
    return f"cannot be reached ({text[:160]})"
