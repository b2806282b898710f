"""A run: its configuration (what the user asked for) and its directory layout.

A run directory holds everything: ``run.json`` (this config), the Optuna storage
(``study.db`` unless ``--storage`` points elsewhere), ``baseline/`` (the original model as
ONNX and its reference numbers), ``cache/`` (torch-phase results shared by trials),
``trials/<n>/model.onnx`` for every built candidate, and ``report/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.loading import ModelSpec
from edgeopt.metrics import Metric

RUN_FILE = "run.json"


class Direction(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


OBJECTIVE_METRICS: dict[str, Metric] = {
    "accuracy": Metric.ACCURACY,
    "latency": Metric.LATENCY_MS,
    "size": Metric.SIZE_MB,
    "memory": Metric.PEAK_MEMORY_MB,
    "energy": Metric.ENERGY_MJ,
}
PER_TARGET = {Metric.LATENCY_MS, Metric.PEAK_MEMORY_MB, Metric.ENERGY_MJ}


@dataclass(frozen=True)
class Objective:
    """One optimized number: a metric, for one target when it depends on the target."""

    metric: Metric
    target: str | None

    @property
    def name(self) -> str:
        """``accuracy``, ``size_mb`` or ``latency_ms[mobile]``."""
        return self.metric.value + (f"[{self.target}]" if self.target else "")

    @property
    def direction(self) -> Direction:
        return Direction.MAXIMIZE if self.metric is Metric.ACCURACY else Direction.MINIMIZE


@dataclass(frozen=True)
class Budgets:
    """Hard limits, expressed to Optuna as constraints (feasible when every value <= 0)."""

    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    max_memory_mb: float | None = None
    max_energy_mj: float | None = None
    max_accuracy_drop: float | None = None
    min_accuracy: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and (v < 0 or (f.name != "max_accuracy_drop" and v == 0)):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be positive, got {v}")
        for name in ("min_accuracy", "max_accuracy_drop"):
            v = getattr(self, name)
            if v is not None and v > 1:
                raise ConfigError(
                    f"--{name.replace('_', '-')} is a fraction in [0, 1], got {v}",
                    hint="write 1 percentage point as 0.01",
                )

    def any(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


SAMPLERS = ("tpe", "nsga2", "random", "grid", "gp")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. Saved as ``run.json``; re-running resumes it."""

    model: ModelSpec
    targets: tuple[str, ...]
    data: str | None = None
    objectives: tuple[str, ...] = ("accuracy", "latency", "size")
    budgets: Budgets = field(default_factory=Budgets)
    sampler: str = "tpe"
    seed: int = 0
    study_name: str = "edgeopt"
    storage: str | None = None
    trial_timeout_s: float = 900.0
    trial_memory_gb: float = 8.0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(
                f"unknown sampler {self.sampler!r}", hint=f"choose one of {', '.join(SAMPLERS)}"
            )
        bad = [o for o in self.objectives if o not in OBJECTIVE_METRICS]
        if bad or not self.objectives:
            raise ConfigError(
                f"unknown objective(s) {', '.join(bad) or '(none)'}",
                hint=f"choose from {', '.join(OBJECTIVE_METRICS)}",
            )
        if len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(f"--objectives lists a metric twice: {','.join(self.objectives)}")
        if self.trial_timeout_s <= 0 or self.trial_memory_gb <= 0:
            raise ConfigError("--trial-timeout and --trial-memory-gb must be positive")

    def objective_list(self, target_names: Sequence[str]) -> list[Objective]:
        """Objectives expanded per target for target-dependent metrics."""
        out = []
        for o in self.objectives:
            metric = OBJECTIVE_METRICS[o]
            if metric in PER_TARGET:
                out.extend(Objective(metric, t) for t in target_names)
            else:
                out.append(Objective(metric, None))
        return out

    def search_key(self) -> dict[str, Any]:
        """The fields that define the study; resuming with other values is an error."""
        d = self.to_dict()
        return {k: d[k] for k in ("model", "targets", "data", "objectives", "budgets", "seed")}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["targets"] = list(self.targets)
        d["objectives"] = list(self.objectives)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        d = dict(data)
        d["model"] = ModelSpec.from_dict(d["model"])
        d["targets"] = tuple(d["targets"])
        d["objectives"] = tuple(d["objectives"])
        d["budgets"] = Budgets(**d.get("budgets", {}))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def default_run_dir(model_path: str, targets: Sequence[str]) -> Path:
    """``runs/<model stem>-<targets>``."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", "+".join(Path(t).stem for t in targets))
    return Path("runs") / f"{Path(model_path).stem}-{slug}"


def storage_url(config: RunConfig, run_dir: Path) -> str:
    return config.storage or f"sqlite:///{(run_dir / 'study.db').resolve()}"


def write_run_config(run_dir: Path, config: RunConfig) -> None:
    """Write ``run.json``; if the directory already holds a different study, refuse."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_FILE
    if path.exists():
        old = RunConfig.from_dict(json.loads(path.read_text()))
        if old.search_key() != config.search_key():
            diff = [k for k in config.search_key() if old.search_key()[k] != config.search_key()[k]]
            raise ConfigError(
                f"{run_dir} holds a run with different {', '.join(diff)}",
                hint="use another --out directory (or the same settings to resume this run)",
            )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2))
    tmp.replace(path)


def read_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        raise ConfigError(
            f"{run_dir} is not an edgeopt run directory (no {RUN_FILE})",
            hint="pass the directory that `edgeopt optimize` wrote (default runs/<model>-<target>)",
        )
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is corrupt: {exc}") from exc


def parse_duration(text: str) -> float:
    """``"20m"``, ``"90s"``, ``"1h"``, ``"1h30m"`` or plain seconds -> seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", t)
    if not parts or "".join(a + b for a, b in parts) != t:
        raise ConfigError(f"invalid duration {text!r}", hint="use e.g. 90s, 20m, 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
