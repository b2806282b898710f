"""Trust comes from the command line only: a run directory never re-enables running code
from a model file, in the search's worker processes or anywhere else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

EDGEOPT = [sys.executable, "-c", "from edgeopt.cli import main; main()"]


def _study(run: Path) -> optuna.Study:
    return optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run / 'study.db'}")


def test_trust_flag_reaches_workers_but_is_never_read_from_run_json(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    out = tmp_path / "run"
    args = ["optimize", model_files["pickle"], "--data", tiny_data, "--target", "mobile"]
    args += ["--out", out, "--trials", "3", "--workers", "2", "--no-report", "--trust-pickle"]
    done = subprocess.run([*EDGEOPT, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    trials = _study(out).get_trials()
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE] * 2  # workers unpickled it
    assert not any("trust" in str(t.user_attrs.get("fail_reason")) for t in trials)
    run_json = json.loads((out / "run.json").read_text())
    assert not [k for k in run_json["model"] if k.startswith("trust_")]  # never written
    # rebuilding a trial re-loads the model: only with the flag given again, here
    export = [*EDGEOPT, "export", str(out), "--trial", "1", "--rebuild"]
    refused = subprocess.run(
        [*export, "--out", str(tmp_path / "a.onnx")], capture_output=True, text=True
    )
    assert refused.returncode == 2, refused.stderr
    assert "loading it would run code from the file" in refused.stderr
    trusted = subprocess.run(
        [*export, "--out", str(tmp_path / "b.onnx"), "--trust-pickle"],
        capture_output=True,
        text=True,
    )
    assert trusted.returncode == 0, trusted.stderr
    # a tampered run.json that claims trust does not make a worker unpickle the model
    run_json["model"]["trust_pickle"] = True
    (out / "run.json").write_text(json.dumps(run_json))
    worker = subprocess.run(
        [sys.executable, "-m", "edgeopt.search.loop", str(out), "--trials", "4"],
        capture_output=True,
        text=True,
    )
    assert worker.returncode == 0, worker.stderr
    last = [t for t in _study(out).get_trials() if t.state != TrialState.WAITING][-1]
    assert last.state == TrialState.FAIL
    assert last.user_attrs["fail_stage"] == "load"
    assert "loading it would run code from the file" in last.user_attrs["fail_reason"]


def test_run_json_storage_never_creates_a_database(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    out = tmp_path / "run"
    args = ["optimize", model_files["onnx"], "--data", tiny_data, "--target", "mobile"]
    args += ["--out", out, "--trials", "2", "--no-report"]
    done = subprocess.run([*EDGEOPT, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    elsewhere = tmp_path / "elsewhere" / "planted.db"
    elsewhere.parent.mkdir()
    run_json = json.loads((out / "run.json").read_text())
    run_json["storage"] = f"sqlite:///{elsewhere}"
    (out / "run.json").write_text(json.dumps(run_json))
    report = subprocess.run(
        [*EDGEOPT, "report", str(out), "--out", str(tmp_path / "r")], capture_output=True, text=True
    )
    assert report.returncode == 2, report.stderr
    assert "reading a study never creates one" in report.stderr
    assert "Traceback" not in report.stderr
    assert not elsewhere.exists()
