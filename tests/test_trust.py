"""Trust comes from the command line only: a run directory never re-enables running code
from a model file, in the search's worker processes or anywhere else."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
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
        [sys.executable, "-m", "edgeopt.search.run.loop", str(out), "--trials", "4"],
        capture_output=True,
        text=True,
    )
    assert worker.returncode == 0, worker.stderr
    last = [t for t in _study(out).get_trials() if t.state != TrialState.WAITING][-1]
    assert last.state == TrialState.FAIL
    assert last.user_attrs["fail_stage"] == "load"
    assert "loading it would run code from the file" in last.user_attrs["fail_reason"]


def test_run_json_storage_never_creates_a_database(tmp_path: Path, onnx_run: Path) -> None:
    out = Path(shutil.copytree(onnx_run, tmp_path / "run"))
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


_BUILDER = """
from edgeopt import zoo

def build(**kwargs):
    return zoo.plain_cnn(**kwargs)
"""


def _state_dict_run(tmp_path: Path, model_files: dict, tiny_data: Path, *extra: str) -> Path:
    """A finished run of a plain state_dict built by a user's own module (``mynets:build``,
    importable through PYTHONPATH), as the README's --arch example makes it."""
    (tmp_path / "mynets.py").write_text(_BUILDER)
    out = tmp_path / "run"
    args = ["optimize", model_files["state_dict"], "--arch", "mynets:build"]
    args += ["--arch-kwargs", '{"in_channels": 1, "num_classes": 10, "width": 4}']
    args += ["--data", tiny_data, "--target", "mobile", "--out", out, "--no-report", *extra]
    done = subprocess.run(
        [*EDGEOPT, *map(str, args)], capture_output=True, text=True, env=_env(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    return out


def _env(tmp_path: Path) -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}


@pytest.fixture(scope="module")
def state_dict_run(
    tmp_path_factory: pytest.TempPathFactory, model_files: dict, tiny_data: Path
) -> Path:
    """One ``_state_dict_run`` with two workers, made once; tests copy it (with ``mynets.py``,
    whose folder ``_env`` puts on PYTHONPATH) before they change or read it."""
    return _state_dict_run(
        tmp_path_factory.mktemp("state_dict"), model_files, tiny_data, "--trials", "2",
        "--workers", "2",
    )  # fmt: skip


def _copy_run(run: Path, tmp_path: Path) -> Path:
    """``run`` and the builder module beside it, copied into ``tmp_path``."""
    shutil.copy(run.parent / "mynets.py", tmp_path / "mynets.py")
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_run_json_naming_code_never_runs_it(tmp_path: Path, state_dict_run: Path) -> None:
    out = _copy_run(state_dict_run, tmp_path)
    env = _env(tmp_path)
    assert _study(out).get_trials()[0].state == TrialState.COMPLETE  # workers got --arch
    pwned = tmp_path / "PWNED"
    run_json = json.loads((out / "run.json").read_text())
    run_json["model"]["arch"] = "os:system"
    run_json["model"]["arch_kwargs"] = {"command": f"touch {pwned}"}
    (out / "run.json").write_text(json.dumps(run_json))
    export = [*EDGEOPT, "export", str(out), "--trial", "1", "--rebuild"]
    refused = subprocess.run(
        [*export, "--out", str(tmp_path / "a.onnx")], capture_output=True, text=True, env=env
    )
    assert refused.returncode == 2, refused.stderr
    assert "cannot make edgeopt import and run code" in refused.stderr
    assert not pwned.exists()
    # the trust flags do not bless code named by the file either
    trusted = subprocess.run(
        [*export, "--out", str(tmp_path / "b.onnx"), "--trust-arch", "--trust-pickle"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert trusted.returncode == 2 and not pwned.exists(), trusted.stderr
    # a builder named on the command line that is not the recorded one: refused, not run
    other = subprocess.run(
        [*export, "--out", str(tmp_path / "c.onnx"), "--arch", "mynets:build"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert other.returncode == 2 and "not --arch mynets:build" in other.stderr
    assert not pwned.exists()
    # a worker started on the tampered run directory is refused: the study recorded the
    # settings it was started with, and the file's builder is not among them
    worker = subprocess.run(
        [sys.executable, "-m", "edgeopt.search.run.loop", str(out), "--trials", "3"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert worker.returncode != 0
    assert "model.arch (os:system here, mynets:build in the study)" in worker.stderr
    assert not pwned.exists()


def test_rebuild_needs_the_builder_on_the_command_line(
    tmp_path: Path, state_dict_run: Path
) -> None:
    out = _copy_run(state_dict_run, tmp_path)
    env = _env(tmp_path)
    export = [*EDGEOPT, "export", str(out), "--trial", "1", "--rebuild"]
    bare = subprocess.run(
        [*export, "--out", str(tmp_path / "a.onnx")], capture_output=True, text=True, env=env
    )
    assert bare.returncode == 2, bare.stderr
    assert "pass --arch mynets:build" in bare.stderr
    named = subprocess.run(
        [*export, "--out", str(tmp_path / "b.onnx"), "--arch", "mynets:build"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert named.returncode == 0, named.stderr
    assert "rebuild matches" in named.stdout


def test_study_config_naming_code_never_runs_it(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """A shared study's recorded configuration is data too (``--storage ... --rebuild``)."""
    store = str(tmp_path / "store")
    out = _state_dict_run(tmp_path, model_files, tiny_data, "--trials", "2", "--artifacts", store)
    pwned = tmp_path / "PWNED"
    study = _study(out)
    config = dict(study.user_attrs["edgeopt:config"])
    config["model"] = {**config["model"], "arch": "os:system"}
    config["model"]["arch_kwargs"] = {"command": f"touch {pwned}"}
    study.set_user_attr("edgeopt:config", config)
    args = ["export", "--storage", f"sqlite:///{out / 'study.db'}", "--study", "edgeopt"]
    args += ["--artifacts", store, "--trial", "1", "--rebuild", "--out", str(tmp_path / "a.onnx")]
    for extra in ([], ["--trust-arch"]):
        done = subprocess.run(
            [*EDGEOPT, *args, *extra], capture_output=True, text=True, env=_env(tmp_path)
        )
        assert done.returncode == 2, done.stderr
        assert "cannot make edgeopt import and run code" in done.stderr
        assert not pwned.exists()
