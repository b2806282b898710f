"""QAT on a model neither torch.fx nor torch.export can capture: the first failure switches
QAT off for the study (said once in the output and in the report) instead of filling it with
the same failure, and a drawn candidate a baseline built already is not built again (issue
23: on a small ViT, 1,239 of 1,245 trials were the same QAT trace failure, and ``unchanged
(fp32)`` ran twice)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState
from uncapturable import build

from edgeopt.report.summary import summarize
from edgeopt.search.run.collect import load_run

EDGEOPT = [str(Path(sys.executable).parent / "edgeopt")]
TESTS = Path(__file__).resolve().parent  # holds uncapturable.py, named by --arch

QAT = {"qat.epochs": 1, "prune.ratio": 0.0, "quantize.mode": "fp32"}


def test_a_qat_trace_failure_switches_qat_off_once(tmp_path: Path, tiny_data: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    torch.save(build().state_dict(), tmp_path / "weights.pt")
    run = tmp_path / "run"
    base = [*EDGEOPT, "optimize", str(tmp_path / "weights.pt"), "--arch", "uncapturable:build"]
    base += ["--data", str(tiny_data), "--target", "cpu", "--sampler", "random"]
    base += ["--plain-search", "--out", str(run), "--no-report"]
    first = subprocess.run([*base, "--trials", "2"], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    storage = f"sqlite:///{run / 'study.db'}"
    study = optuna.load_study(study_name="edgeopt", storage=storage)
    study.enqueue_trial(QAT)
    study.enqueue_trial(QAT)
    done = subprocess.run([*base, "--trials", "4"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]

    trials = optuna.load_study(study_name="edgeopt", storage=storage).get_trials()
    unchanged, failed, after = trials[0], trials[2], trials[3]
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_stage"] == "qat"
    reason = failed.user_attrs["fail_reason"]
    assert "torch.fx cannot trace the model" in reason
    assert "torch.export cannot capture it" in reason
    # the next trial asked for QAT too: it is off, so the draw is the unchanged model, which
    # the baseline built already; its results are taken, not built again
    assert "qat.epochs" not in after.params
    assert after.state == TrialState.COMPLETE
    assert after.user_attrs["same_as_baseline"] == unchanged.number
    assert after.values == unchanged.values
    assert after.user_attrs["onnx"] == unchanged.user_attrs["onnx"]
    note = "Quantization-aware training is off for this model from now on: torch.fx cannot"
    assert done.stderr.count(note) == 1, done.stderr[-3000:]
    records = load_run(run)
    assert [d["stage"] for d in records["disabled_stages"]] == ["qat"]
    assert any(
        n.startswith("Quantization-aware training was disabled for this model: torch.fx")
        for n in summarize(records).notes
    )
