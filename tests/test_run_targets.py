"""A run's targets are resolved to profiles once: a profile file edited or removed while the
run goes on changes none of its trials (real runs on a tiny model, real trial processes)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgeopt.config import RunConfig
from edgeopt.errors import ConfigError
from edgeopt.loading import ModelSpec
from edgeopt.profiles import load_profile
from edgeopt.search.run.loop import Worker
from edgeopt.search.run.setup import prepare

SLOW = "invoke_overhead_us = { v = 400.0,"


def _board(path: Path) -> Path:
    """The shipped mobile profile as the user's own file ``myboard`` (no aliases)."""
    text = load_profile("mobile").source_path.read_text()  # type: ignore[union-attr]
    text = text.replace('name = "mobile-sd8gen2"', 'name = "myboard"')
    path.write_text(text.replace('aliases = ["mobile"]', "aliases = []"))
    return path


def _prepared(tmp_path: Path, model: Path, data: Path) -> tuple[Path, Path]:
    board = _board(tmp_path / "myboard.toml")
    config = RunConfig(
        model=ModelSpec(path=str(model)),
        data=str(data),
        targets=(str(board),),
        trial_timeout_s=120.0,
    )
    run = tmp_path / "run"
    prepare(config, run)
    return board, run


def _trials(run: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run / 'study.db'}")
    return [t for t in study.get_trials() if t.state != TrialState.WAITING]


def test_trial_processes_use_the_profiles_the_run_started_with(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    board, run = _prepared(tmp_path, model_files["bundle"], tiny_data)
    worker = Worker.open(run)  # the run's process: its profiles are resolved now
    board.unlink()  # the file is gone while the run goes on: no trial process reads it
    worker.run(2, None)
    trials = _trials(run)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [
        t.user_attrs.get("fail_reason") for t in trials
    ]


def test_a_worker_joining_after_the_profile_file_changed_is_refused(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    board, run = _prepared(tmp_path, model_files["bundle"], tiny_data)
    Worker.open(run).run(1, None)
    first = _trials(run)[0].user_attrs["measurements"]["myboard"]["values"]["latency_ms"]["value"]
    board.write_text(board.read_text().replace("invoke_overhead_us = { v = 100.0,", SLOW))
    assert SLOW in board.read_text()
    with pytest.raises(ConfigError, match="profile myboard is not the file this run started"):
        Worker.open(run, 1).run(2, None)  # would estimate with other numbers than trial 0
    trials = _trials(run)
    assert len(trials) == 1
    assert trials[0].user_attrs["measurements"]["myboard"]["values"]["latency_ms"]["value"] == first
