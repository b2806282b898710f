"""What a study records about its run besides the trials, so that any machine can join it or
read it without the run directory that started it.

Study user attributes (JSON, written once by the first machine, under the study lock):

    edgeopt:settings   the search key with model and data as content digests; a machine whose
                       settings differ is refused, naming the difference
    edgeopt:config     the run configuration (without the storage URL, which may hold a
                       password): report and export on a machine that ran no trial read it
    edgeopt:baseline   the first machine's baseline; its host latency is the study's
                       reference, so latency from every machine is ratio x the same number
    edgeopt:artifacts  where the first machine uploaded trial files (a default for readers)
    test_accuracy:<n>  the front's test-split numbers (one key per trial: no lost updates
                       when two machines finish at once), with ``test_split``
    final_latency:<p>  the front's host latency on profile <p>, re-measured in one pass after
                       the search (``edgeopt.search.run.final_measure``; the last machine's)
    task_metrics:<n>   the front's and baselines' task metrics on validation and test
                       (``{"val": {name: entry}, "test": ...}``, see ``setup.finalize``)
    edgeopt:uid        a random id naming the study in MLflow (``integrations.tracking``; written
                       by the first ``--mlflow`` run, not under the lock)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from edgeopt.config import RunConfig
from edgeopt.data import fingerprint_of
from edgeopt.errors import ConfigError
from edgeopt.rundir import Baseline, comparable_key, differences

SETTINGS = "edgeopt:settings"
CONFIG = "edgeopt:config"
BASELINE = "edgeopt:baseline"
ARTIFACTS = "edgeopt:artifacts"
TEST_PREFIX = "test_accuracy:"
TEST_SPLIT = "test_split"
LATENCY_BY_SEQ_PREFIX = "latency_by_seq:"
FINAL_LATENCY_PREFIX = "final_latency:"
TASK_PREFIX = "task_metrics:"
SETTINGS_ADDED: dict[str, Any] = {
    "metric": "accuracy",
    "search_space": 1,
    "plain_search": False,
    "space": None,
    "recipes": [],
}
"""Settings added to the search key after studies were recorded, with the value they had."""


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def settings_of(config: RunConfig) -> dict[str, Any]:
    """The settings that define a study, comparable across machines: the search key with
    targets as profile names and the model and data files as content digests (so a copy
    of the same file at another path on another machine is the same setting)."""
    key = comparable_key(config.search_key())
    # unset = empty; the trust opt-ins are each command line's own, not the study's
    model = {
        k: v
        for k, v in key["model"].items()
        if v not in (None, {}, []) and k not in ("trust_pickle", "trust_arch")
    }
    key["model"] = {**model, "path": _digest(config.model.path)}
    key["data"] = fingerprint_of(config.data) if config.data else None
    return dict(json.loads(json.dumps(key)))  # as stored: tuples become lists


def check_settings(attrs: Mapping[str, Any], config: RunConfig, where: str) -> None:
    """ConfigError (exit 2) naming each setting in which ``config`` differs from the study
    whose user attributes are ``attrs``; nothing when the study recorded no settings yet."""
    old = attrs.get(SETTINGS)
    if not old:
        return
    old = {**SETTINGS_ADDED, **old}  # a study started before a setting existed had its default
    new = settings_of(config)
    parts = _described_differences(old, new)
    if parts:
        raise ConfigError(
            f"study {config.study_name!r} in {where} was started with other settings: "
            + "; ".join(parts),
            hint="join with the same settings as the first machine, or use another --study",
        )


def _described_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``name (new here, old in the study)`` per differing setting; a dict setting
    (budgets, model) names its differing fields."""
    parts = []
    for key in differences(old, new):
        a, b = old.get(key), new[key]
        if isinstance(a, dict) and isinstance(b, dict):
            subs = [s for s in {**a, **b} if a.get(s) != b.get(s)]
            parts += [
                f"{key}.{s} ({_short(b.get(s))} here, {_short(a.get(s))} in the study)"
                for s in subs
            ]
        else:
            parts.append(f"{key} ({_short(b)} here, {_short(a)} in the study)")
    return parts


def _short(value: Any, width: int = 60) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def publish(study: Any, config: RunConfig, baseline: Baseline) -> None:
    """Record the run's settings, config and reference baseline in ``study`` (first machine
    only; call under the study lock after ``check_settings``)."""
    if study.user_attrs.get(SETTINGS):
        return
    public = {k: v for k, v in config.to_dict().items() if k not in ("storage", "artifacts")}
    study.set_user_attr(CONFIG, public)
    study.set_user_attr(BASELINE, baseline.to_dict())
    if config.artifacts:
        study.set_user_attr(ARTIFACTS, config.artifacts)
    study.set_user_attr(SETTINGS, settings_of(config))  # last: marks the record complete


def config_from(attrs: Mapping[str, Any], storage: str, study_name: str) -> RunConfig | None:
    """The run configuration the study recorded (None for a study edgeopt did not start)."""
    data = attrs.get(CONFIG)
    if not data:
        return None
    # the study is data: a trust opt-in recorded in it is never honoured
    model = {**data.get("model", {}), "trust_pickle": False, "trust_arch": False}
    try:
        return RunConfig.from_dict(
            {**data, "model": model, "storage": storage, "study_name": study_name}
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"the study's recorded configuration is unreadable: {exc}") from exc


def baseline_from(attrs: Mapping[str, Any]) -> Baseline | None:
    """The study's reference baseline (the first machine's), or None."""
    data = attrs.get(BASELINE)
    if not data:
        return None
    try:
        return Baseline.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"the study's recorded baseline is unreadable: {exc}") from exc


def reference_latency_ms(attrs: Mapping[str, Any], local: Baseline) -> dict[str, float]:
    """Host latency per profile that every machine's measured ratio is scaled by: the study's
    reference (first machine) where recorded, else this machine's own baseline."""
    ref = baseline_from(attrs)
    merged = dict(local.host_latency_ms)
    if ref is not None:
        merged.update({k: float(v) for k, v in ref.host_latency_ms.items()})
    return merged


def test_numbers(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``{"test_accuracy": {number: value}, "task_metrics": {number: {...}}, "test_split":
    ...}`` recorded in the study."""
    acc = {k[len(TEST_PREFIX) :]: float(v) for k, v in attrs.items() if k.startswith(TEST_PREFIX)}
    task = {k[len(TASK_PREFIX) :]: v for k, v in attrs.items() if k.startswith(TASK_PREFIX)}
    out: dict[str, Any] = {"test_accuracy": acc, "task_metrics": task}
    if attrs.get(TEST_SPLIT):
        out["test_split"] = attrs[TEST_SPLIT]
    return out


def record_test_numbers(study: Any, final: Mapping[str, Any]) -> None:
    """Store the front's test numbers in the study, one attribute per trial."""
    attrs = study.user_attrs
    for number, value in final.get("test_accuracy", {}).items():
        if attrs.get(TEST_PREFIX + str(number)) != value:
            study.set_user_attr(TEST_PREFIX + str(number), value)
    for number, value in final.get("task_metrics", {}).items():
        if attrs.get(TASK_PREFIX + str(number)) != value:
            study.set_user_attr(TASK_PREFIX + str(number), value)
    if final.get("test_split") and attrs.get(TEST_SPLIT) != final["test_split"]:
        study.set_user_attr(TEST_SPLIT, final["test_split"])


def final_latency(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``{profile: figures}`` of the final re-measure recorded in the study."""
    n = len(FINAL_LATENCY_PREFIX)
    return {k[n:]: v for k, v in attrs.items() if k.startswith(FINAL_LATENCY_PREFIX)}


def record_final_latency(study: Any, figures: Mapping[str, Any]) -> None:
    """Store the final re-measure's figures in the study, one attribute per profile."""
    for profile, entry in figures.items():
        study.set_user_attr(FINAL_LATENCY_PREFIX + profile, entry)


def latency_by_seq(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``{profile: figures}`` of ``--seq-lens`` after the search (``search.run.seq_measure``)
    recorded in the study."""
    n = len(LATENCY_BY_SEQ_PREFIX)
    return {k[n:]: v for k, v in attrs.items() if k.startswith(LATENCY_BY_SEQ_PREFIX)}


def record_latency_by_seq(study: Any, figures: Mapping[str, Any]) -> None:
    """Store the ``--seq-lens`` figures in the study, one attribute per profile."""
    for profile, entry in figures.items():
        study.set_user_attr(LATENCY_BY_SEQ_PREFIX + profile, entry)
