"""Where a finished or running search is read from: a local run directory, a shared study
(``--storage URL --study NAME``) on a machine that ran no trial, or both.

The run's settings and reference baseline come from the study when it recorded them
(``edgeopt.search.study.shared``), else from the run directory; a trial's ONNX file comes from the
local run directory when it is there, else from the artifact store.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from edgeopt.config import RunConfig
from edgeopt.errors import ConfigError
from edgeopt.rundir import Baseline, RunDir
from edgeopt.search.study import shared
from edgeopt.search.study.artifacts import check_sha256, fetch, open_store
from edgeopt.search.study.storage import open_storage, redact, storage_error


class BuiltElsewhere(ConfigError):
    """A trial's file is on the machine that built it only: not here, and not uploaded to
    an artifact store (that machine ran without ``--artifacts``)."""


@dataclass(frozen=True)
class RunSource:
    """A run to read. ``run`` is the local run directory, if any; ``artifacts`` overrides
    the artifact store recorded in run.json or the study."""

    run: RunDir | None
    storage: str
    study_name: str
    artifacts: str | None = None

    @classmethod
    def local(cls, run_dir: str | Path, artifacts: str | None = None) -> RunSource:
        """The run in ``run_dir`` (ConfigError when it is not a run directory)."""
        run = RunDir(run_dir)
        config = run.read_config()
        return cls(run, run.storage_url(config), config.study_name, artifacts or config.artifacts)

    @classmethod
    def of(cls, target: str | Path | RunSource) -> RunSource:
        return target if isinstance(target, RunSource) else cls.local(target)

    def protected(self) -> dict[str, Path]:
        """What an output of ``report`` or ``export`` must never land in, by name: the run
        directory (its trial files, study.db), a local artifact folder, a SQLite study."""
        out = {}
        if self.run is not None:
            out["the run directory"] = self.run.path
        if self.artifacts and not self.artifacts.startswith("s3://"):
            out["the artifact folder"] = Path(self.artifacts).expanduser()
        sqlite_file = _sqlite_path(self.storage)
        if sqlite_file is not None:
            out["the study database"] = sqlite_file
        return out

    @property
    def where(self) -> str:
        """The run as a reader names it (never with a password)."""
        if self.run is not None:
            return str(self.run.path)
        return f"study {self.study_name!r} in {redact(self.storage)}"

    def open_study(self) -> optuna.Study:
        """The study, opened for reading; ConfigError when it is missing or unreadable (a
        missing SQLite file is never created: that would be an empty study)."""
        run = self.run
        local_db = run is not None and self.storage == run.storage_url_default()
        if run is not None and local_db and not run.study_db.is_file():
            raise ConfigError(
                f"{self.where} has no study.db: the study of this run is gone",
                hint="restore study.db from a backup, or re-run `edgeopt optimize` into a "
                "new --out",
            )
        sqlite_file = _sqlite_path(self.storage)
        if not local_db and sqlite_file is not None and not sqlite_file.is_file():
            # a run directory is data: its run.json must not make edgeopt create files
            raise ConfigError(
                f"{redact(self.storage)} does not exist; reading a study never creates one",
                hint="pass --storage with the database the search wrote",
            )
        try:
            storage = open_storage(self.storage)
            return optuna.load_study(study_name=self.study_name, storage=storage)
        except KeyError as exc:
            raise ConfigError(
                f"{redact(self.storage)} holds no study {self.study_name!r}",
                hint="check --storage and --study, or re-run the search",
            ) from exc
        except ConfigError as exc:
            if not local_db:
                raise
            raise ConfigError(
                f"cannot read the study of {self.where}: {exc.message.rsplit(': ', 1)[-1]}",
                hint="study.db is damaged or unreadable; restore it or re-run into a new --out",
            ) from exc
        except Exception as exc:  # a database error after connecting
            raise storage_error(self.storage, exc, "read the study in") from exc

    def open(self) -> OpenRun:
        """Open the study and gather the run's config, baseline and test numbers."""
        study = self.open_study()
        attrs = study.user_attrs
        config = None
        if self.run is not None and self.run.run_file.exists():
            config = self.run.read_config()
        config = config or shared.config_from(attrs, self.storage, self.study_name)
        if config is None:
            raise ConfigError(
                f"{self.where} was not started by this version of edgeopt (it records no "
                "run settings)",
                hint="read it through the run directory of a machine that ran it",
            )
        baseline = shared.baseline_from(attrs)
        if baseline is None:
            if self.run is None:
                raise ConfigError(f"{self.where} records no baseline (its setup never finished)")
            baseline = self.run.read_baseline()
        final = shared.test_numbers(attrs)
        if self.run is not None:
            local = self.run.read_final()
            final["final_latency"] = {
                **local.get("final_latency", {}),
                **shared.final_latency(attrs),
            }
            for key in ("test_accuracy", "task_metrics"):
                final[key] = {**local.get(key, {}), **final[key]}
            final.setdefault("test_split", local.get("test_split"))
        final.setdefault("final_latency", shared.final_latency(attrs))
        final["latency_by_seq"] = shared.latency_by_seq(attrs)  # --seq-lens; else empty
        store = self.artifacts or attrs.get(shared.ARTIFACTS)
        return OpenRun(self, study, config, baseline, final, store)


@dataclass
class OpenRun:
    """A run opened for reading (see ``RunSource.open``)."""

    source: RunSource
    study: optuna.Study
    config: RunConfig
    baseline: Baseline
    final: dict[str, Any]
    artifacts: str | None
    _store: Any = field(default=None, repr=False)

    def trial_onnx(self, trial: Mapping[str, Any], dest_dir: Path) -> Path:
        """Trial ``trial``'s ONNX file (a record with ``number``, ``onnx``, ``artifacts``,
        ``onnx_sha256``): in the local run directory when it is there, else downloaded from
        the artifact store into ``dest_dir``. ConfigError when neither has it."""
        return trial_onnx(self.source.run, self._artifact_store, trial, dest_dir)

    def _artifact_store(self) -> Any:
        if self._store is None and self.artifacts:
            self._store = open_store(self.artifacts, write=False)
        return self._store


def trial_onnx(
    run: RunDir | None, store: Callable[[], Any], trial: Mapping[str, Any], dest_dir: Path
) -> Path:
    """See ``OpenRun.trial_onnx``; ``store`` returns the artifact store (or None), called
    only when the file must be downloaded."""
    number = trial["number"]
    recorded = trial.get("onnx")
    what = f"trial {number}'s model"
    if run is not None and recorded:
        local = run.inside(str(recorded))  # the study is data: never follow it elsewhere
        if local.is_file():
            check_sha256(local, trial.get("onnx_sha256"), f"{what} {recorded}")
            return local
    artifact = (trial.get("artifacts") or {}).get("model.onnx")
    if artifact is None:
        host = (trial.get("machine") or {}).get("hostname", "another machine")
        raise BuiltElsewhere(
            f"{what} is not in this run directory and was not uploaded to an artifact store",
            hint=f"it was built on {host}"
            " without --artifacts: read it there, or run workers with --artifacts DIR",
        )
    opened = store()
    if opened is None:
        raise ConfigError(
            f"{what} is in an artifact store, but no --artifacts was given",
            hint="pass --artifacts with the folder the workers uploaded to",
        )
    dest = Path(dest_dir) / f"trial-{number}" / "model.onnx"
    return fetch(opened, artifact, dest, trial.get("onnx_sha256"), what)


def check_output(
    paths: Sequence[Path],
    folder: Path,
    protected: Mapping[str, Path],
    *,
    flag: str,
    example: str,
    allowed: Path | None = None,
) -> None:
    """ConfigError (exit 2, before any work) unless ``paths`` can be written: ``folder``
    (where they go) is a folder or can be made one, and no path, its links followed, lies in
    one of the ``protected`` places (``RunSource.protected``) other than under ``allowed``
    (e.g. the run's own report folder). An export over a trial file would make the run hand
    out the wrong model from then on."""
    for parent in (folder, *folder.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ConfigError(
                    f"{flag} {paths[0]}: {parent} is not a folder",
                    hint=f"name a path in a folder, e.g. {flag} {example}",
                )
            break
    ok = allowed.resolve() if allowed is not None else None
    for path in paths:
        resolved = path.resolve()
        if ok is not None and resolved.is_relative_to(ok):
            continue
        for what, place in protected.items():
            root = place.resolve()
            if resolved.is_relative_to(root):
                via = "" if path.absolute() == resolved else f" (it resolves to {resolved})"
                raise ConfigError(
                    f"{flag} {path} is inside {what} {place}{via}: writing there would "
                    "overwrite what the run recorded",
                    hint=f"write it outside, e.g. {flag} {example}",
                )


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for downloaded trial files."""
    return tempfile.TemporaryDirectory(prefix="edgeopt-artifacts-")


def _sqlite_path(url: str) -> Path | None:
    """The file of an ``sqlite:///`` URL (None for other storages and in-memory SQLite)."""
    if not url.startswith("sqlite:///") or url in ("sqlite://", "sqlite:///:memory:"):
        return None
    return Path(url.removeprefix("sqlite:///"))
