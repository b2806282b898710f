"""Release checks: budgets for one model on one target, and the verdict (library side of
``edgeopt check``).

Budgets come from flags, else from the nearest ``edgeopt.toml`` (top-level table) or
``pyproject.toml`` with a ``[tool.edgeopt]`` table, searched from the current directory
upward to the project root (a folder holding ``.git``). Flags override file values.
Numbers come from ``edgeopt.bench.run_bench``: measured on the host profile (or on the
device a profile's ``[runner]`` names; the verdict says which), estimated on the others; a
``baseline`` model is measured interleaved with the model in the same run.
"""

from __future__ import annotations

import difflib
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.budgets import ACCURACY_DROP, BUDGETS, BudgetResult, Budgets, parse_limits
from edgeopt.data.recipe_choice import RecipeFlags, table_flags
from edgeopt.errors import ConfigError
from edgeopt.metrics import TASK_METRICS, Metric

# 2: ``metric``, the task metric accuracy budgets judged (``--metric``; ``accuracy`` = top-1)
SCHEMA_VERSION = 2
CONFIG_FILES = ("edgeopt.toml", "pyproject.toml")
SETTINGS = ("target", "data", "baseline", "metric")
KNOWN_KEYS = SETTINGS + tuple(BUDGETS)
HOW_TO_SET = (
    "pass a budget flag (e.g. --max-latency-ms 5 --max-size-mb 2), or add them to "
    "pyproject.toml under [tool.edgeopt] (or to edgeopt.toml), e.g.\n"
    '  [tool.edgeopt]\n  target = "mobile"\n  max_latency_ms = 5\n  max_size_mb = 2'
)


@dataclass(frozen=True)
class CheckConfig(Budgets):
    """The budgets of one check, and where to check them: target, data, baseline; ``metric``
    is the task metric the accuracy budgets judge (``edgeopt.metrics.TASK_METRICS``).
    ``source`` says where file values came from (messages name it)."""

    target: str = "cpu"
    data: str | None = None
    baseline: str | None = None
    metric: str = "accuracy"
    source: str | None = None
    recipe: RecipeFlags = field(default_factory=RecipeFlags)
    """The preprocessing keys of the file's ``[data]`` table (flags win over them)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.metric not in TASK_METRICS:
            raise ConfigError(
                f"unknown metric {self.metric!r}{self._where()}",
                hint=f"choose one of {', '.join(TASK_METRICS)}",
            )

    def _label(self, key: str) -> str:
        return f"budget {key}"

    def _where(self) -> str:
        return f" (from {self.source})" if self.source else ""

    def budgets(self) -> dict[str, float]:
        """The budgets that are set, in a stable order."""
        return self.limits()


def find_config_file(start: Path) -> Path | None:
    """The nearest ``edgeopt.toml``, or ``pyproject.toml`` holding ``[tool.edgeopt]``, from
    ``start`` upward; the search stops after a folder holding ``.git`` (the project root)."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "edgeopt.toml").is_file():
            return folder / "edgeopt.toml"
        py = folder / "pyproject.toml"
        if py.is_file() and "edgeopt" in _read_toml(py).get("tool", {}):
            return py
        if (folder / ".git").exists():
            return None
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def load_config_file(path: Path) -> dict[str, Any]:
    """The edgeopt table of ``path`` as check settings (paths made absolute against the
    file's folder). Unknown keys are a ConfigError naming the key and the file."""
    data = _read_toml(path)
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("edgeopt", {})
        where = f"[tool.edgeopt] in {path}"
    else:
        table = data
        where = str(path)
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key == "space":  # the search's own (``project_space``)
            continue
        if key == "data" and isinstance(value, dict):  # [tool.edgeopt.data] / [data]
            sub = f"[tool.edgeopt.data] in {path}" if path.name == "pyproject.toml" else None
            out["recipe"] = table_flags(value, sub or f"[data] in {path}", known=("path",))
            value = value.get("path")
            if value is None:
                continue
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            raise ConfigError(
                f"unknown key {key!r} in {where}",
                hint=(f"did you mean {close[0]!r}? " if close else "")
                + f"known keys: {', '.join(KNOWN_KEYS)}",
            )
        if key in SETTINGS:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{key} in {where} must be a non-empty string")
            if key in ("data", "baseline") or value.endswith(".toml"):
                value = str((path.parent / value).resolve())
            out[key] = value
        else:
            out.update(parse_limits({key: value}, lambda k: f"{k} in {where}"))
    return out


def project_recipe(start: Path | None = None) -> RecipeFlags:
    """The preprocessing keys of the ``[data]`` table of the nearest config file (see
    ``find_config_file``), as ``RecipeFlags`` naming the file; none set when there is none."""
    path = find_config_file(start or Path.cwd())
    recipe = load_config_file(path).get("recipe") if path is not None else None
    return recipe if isinstance(recipe, RecipeFlags) else RecipeFlags()


def project_space(start: Path | None = None) -> tuple[Any, str] | None:
    """The ``[space]`` table (``[tool.edgeopt.space]`` in pyproject.toml) of the nearest
    config file (see ``find_config_file``) and where it is; None when there is none."""
    path = find_config_file(start or Path.cwd())
    if path is None:
        return None
    data = _read_toml(path)
    if path.name == "pyproject.toml":
        table, where = data.get("tool", {}).get("edgeopt", {}), f"[tool.edgeopt.space] in {path}"
    else:
        table, where = data, f"[space] in {path}"
    return (table["space"], where) if isinstance(table, dict) and "space" in table else None


def resolve_config(flags: Mapping[str, Any], start: Path | None = None) -> CheckConfig:
    """Settings from the nearest config file, overridden by the flags that are not None.

    Raises ConfigError when no budget is set anywhere (with how to set one).
    """
    path = find_config_file(start or Path.cwd())
    values: dict[str, Any] = load_config_file(path) if path else {}
    source = None
    if path is not None:
        source = f"[tool.edgeopt] in {path}" if path.name == "pyproject.toml" else str(path)
    for key, value in flags.items():
        if key not in KNOWN_KEYS:
            raise ValueError(f"not a check setting: {key}")
        if value is not None:
            values[key] = value
    try:
        cfg = CheckConfig(**values, source=source)
    except TypeError as exc:  # a wrong value type from the file
        raise ConfigError(f"bad value in {source}: {exc}") from exc
    if not cfg.budgets():
        where = (
            f"{source} sets none"
            if source
            else "no edgeopt.toml or [tool.edgeopt] in pyproject.toml from here up to the "
            "project root"
        )
        raise ConfigError(f"no budget to check: no budget flag, and {where}", hint=HOW_TO_SET)
    return cfg


def validate(cfg: CheckConfig, profile_measured: bool, *, runner: bool = False) -> None:
    """Refuse, before any work, budgets this check cannot evaluate. ``runner``: the profile
    has a ``[runner]``, whose energy is measured where the device has a power reading and
    estimated (labelled so) elsewhere."""
    if cfg.max_energy_mj is not None and profile_measured and not runner:
        raise ConfigError(
            f"max_energy_mj cannot be checked on '{cfg.target}': energy on this host would "
            "need a power meter",
            hint="check energy on an estimated target, e.g. --target mobile",
        )
    if cfg.data is None and cfg.metric != "accuracy":
        raise ConfigError(
            f"--metric {cfg.metric} needs labelled data",
            hint="pass --data data.npz (or data = ...)",
        )
    limits = cfg.limits()
    for key in limits:
        if cfg.data is None and BUDGETS[key].quantity in (Metric.ACCURACY, ACCURACY_DROP):
            raise ConfigError(
                f"{key} needs labelled data", hint="pass --data data.npz (or data = ...)"
            )
    relative = [key for key in limits if BUDGETS[key].relative]
    if cfg.baseline is None and relative:
        raise ConfigError(
            f"{relative[0]} compares with a previous model",
            hint="pass --baseline old.onnx (or baseline = ...)",
        )
    if cfg.baseline is not None and not relative:
        raise ConfigError(
            "--baseline is given but no budget compares with it",
            hint="add --max-regression 5% (latency) and/or --max-accuracy-drop 0.01",
        )


@dataclass(frozen=True)
class Verdict:
    """All budgets of one check; ``passed`` when every one passed."""

    model: str
    target: str
    measured: bool
    results: tuple[BudgetResult, ...]
    source: str | None = None
    baseline: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    device: str | None = None
    metric: str = "accuracy"
    latency_by_seq: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The model's p50 latency at each ``--seq-lens`` length (no budget judges them)."""

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> tuple[BudgetResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "target": self.target,
            "measured": self.measured,
            "device": self.device,
            "baseline": self.baseline,
            "budgets_from": self.source or "flags",
            "metric": self.metric,
            "passed": self.passed,
            "results": [r.to_dict() for r in self.results],
            "notes": list(self.notes),
            **({"latency_by_seq": self.latency_by_seq} if self.latency_by_seq else {}),
        }


def verdict_from_bench(cfg: CheckConfig, model: str, bench: Mapping[str, Any]) -> Verdict:
    """Compare a ``run_bench`` report (the model first, the baseline second) with the
    budgets of ``cfg``."""
    return Verdict(
        model=model,
        target=str(bench["target"]),
        measured=bool(bench["measured"]),
        results=cfg.evaluate(bench, baseline=cfg.baseline),
        source=cfg.source,
        baseline=cfg.baseline,
        notes=tuple(bench.get("assumptions", [])),
        device=bench.get("device"),
        metric=cfg.metric,
        latency_by_seq={
            n: v["latency_p50_ms"] for n, v in bench["results"][0].get("latency_by_seq", {}).items()
        },
    )


def junit_xml(verdict: Verdict) -> str:
    """JUnit XML: one testcase per budget, a ``failure`` element for each failed one."""
    suite = ET.Element(
        "testsuite",
        name="edgeopt check",
        tests=str(len(verdict.results)),
        failures=str(len(verdict.failed)),
        errors="0",
        skipped="0",
    )
    props = ET.SubElement(suite, "properties")
    for k, v in (
        ("model", verdict.model),
        ("target", verdict.target),
        ("budgets_from", verdict.source or "flags"),
        *((("device", verdict.device),) if verdict.device else ()),
    ):
        ET.SubElement(props, "property", name=k, value=str(v))
    for r in verdict.results:
        case = ET.SubElement(
            suite, "testcase", classname=f"edgeopt.check.{verdict.target}", name=r.name, time="0"
        )
        out = ET.SubElement(case, "system-out")
        out.text = r.describe() + (f"; {r.detail}" if r.detail else "")
        if not r.passed:
            fail = ET.SubElement(case, "failure", message=r.describe(), type="BudgetExceeded")
            fail.text = r.describe() + (f"; {r.detail}" if r.detail else "")
    root = ET.Element(
        "testsuites",
        name="edgeopt",
        tests=suite.get("tests", "0"),
        failures=suite.get("failures", "0"),
    )
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
