"""Where a study lives: an Optuna RDB storage URL, opened with errors a user can act on, and
the one lock that makes "count the trials, then ask for one" atomic for every worker.

Two shapes are supported: one machine on SQLite (the default, ``study.db`` in the run
directory) and many machines on one PostgreSQL database. A bare ``postgresql://`` URL is
opened with the installed driver (psycopg 3 from ``edgeopt[postgres]``, else psycopg2):
SQLAlchemy's own default for it depends on its version and fails without a hint.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from edgeopt.errors import ConfigError
from edgeopt.fileio import file_lock

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

POSTGRES_SCHEMES = ("postgresql", "postgres")
# (SQLAlchemy dialect, module): the first importable one opens a bare postgresql:// URL
POSTGRES_DRIVERS = (("psycopg", "psycopg"), ("psycopg2", "psycopg2"))
CONNECT_TIMEOUT_S = 10
SCHEMA_LOCK_KEY = 0x6564_6765_6F70_74  # "edgeopt": serializes creating Optuna's tables
INSTALL_HINT = "install the driver with: pip install 'edgeopt[postgres]' (psycopg 3)"


def redact(url: str) -> str:
    """``url`` with its password masked, for messages and reports."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


_PASSWORD = re.compile(r"(://[^:/@]*):([^@/]*)@")


def adopt_password(url: str) -> str:
    """``url`` without its password; a PostgreSQL password moves to ``PGPASSWORD`` in this
    process's environment, where libpq (and every worker and trial child, which inherit it)
    finds it. So the password is never written to ``run.json``, logs or a worker's command
    line; a reader of the run later takes it from ``PGPASSWORD`` or ``~/.pgpass``."""
    match = _PASSWORD.search(url)
    if match is None or not is_postgres(url):
        return url
    os.environ["PGPASSWORD"] = unquote(match.group(2))
    return url[: match.start()] + match.group(1) + "@" + url[match.end() :]


def is_postgres(url: str) -> bool:
    return url.partition("://")[0].partition("+")[0] in POSTGRES_SCHEMES


def resolve_url(url: str) -> str:
    """The URL to open: a bare ``postgresql://`` or ``postgres://`` gets the installed
    driver's dialect (``postgresql+psycopg://``); others are returned as they are.

    Raises ConfigError when ``url`` is not a URL or no PostgreSQL driver is installed.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(
            f"--storage {redact(url)!r} is not a storage URL",
            hint="e.g. postgresql://user@host/db (many machines) or sqlite:///path/study.db",
        )
    base, _, driver = scheme.partition("+")
    if base not in POSTGRES_SCHEMES:
        return url
    if driver:
        return f"postgresql+{driver}://{rest}"
    for dialect, module in POSTGRES_DRIVERS:
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        return f"postgresql+{dialect}://{rest}"
    raise ConfigError(f"no PostgreSQL driver is installed to open {redact(url)}", hint=INSTALL_HINT)


def storage_error(url: str, exc: BaseException, doing: str = "open storage") -> ConfigError:
    """A one-line ConfigError for a storage that cannot be used, with a hint that fits."""
    if isinstance(exc, ConfigError):
        return exc
    if isinstance(exc, ImportError):
        return ConfigError(
            f"the database driver for {redact(url)} is not installed ({exc.__cause__ or exc})",
            hint=INSTALL_HINT if is_postgres(url) else "install the driver the URL names",
        )
    text = _first_line(exc)
    low = text.lower()
    if "password authentication failed" in low or "no password supplied" in low:
        hint = (
            "check the user and password; give the password in PGPASSWORD or ~/.pgpass "
            "(a run directory records the URL without it)"
        )
    elif "does not exist" in low and "database" in low:
        hint = "create the database first, e.g. createdb -h HOST -U USER NAME"
    elif any(s in low for s in ("refused", "timeout", "timed out", "translate host", "route")):
        hint = "is the PostgreSQL server running and reachable from this machine? check host:port"
    elif "unable to open database file" in low:
        hint = "the SQLite file's folder must exist and be writable"
    else:
        hint = "check --storage (and --study)"
    return ConfigError(f"cannot {doing} {redact(url)}: {text}", hint=hint)


def _first_line(exc: BaseException) -> str:
    """The driver's own message: first line, without SQLAlchemy's ``(module.Error)`` prefix."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    line = re.sub(r"^\([\w.]+\)\s*", "", line)
    return re.sub(r"^connection failed:\s*", "", line)


def open_storage(url: str, *, heartbeat_s: int | None = None, grace_beats: int = 3) -> RDBStorage:
    """An RDB storage for ``url`` (see ``resolve_url``), with heartbeats every
    ``heartbeat_s`` seconds and one retry of a stale trial when ``heartbeat_s`` is given.

    Connects once (creating Optuna's tables if needed); any failure is a ConfigError.
    """
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    resolved = resolve_url(url)
    engine: dict[str, Any] = {}
    if is_postgres(resolved):
        # fail fast on an unreachable host; re-check pooled connections a long trial left idle
        engine = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    beats: dict[str, Any] = {}
    if heartbeat_s is not None:
        beats = {
            "heartbeat_interval": heartbeat_s,
            "grace_period": heartbeat_s * grace_beats,
            "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=1),
        }
    try:
        with _schema_lock(resolved, engine):
            return RDBStorage(resolved, engine_kwargs=engine, **beats)
    except Exception as exc:
        raise storage_error(url, exc) from exc


@contextlib.contextmanager
def _schema_lock(url: str, engine_kwargs: dict[str, Any]) -> Iterator[None]:
    """One process at a time creates Optuna's tables: two workers starting on a new database
    at once would both run CREATE TABLE (and insert the schema version) and one would fail.
    On PostgreSQL a server advisory lock (it spans machines); on SQLite a file lock beside
    the database file (one machine by design)."""
    if not is_postgres(url):
        sqlite_db = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
        with contextlib.ExitStack() as stack:
            if sqlite_db and sqlite_db != ":memory:":
                with contextlib.suppress(OSError):  # read-only: no one can create tables there
                    stack.enter_context(file_lock(Path(f"{sqlite_db}.schema.lock")))
            yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    connect_args = engine_kwargs.get("connect_args", {})
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
            conn.commit()
            yield  # the connection closes after: the server releases the lock
    finally:
        engine.dispose()


def _lock_key(study_name: str) -> int:
    """A signed 64-bit key for PostgreSQL's advisory lock, derived from the study name."""
    digest = hashlib.sha256(f"edgeopt-study:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def study_lock(storage: RDBStorage, study_name: str, fallback: Path) -> Iterator[None]:
    """Exclusive among every worker of the study while the block runs.

    On PostgreSQL a session advisory lock, held on its own connection, so it spans machines
    (the server drops it when a holder dies); on SQLite, one machine by design, a file lock
    beside the database file; otherwise a file lock at ``fallback``.
    """
    from sqlalchemy import text

    url = storage.engine.url
    if url.get_backend_name() == "postgresql":
        key = _lock_key(study_name)
        with storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # a dead connection released it already
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
        return
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        fallback = Path(f"{url.database}.lock")
    with file_lock(fallback):
        yield


def running_without_heartbeat(storage: RDBStorage, study_id: int) -> list[int]:
    """Ids of the study's RUNNING trials that never recorded a heartbeat.

    Optuna's stale check skips such trials (it measures the time since the last beat), so a
    worker killed between asking a trial and its first beat left it RUNNING forever. Reads
    Optuna's own heartbeat table through its models: the storage has no public query for it.
    """
    from optuna.storages._rdb import models
    from optuna.trial import TrialState
    from sqlalchemy import orm

    trial, beat = models.TrialModel, models.TrialHeartbeatModel
    with orm.Session(storage.engine) as session:
        rows = (
            session.query(trial.trial_id)
            .outerjoin(beat, beat.trial_id == trial.trial_id)
            .filter(trial.study_id == study_id)
            .filter(trial.state == TrialState.RUNNING)
            .filter(beat.trial_heartbeat_id.is_(None))
            .all()
        )
    return [row[0] for row in rows]
