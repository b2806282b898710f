"""A run's configuration: what the user asked for (model, targets, data, objectives, budgets,
sampler, limits). Saved as ``run.json`` by ``edgeopt.rundir``; re-running resumes it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from edgeopt.budgets import Budgets
from edgeopt.data.source import DataSpec
from edgeopt.errors import ConfigError
from edgeopt.loading import ModelSpec
from edgeopt.metrics import OBJECTIVES as OBJECTIVE_METRICS
from edgeopt.metrics import PER_TARGET, TASK_METRICS, Direction, Metric
from edgeopt.profiles import Targets, profiles_changed


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
        return self.metric.direction


SAMPLERS = ("tpe", "nsga2", "random", "grid", "gp")


SEARCH_SPACE = 2
"""Version of the search space. A study keeps the value sets of its categorical params, so a
run recorded with another version cannot be resumed (Optuna refuses a changed choice list):
2 added the ``wsd`` fine-tune schedule."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. Saved as ``run.json``; re-running resumes it."""

    model: ModelSpec
    targets: tuple[str, ...]
    data: DataSpec | None = None  # a path string is taken as an .npz's (DataSpec.from_dict)
    objectives: tuple[str, ...] = ("accuracy", "latency", "size")
    metric: str = "accuracy"  # what "accuracy" means in the objective and budgets
    budgets: Budgets = field(default_factory=Budgets)
    sampler: str = "tpe"
    seed: int = 0
    study_name: str = "edgeopt"
    storage: str | None = None
    artifacts: str | None = None  # shared trial-file store (a folder or s3://bucket)
    trial_timeout_s: float | None = None  # None: auto, from the measured epoch cost
    trial_memory_gb: float = 8.0
    threads: int = 1
    # where trials fine-tune: auto|cpu|cuda[:N] (a per-machine choice, like threads)
    train_device: str = "auto"
    data_workers: int = 0  # DataLoader workers per trial for streamed data (per machine too)
    data_cache_gb: float = 2.0  # the decoded-image cache under RUN/cache/data (0: off)
    search_space: int = SEARCH_SPACE  # the version of the stages' params (see SEARCH_SPACE)
    plain_search: bool = False  # the sampler alone: no seeds, siblings, promotion or stopping
    # the user's space ({param: {"low", "high"} | {"choices"}}) and recipes ({"tag", "params"}),
    # checked against the stages' declarations by ``search.strategy.user_space``
    space: Mapping[str, Mapping[str, Any]] | None = None
    recipes: tuple[Mapping[str, Any], ...] = ()
    # --seq-lens: the lengths the front is also timed at after the search (the search itself
    # optimizes the main length); written to run.json only when given
    seq_lens: tuple[int, ...] = ()
    # {profile name: SHA-256 of its file} when the run started (None: an older edgeopt's run)
    profile_digests: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if self.data is not None and not isinstance(self.data, DataSpec):
            object.__setattr__(self, "data", DataSpec.from_dict(self.data))
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
        if not 0 <= self.seed < 2**32:  # the samplers' (numpy's) range
            raise ConfigError(
                f"--seed must be in 0..{2**32 - 1}, got {self.seed}", hint="e.g. --seed 0"
            )
        if len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(f"--objectives lists a metric twice: {','.join(self.objectives)}")
        if (self.trial_timeout_s is not None and self.trial_timeout_s <= 0) or (
            self.trial_memory_gb <= 0
        ):
            raise ConfigError("--trial-timeout and --trial-memory-gb must be positive")
        if self.data_workers < 0 or not self.data_cache_gb >= 0:
            raise ConfigError(
                "--data-workers and --data-cache-gb must be >= 0",
                hint="e.g. --data-workers auto --data-cache-gb 2 (0 turns the cache off)",
            )
        check_metric(self.metric, has_data=self.data is not None)
        parse_train_device(self.train_device)

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
        keys = (
            "model",
            "targets",
            "data",
            "objectives",
            "metric",
            "budgets",
            "sampler",
            "seed",
            "search_space",
            "plain_search",
            "space",
            "recipes",
            "seq_lens",
            "profile_digests",
        )
        key = {k: d.get(k, []) for k in keys}
        key["data"] = self.data.search_key() if self.data is not None else None
        return key

    def with_profile_digests(self, targets: Targets) -> RunConfig:
        """This config with the digests of its targets' profiles (``targets``, resolved from
        ``self.targets`` at the entry point): a resume whose profile file changed would mix
        two cost models in one front."""
        return replace(self, profile_digests=targets.digests())

    def target_names(self) -> tuple[str, ...] | None:
        """The targets' profile names as the run recorded them (its ``profile_digests``, in
        ``--target`` order); None for a run from before they were recorded."""
        return tuple(self.profile_digests) if self.profile_digests else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # the trust flags are the command line's, never written to run.json
        d["model"] = {
            k: v
            for k, v in self.model.to_dict().items()
            if not k.startswith("trust_") and k != "arch_from_file"
        }
        d["data"] = self.data.to_dict() if self.data is not None else None
        d["targets"] = list(self.targets)
        d["objectives"] = list(self.objectives)
        d["profile_digests"] = dict(self.profile_digests) if self.profile_digests else None
        d["space"] = {k: dict(v) for k, v in self.space.items()} if self.space else None
        d["recipes"] = [dict(r) for r in self.recipes]
        d["seq_lens"] = list(self.seq_lens)
        if not self.seq_lens:  # not given: run.json as before the option
            del d["seq_lens"]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        d = dict(data)
        d.setdefault("search_space", 1)  # written before the version was recorded
        # run.json is data: trust flags come only from the command line
        d["model"] = ModelSpec.from_dict(d["model"], with_trust=False)
        d["targets"] = tuple(d["targets"])
        d["objectives"] = tuple(d["objectives"])
        # a run.json from before DataSpec recorded the npz's path as a plain string
        d["data"] = DataSpec.from_dict(d["data"]) if d.get("data") is not None else None
        d["budgets"] = Budgets(**d.get("budgets", {}))
        d["recipes"] = tuple(d.get("recipes") or ())
        d["seq_lens"] = tuple(d.get("seq_lens") or ())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def changed_profiles(old: Mapping[str, Any], new: Mapping[str, Any]) -> ConfigError | None:
    """The error for a resume whose profile files changed since the run (``old``) started,
    from two search keys; None when they did not (or ``old`` recorded no digests)."""
    return profiles_changed(old.get("profile_digests"), new.get("profile_digests") or {})


def check_metric(metric: str, *, has_data: bool) -> None:
    """ConfigError for a ``--metric`` that is unknown, or other than ``accuracy`` without
    labelled data (fidelity, the stand-in for accuracy then, is top-1 agreement only)."""
    if metric not in TASK_METRICS:
        raise ConfigError(
            f"unknown --metric {metric!r}", hint=f"choose one of {', '.join(TASK_METRICS)}"
        )
    if metric != "accuracy" and not has_data:
        raise ConfigError(
            f"--metric {metric} needs labelled data",
            hint="pass --data data.npz, or drop --metric (without data the search scores "
            "top-1 agreement with the original model)",
        )


TRAIN_DEVICES = ("auto", "cpu", "cuda", "cuda:N")


def parse_train_device(text: str) -> str:
    """``--train-device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, normalised (lower case,
    no spaces); ConfigError for anything else."""
    value = text.strip().lower()
    if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
        return value
    raise ConfigError(
        f"invalid --train-device {text!r}", hint=f"choose one of {', '.join(TRAIN_DEVICES)}"
    )


def parse_duration(text: str, option: str = "--timeout") -> float:
    """``"20m"``, ``"90s"``, ``"1h"``, ``"1h30m"`` -> seconds.

    A bare number is refused (``option`` names the flag in the error): ``--timeout 20`` reads
    as 20 minutes as often as 20 seconds."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        raise ConfigError(
            f"{option} {text.strip()}: a duration needs a unit",
            hint=f"e.g. {option} {t}m or {option} {t}s (units s, m, h)",
        )
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", t)
    if not parts or "".join(a + b for a, b in parts) != t:
        raise ConfigError(
            f"invalid duration {text!r} for {option}", hint="use e.g. 90s, 20m, 1h30m"
        )
    seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:  # nothing could run: refused before any set-up work
        raise ConfigError(f"{option} {text.strip()} is no time at all", hint=f"e.g. {option} 20m")
    return seconds
