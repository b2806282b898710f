"""A trial cache entry (RUN/cache/<key>/) is checked against the SHA-256 recorded when it was
written: a swapped or truncated entry is rebuilt, through the real command line on a real
tiny run, so a sibling trial neither fails nor reports another model's numbers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgeopt.loading import load_spec
from edgeopt.loading.spec import ModelSpec
from edgeopt.onnx_export import export_onnx

EDGEOPT = [sys.executable, "-c", "from edgeopt.cli import main; main()"]


def _optimize(model: Path, data: Path, out: Path, trials: int) -> subprocess.CompletedProcess[str]:
    args = ["optimize", model, "--data", data, "--target", "mobile", "--threads", "1",
            "--no-report", "--out", out, "--trials", trials]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*EDGEOPT, *(str(a) for a in args)], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def one_trial(tmp_path_factory: pytest.TempPathFactory, model_files: dict, tiny_data: Path) -> Path:
    """A run of trial 0 (the unchanged model): its torch phase is cache/<key>/, which the
    int8 baseline (trial 1) reuses."""
    out = tmp_path_factory.mktemp("runs") / "run"
    done = _optimize(model_files["bundle"], tiny_data, out, 1)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("damage", ["swapped", "truncated"])
def test_a_changed_cache_entry_is_rebuilt_not_trusted(
    one_trial: Path, model_files: dict, tiny_data: Path, tmp_path: Path, damage: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(one_trial, run)
    (entry,) = [p for p in (run / "cache").iterdir() if (p / "model.onnx").exists()]
    cached = entry / "model.onnx"
    good = cached.read_bytes()
    if damage == "swapped":  # another valid model of the same input: a wider network
        wide = load_spec(ModelSpec(path=str(model_files["bundle_wide"])))
        export_onnx(wide.module, wide.input_shape, tmp_path / "wide.onnx")
        shutil.copyfile(tmp_path / "wide.onnx", cached)
    else:
        cached.write_bytes(good[:1000])
    res = _optimize(model_files["bundle"], tiny_data, run, 2)
    assert res.returncode == 0, res.stderr
    study = optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run / 'study.db'}")
    trial = study.get_trials()[1]
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    assert trial.user_attrs["cache_hit"] is False  # rebuilt, not read from the bad entry
    assert cached.read_bytes() == good  # the entry holds the real model again
    assert "rebuilding it" in (run / "trials" / "1" / "trial.log").read_text()
