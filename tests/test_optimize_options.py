"""``optimize`` options: a duration needs a unit, and ``--target`` help names every shipped
profile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeopt.cli import main
from edgeopt.errors import ConfigError
from edgeopt.profiles import list_profiles


def _cli(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize(
    ("flag", "value", "hint"),
    [("--timeout", "20", "--timeout 20m"), ("--trial-timeout", "15", "--trial-timeout 15m")],
)
def test_a_duration_without_a_unit_is_refused(
    model_files: dict, tmp_path: Path, flag: str, value: str, hint: str
) -> None:
    out = tmp_path / "run"
    r = _cli("optimize", model_files["bundle"], "--trials", 1, flag, value, "--out", out)
    assert r.exit_code == 2, r.output
    assert f"{flag} {value}: a duration needs a unit" in r.stderr
    assert hint in r.stderr and "(units s, m, h)" in r.stderr
    assert not out.exists()  # refused before any work


def test_durations_with_units_still_parse() -> None:
    from edgeopt.config import parse_duration

    assert parse_duration("20m") == 1200.0
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("0.2s") == 0.2
    with pytest.raises(ConfigError, match="invalid duration"):
        parse_duration("soon")


def test_target_help_names_every_shipped_profile() -> None:
    r = _cli("optimize", "--help")
    assert r.exit_code == 0, r.output
    text = re.sub(r"-\s+", "-", " ".join(r.output.split()))  # help wraps at hyphens
    for p in list_profiles():
        for name in (p.name, *p.aliases):
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), name


def test_more_workers_than_cpus_is_said_before_any_work(model_files: dict, tmp_path: Path) -> None:
    """Six workers for two trials on two cores took 1.8 GB with no word (probe D10)."""
    import os

    cpus = len(os.sched_getaffinity(0))
    r = _cli("optimize", model_files["garbage"], "--workers", cpus + 1, "--out", tmp_path / "run")
    assert r.exit_code == 2  # the garbage model: after the warning, before any work
    assert f"warning: --workers {cpus + 1} on {cpus} CPU(s)" in r.output
    fine = _cli("optimize", model_files["garbage"], "--workers", 1, "--out", tmp_path / "r2")
    assert "warning: --workers" not in fine.output


def test_more_threads_than_cpus_is_said_before_any_work(model_files: dict, tmp_path: Path) -> None:
    """``--threads 64`` on two cores was taken in silence; torch threads beyond the CPUs spin
    against each other (two default-threaded processes ran a training loop 10x slower)."""
    import os

    cpus = len(os.sched_getaffinity(0))
    r = _cli("optimize", model_files["garbage"], "--threads", cpus * 4, "--out", tmp_path / "r")
    assert r.exit_code == 2  # the garbage model: after the warning, before any work
    assert f"warning: --threads {cpus * 4} x --workers 1 on {cpus} CPU(s)" in r.output
    fine = _cli("optimize", model_files["garbage"], "--threads", 1, "--out", tmp_path / "r2")
    assert "warning: --threads" not in fine.output
