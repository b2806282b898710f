"""The one owner of a run directory's layout.

A run directory holds everything of one search::

    run.json            the run's configuration (re-running the same command resumes it)
    study.db            the Optuna study (SQLite), unless --storage names a shared database
                        (then the study also records the settings and reference baseline,
                        and trial files go to the --artifacts store as well)
    baseline/           the original model as ONNX (model.onnx) and baseline.json
    cache/              torch-phase results shared by trials with the same torch settings
    trials/<n>/         each trial's model.onnx, request/result JSON, log
    final.json          test-split numbers of the front and the baselines, and their host
                        latency re-measured in one pass after the search (final_latency)
    report/             the rendered reports

Everything read back from here is data: paths recorded in the study are resolved inside the
directory (``inside``), never followed elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeopt.config import RunConfig, changed_profiles
from edgeopt.errors import ConfigError
from edgeopt.fileio import file_lock, write_json
from edgeopt.loading.limits import check_input_size
from edgeopt.profiles import resolve_targets

RUN_FILE = "run.json"


@dataclass(frozen=True)
class Baseline:
    """The original model's reference numbers, written once when a run is set up.

    ``salt`` identifies model + data + seed (part of every cache key); ``host_latency_ms`` is
    the original's p50 per host profile, the scale for every candidate's measured ratio;
    ``accuracy_kind`` is ``accuracy`` with labelled data, else ``fidelity``.
    """

    salt: str
    input_shape: tuple[int, ...]
    onnx_input: bool
    host: str
    accuracy_kind: str
    val_accuracy: float
    test_accuracy: float
    host_latency_ms: Mapping[str, float] = field(default_factory=dict)
    hopeless_below: float | None = None
    synthetic_inputs: int | None = None
    stage_facts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """What each stage's ``probe`` found at setup, by stage name (JSON values)."""
    auto_timeout_s: float | None = None
    """The per-trial timeout used when ``--trial-timeout`` is ``auto`` (from the stages'
    measured costs)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["host_latency_ms"] = dict(self.host_latency_ms)
        d["stage_facts"] = {k: dict(v) for k, v in self.stage_facts.items()}
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Baseline:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in data.items() if k in known}
        d["input_shape"] = tuple(int(x) for x in d["input_shape"])
        # data from a file: synthetic inputs and measurements are built of this shape
        check_input_size(d["input_shape"], "the run's baseline record")
        d["stage_facts"] = _fold_flat_facts(data)
        return cls(**d)


_FLAT_FACTS = {
    "prunable": ("prune", "prunable"),
    "prune_ignored": ("prune", "ignored"),
    "prune_note": ("prune", "note"),
    "epoch_s": ("finetune", "epoch_s"),
}
"""Where a baseline written before ``stage_facts`` kept the probes' results: such runs and
studies still resume."""


def _fold_flat_facts(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``data["stage_facts"]``, with an older baseline's flat probe keys folded in."""
    out = {str(k): dict(v) for k, v in (data.get("stage_facts") or {}).items()}
    for key, (stage, name) in _FLAT_FACTS.items():
        if data.get(key) is not None:
            out.setdefault(stage, {})[name] = data[key]
    return out


class RunDir:
    """Paths and files of one run directory; the only code that spells them out."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # ------------------------------------------------------------------ paths
    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def study_db(self) -> Path:
        return self.path / "study.db"

    @property
    def baseline_dir(self) -> Path:
        return self.path / "baseline"

    @property
    def baseline_onnx(self) -> Path:
        return self.baseline_dir / "model.onnx"

    @property
    def sample_file(self) -> Path:
        """A few validation inputs (``.npy``), for workers that need a sample, not the data."""
        return self.baseline_dir / "sample.npy"

    @property
    def data_file(self) -> Path:
        """``data.json``: what set-up found in streamed data (classes, counts, recipe)."""
        return self.path / "data.json"

    @property
    def baseline_file(self) -> Path:
        return self.baseline_dir / "baseline.json"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def final_file(self) -> Path:
        return self.path / "final.json"

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    def trial_dir(self, number: int) -> Path:
        return self.path / "trials" / str(int(number))

    def relative(self, path: Path) -> str:
        """``path`` as recorded in the study: relative to the run directory."""
        return str(Path(path).resolve().relative_to(self.path.resolve()))

    def inside(self, recorded: str) -> Path:
        """A path recorded in the study or a run file, resolved inside this directory.

        Raises ConfigError when it points elsewhere (an absolute path, ``..``, a link out):
        a shared run directory must not make edgeopt read or copy other files.
        """
        root = self.path.resolve()
        candidate = (root / recorded).resolve()
        if Path(recorded).is_absolute() or not candidate.is_relative_to(root):
            raise ConfigError(
                f"{self.path} records the path {recorded!r}, which is outside the run directory",
                hint="the run directory was edited or is not from edgeopt; re-run the search",
            )
        return candidate

    # ------------------------------------------------------------------ locks
    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """An exclusive lock among this machine's processes (``ask``, ``measure``, ``setup``)."""
        return file_lock(self.lock_path(name))

    def lock_path(self, name: str) -> Path:
        return self.path / f".{name}.lock"

    # ------------------------------------------------------------------ config
    def storage_url(self, config: RunConfig) -> str:
        """The study's storage: ``--storage`` when given, else ``study.db`` here."""
        return config.storage or self.storage_url_default()

    def storage_url_default(self) -> str:
        """``study.db`` here, as an SQLite URL (one machine: the default)."""
        return f"sqlite:///{self.study_db.resolve()}"

    def read_config(self) -> RunConfig:
        if not self.run_file.exists():
            raise ConfigError(
                f"{self.path} is not an edgeopt run directory (no {RUN_FILE})",
                hint="pass the directory that `edgeopt optimize` wrote "
                "(default runs/<model>-<target>)",
            )
        try:
            return RunConfig.from_dict(json.loads(self.run_file.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{self.run_file} is corrupt: {exc}") from exc

    def write_config(self, config: RunConfig) -> None:
        """Write ``run.json``; if the directory already holds a different study, refuse."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.run_file.exists():
            old = comparable_key(self.read_config().search_key())
            diff = differences(old, comparable_key(config.search_key()))
            if "search_space" in diff:
                raise ConfigError(
                    f"{self.path} holds a run recorded by an older edgeopt whose search space "
                    "differs (it cannot be resumed)",
                    hint="use another --out directory; `edgeopt report` still reads this one",
                )

            error = changed_profiles(self.read_config().search_key(), config.search_key())
            if error is not None:
                raise error
            if diff:
                raise ConfigError(
                    f"{self.path} holds a run with different {', '.join(diff)}",
                    hint="use another --out directory (or the same settings to resume this run)",
                )
        write_json(self.run_file, config.to_dict())

    # ------------------------------------------------------------------ records
    def read_baseline(self) -> Baseline:
        try:
            return Baseline.from_dict(json.loads(self.baseline_file.read_text()))
        except FileNotFoundError:
            raise ConfigError(
                f"{self.path} has no baseline (the run was never set up completely)",
                hint="re-run the same `edgeopt optimize` command to set it up",
            ) from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{self.baseline_file} is corrupt: {exc}") from exc

    def write_baseline(self, baseline: Baseline) -> None:
        write_json(self.baseline_file, baseline.to_dict())

    def read_final(self) -> dict[str, Any]:
        """``{"test_accuracy": {trial number: value}, "test_split": ...}`` (empty if absent)."""
        if not self.final_file.exists():
            return {"test_accuracy": {}}
        hint = "delete it and re-run the same `edgeopt optimize` command: it computes it again"
        try:
            final = json.loads(self.final_file.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{self.final_file} is corrupt: {exc}", hint=hint) from exc
        if not isinstance(final, dict) or not all(
            isinstance(v, dict) for k, v in final.items() if k != "test_split"
        ):
            raise ConfigError(
                f"{self.final_file} is corrupt: not edgeopt's final numbers", hint=hint
            )
        return final

    def write_final(self, final: Mapping[str, Any]) -> None:
        write_json(self.final_file, dict(final))


def comparable_key(key: Mapping[str, Any]) -> dict[str, Any]:
    """A search key with targets as profile names, so an alias (cpu) equals its profile
    (host-cpu): the names its ``profile_digests`` recorded (a run recorded before them
    resolves its targets now)."""
    rest = {k: v for k, v in key.items() if k != "profile_digests"}  # see changed_profiles
    names = list(key.get("profile_digests") or {})
    return {**rest, "targets": names or list(resolve_targets(key["targets"]).names)}


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The keys of ``new`` whose values differ in ``old`` (a missing key differs)."""
    return [k for k in new if old.get(k) != new[k]]


def default_run_dir(model_path: str, targets: Sequence[str]) -> Path:
    """``runs/<model stem>-<targets>``."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", "+".join(Path(t).stem for t in targets))
    return Path("runs") / f"{Path(model_path).stem}-{slug}"
