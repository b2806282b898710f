"""What ``optimize --out`` and ``report`` refuse to write into, through the real command line
on a real tiny run: a run directory whose study is gone, symlinks planted inside a run
directory, and a non-empty folder that is no run directory. Each is exit 2 before any work,
and nothing there or outside is changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EDGEOPT = [sys.executable, "-c", "from edgeopt.cli import main; main()"]


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*EDGEOPT, *(str(a) for a in args)], capture_output=True, text=True, env=env, timeout=600
    )


def _optimize(model: Path, data: Path, out: Path, trials: int) -> list[object]:
    return ["optimize", model, "--data", data, "--target", "mobile", "--threads", "1",
            "--no-report", "--out", out, "--trials", trials]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, model_files: dict, tiny_data: Path) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    done = _run(*_optimize(model_files["bundle"], tiny_data, out, 2))
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _refused(res: subprocess.CompletedProcess[str], *words: str) -> None:
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("Error: ") and "Traceback" not in res.stderr, res.stderr
    for word in words:
        assert word in res.stderr, res.stderr


@pytest.mark.parametrize("damage", ["deleted", "empty"])
def test_a_run_whose_study_is_gone_is_not_started_over(
    run: Path, model_files: dict, tiny_data: Path, damage: str
) -> None:
    db = run / "study.db"
    if damage == "deleted":
        db.unlink()
    else:
        db.write_bytes(b"")
    trials = _snapshot(run / "trials")
    res = _run(*_optimize(model_files["bundle"], tiny_data, run, 2))
    _refused(res, "study.db", "restore", "--out")
    assert _snapshot(run / "trials") == trials  # trial 0's files were not overwritten
    assert (not db.exists()) if damage == "deleted" else db.stat().st_size == 0


def test_report_does_not_write_through_a_symlinked_report_folder(run: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "report.html").write_text("precious")
    shutil.rmtree(run / "report", ignore_errors=True)
    (run / "report").symlink_to(victim)
    _refused(_run("report", run), str(run / "report"), "symbolic link")
    assert _snapshot(victim) == {"report.html": b"precious"}


@pytest.mark.parametrize("where", ["trials/2", "trials/3", "cache/0123456789abcdef", "report"])
def test_a_resume_does_not_write_through_a_symlink_in_the_run(
    run: Path, model_files: dict, tiny_data: Path, tmp_path: Path, where: str
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "model.onnx").write_text("precious")
    link = run / where
    link.parent.mkdir(exist_ok=True)
    shutil.rmtree(link, ignore_errors=True)
    link.symlink_to(victim)
    res = _run(*_optimize(model_files["bundle"], tiny_data, run, 4))
    _refused(res, str(link), "symbolic link")
    assert _snapshot(victim) == {"model.onnx": b"precious"}


def test_out_a_non_empty_folder_that_is_no_run_is_refused(
    model_files: dict, tiny_data: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "important.txt").write_text("mine")
    res = _run(*_optimize(model_files["bundle"], tiny_data, mine, 1))
    _refused(res, "important.txt", "new or empty folder")
    assert sorted(p.name for p in mine.iterdir()) == ["important.txt"]


def _damage(run: Path, damage: str) -> None:
    if damage == "run.json model null":
        config = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**config, "model": None}))
    elif damage == "final.json a list":
        (run / "final.json").write_text("[1, 2, 3]")
    else:
        (run / "final.json").write_bytes((run / "final.json").read_bytes()[:30])


DAMAGES = ["run.json model null", "final.json a list", "final.json truncated"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_run_file_stops_optimize_before_any_work(
    run: Path, model_files: dict, tiny_data: Path, damage: str
) -> None:
    _damage(run, damage)
    trials = _snapshot(run / "trials")
    res = _run(*_optimize(model_files["bundle"], tiny_data, run, 4))
    _refused(res, damage.split()[0], "corrupt")
    assert len(res.stderr.strip().splitlines()) <= 2  # Error: and Hint:, no trial ran
    assert _snapshot(run / "trials") == trials


@pytest.mark.parametrize("damage", DAMAGES[:2])
@pytest.mark.parametrize("command", ["report", "export"])
def test_a_damaged_run_file_is_exit_2_in_report_and_export(
    run: Path, tmp_path: Path, damage: str, command: str
) -> None:
    _damage(run, damage)
    extra = ["--trial", "0", "--out", tmp_path / "m.onnx"] if command == "export" else []
    _refused(_run(command, run, *extra), damage.split()[0], "corrupt")
