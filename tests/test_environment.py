"""Faults of the machine, for real: a full disk during a search and a read-only run directory,
on a small tmpfs mounted by the test. Each ends in a one-line error with exit 2, and the run
resumes once the fault is gone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgeopt.search.study.lifecycle import counted_trials

EDGEOPT = [sys.executable, "-c", "from edgeopt.cli import main; main()"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs (mounting needs root, which CI and the dev machines run as)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24M", "tmpfs", str(mnt)])
    if res.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEOPT_HEARTBEAT_S": "1"}
    return subprocess.run(
        [*EDGEOPT, *(str(a) for a in args)], capture_output=True, text=True, env=env, timeout=600
    )


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:  # nothing left buffered to fail at close
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def test_full_disk_stops_with_exit_2_and_the_run_resumes(
    small_disk: Path, model_files: dict, tiny_data: Path, onnx_run: Path
) -> None:
    out = small_disk / "run"
    args = ["optimize", model_files["onnx"], "--data", tiny_data, "--target", "mobile"]
    args += ["--out", out, "--no-report", "--trials"]
    shutil.copytree(onnx_run, out)  # the first run (``args`` with 2 trials), done once
    filler = _fill(small_disk)
    full = _run(*args, 4)
    assert full.returncode == 2, full.stderr
    assert "Error: no space left on the device" in full.stderr
    assert "Hint: free disk space, then re-run the same command" in full.stderr
    assert "Traceback" not in full.stderr
    filler.unlink()
    resumed = _run(*args, 4)
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{out / 'study.db'}")
    assert counted_trials(study) == 4
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) >= 2  # the first run's kept


def test_disk_full_inside_a_trial_requeues_it_and_the_resume_runs_it(
    small_disk: Path, model_files: dict, tiny_data: Path, tmp_path: Path
) -> None:
    """The disk fills up while a trial child builds (the study lives elsewhere, so the trial
    can be recorded): the search stops with exit 2, the trial is re-queued rather than
    counted as the candidate's failure, and the resume runs the int8 baseline and the seed."""
    from edgeopt.search.strategy.seeds import SEED_ATTR
    from edgeopt.search.study.lifecycle import retry_of

    out, db = small_disk / "run", tmp_path / "study.db"
    args = ["optimize", model_files["bundle"], "--data", tiny_data, "--target", "mobile"]
    args += ["--out", out, "--storage", f"sqlite:///{db}", "--no-report", "--trials"]
    first = _run(*args, 1)  # trial 0: the unchanged baseline
    assert first.returncode == 0, first.stderr
    filler = _fill(small_disk)
    os.truncate(filler, filler.stat().st_size - 12288)  # room for request.json, not a model
    full = _run(*args, 4)
    assert full.returncode == 2, full.stderr
    assert "Error: no space left on the device" in full.stderr
    assert "Traceback" not in full.stderr
    filler.unlink()
    resumed = _run(*args, 4)
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    retried = {retry_of(t) for t in trials} - {None}
    lost = [t for t in trials if t.state == TrialState.FAIL and t.number not in retried]
    assert not [t for t in lost if "space" in str(t.user_attrs.get("fail_reason"))]
    assert counted_trials(study) == 4
    done = [t for t in trials if t.state != TrialState.WAITING]
    assert any(t.user_attrs.get("baseline") == "int8" and t.state == TrialState.COMPLETE
               for t in done)  # fmt: skip
    assert any(SEED_ATTR in t.user_attrs for t in done)


def test_read_only_run_directory_is_a_clear_error(
    small_disk: Path, model_files: dict, tiny_data: Path, onnx_run: Path
) -> None:
    out = small_disk / "run"
    args = ["optimize", model_files["onnx"], "--data", tiny_data, "--target", "mobile"]
    shutil.copytree(onnx_run, out)  # ``args`` with 2 trials, run once for the session
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    report = _run("report", out)
    assert report.returncode == 2, report.stderr
    assert f"Error: cannot write {out / 'report'}: the folder or file is read-only" in (
        report.stderr
    )
    assert "Traceback" not in report.stderr
    elsewhere = _run("report", out, "--out", small_disk.parent / "report")
    assert elsewhere.returncode == 0, elsewhere.stderr
    resume = _run(*args, "--out", out, "--trials", "3", "--no-report")
    assert resume.returncode == 2
    assert "read-only" in resume.stderr and "Traceback" not in resume.stderr


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "deleted"])
@pytest.mark.parametrize("command", ["report", "export"])
def test_damaged_or_missing_study_db_is_exit_2(
    onnx_run: Path, tmp_path: Path, damage: str, command: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(onnx_run, run)
    db = run / "study.db"
    if damage == "truncated":
        db.write_bytes(db.read_bytes()[:1000])
    elif damage == "random bytes":
        db.write_bytes(os.urandom(20000))
    else:
        db.unlink()
    extra = ["--trial", "0", "--out", tmp_path / "m.onnx"] if command == "export" else []
    extra = extra or ["--out", tmp_path / "report"]
    res = _run(command, run, *extra)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("Error: ") and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 2  # Error: and Hint:
    if damage == "deleted":
        assert "has no study.db" in res.stderr
        assert not db.exists()  # reading never creates an empty study
