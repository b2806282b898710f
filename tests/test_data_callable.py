"""``--data module:callable``: the user's own torch Datasets, run only because the command line
named them (like ``--arch``). Nothing in a run directory or study names the code; a record
that does is never imported; a resume or a rebuild needs the reference again."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from edgeopt.data import DataKind, DataSpec, open_source
from edgeopt.data.callable import CallableSource
from edgeopt.errors import ConfigError

EDGEOPT = [sys.executable, "-c", "from edgeopt.cli import main; main()"]

# the conftest models' tiny task: 10 classes of 1x16x16 inputs around seeded prototypes
_MODULE = """
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

def _split(rng, protos, n):
    y = rng.integers(0, 10, n)
    x = protos[y] + 0.3 * rng.standard_normal((n, 1, 16, 16)).astype(np.float32)
    return TensorDataset(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y))

def make(seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((10, 1, 16, 16)).astype(np.float32)
    return _split(rng, protos, 200), _split(rng, protos, 60), _split(rng, protos, 60)

def other():
    return make(seed=1)

class Labelled(Dataset):
    def __init__(self, base):
        self.base = base
        self.targets = [int(y) for _, y in base]
        self.classes = [f"c{i}" for i in range(10)]
        self.reads = 0
    def __len__(self):
        return len(self.base)
    def __getitem__(self, i):
        self.reads += 1
        return self.base[i]

def labelled():
    train, val = make()[:2]
    return DataLoader(Labelled(train), batch_size=7), Labelled(val)

class Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(1, 16, 16), 0

def iterable():
    return Stream(), Stream()
"""

# imported, it leaves a mark: a record that named it and was obeyed would create PWNED
_EVIL = """
from pathlib import Path
Path(__file__).with_name("PWNED").touch()
def make():
    return ()
"""


def _env(where: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), *sys.path])}


def _modules(where: Path) -> None:
    (where / "mydata.py").write_text(_MODULE)
    (where / "evil.py").write_text(_EVIL)


def _cli(args: list[object], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGEOPT, *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


def _optimize_args(model: Path, out: Path, *extra: object) -> list[object]:
    return ["optimize", model, "--target", "mobile", "--out", out, "--threads", "1", *extra]


@pytest.fixture(scope="module")
def callable_run(tmp_path_factory: pytest.TempPathFactory, model_files: dict) -> Path:
    """A finished run on ``mydata:make`` with two workers and its report; tests copy it."""
    where = tmp_path_factory.mktemp("callable")
    _modules(where)
    out = where / "run"
    args = _optimize_args(model_files["bundle_wide"], out, "--data", "mydata:make")
    done = _cli([*args, "--trials", "3", "--workers", "2"], _env(where))
    assert done.returncode == 0, done.stderr
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    _modules(tmp_path)
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_callable_run_completes_and_nothing_in_it_names_the_code(callable_run: Path) -> None:
    study = optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{callable_run}/study.db")
    trials = study.get_trials()
    assert len(trials) >= 3
    reasons = [t.user_attrs.get("fail_reason") for t in trials]
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE] * 2, reasons  # both workers
    assert not any(t.user_attrs.get("fail_stage") == "load" for t in trials), reasons
    assert (callable_run / "report" / "report.json").exists()
    data = json.loads((callable_run / "run.json").read_text())["data"]
    assert data["kind"] == "callable" and data["path"] is None and data["fingerprint"]
    request = json.loads((callable_run / "trials" / "2" / "request.json").read_text())
    assert request["data"]["kind"] == "callable" and request["data"]["path"] is None
    facts = json.loads((callable_run / "data.json").read_text())
    assert facts["counts"] == {"train": 200, "val": 60, "test": 60}
    named = [p for p in callable_run.rglob("*") if p.is_file() and b"mydata" in p.read_bytes()]
    assert named == []  # run.json, request.json, logs, reports, the study's file
    with closing(sqlite3.connect(callable_run / "study.db")) as con:
        dump = "\n".join(con.iterdump())
    assert "mydata" not in dump and "edgeopt:config" in dump


def test_resume_and_rebuild_need_the_reference_and_the_same_data(
    tmp_path: Path, callable_run: Path, model_files: dict
) -> None:
    out = _copy(callable_run, tmp_path)
    env = _env(tmp_path)
    args = _optimize_args(model_files["bundle_wide"], out, "--trials", "4", "--no-report")
    bare = _cli(args, env)
    assert bare.returncode == 2, bare.stderr
    assert "pass --data REF" in bare.stderr and "trust that code" in bare.stderr
    other = _cli([*args, "--data", "mydata:other"], env)
    assert other.returncode == 2, other.stderr
    assert "the data is not what this run started with" in other.stderr
    export = ["export", out, "--trial", "2", "--rebuild"]
    refused = _cli([*export, "--out", tmp_path / "a.onnx"], env)
    assert refused.returncode == 2 and "pass --data REF" in refused.stderr, refused.stderr
    named = _cli([*export, "--out", tmp_path / "b.onnx", "--data", "mydata:make"], env)
    assert named.returncode == 0, named.stderr
    assert "rebuild matches" in named.stdout
    report = _cli(["report", out, "--out", tmp_path / "r"], env)  # reads records: no code
    assert report.returncode == 0, report.stderr
    resumed = _cli([*args, "--data", "mydata:make"], env)
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize(
    "tamper",
    [
        {"kind": "callable", "path": "evil:make"},
        {"kind": "callable", "path": "os:system"},
        {"kind": "callable", "path": None, "ref": "evil:make"},
    ],
)
def test_run_json_naming_data_code_never_runs_it(
    tmp_path: Path, callable_run: Path, model_files: dict, tamper: dict
) -> None:
    out = _copy(callable_run, tmp_path)
    env = _env(tmp_path)
    run_json = json.loads((out / "run.json").read_text())
    run_json["data"] = {**run_json["data"], **tamper}
    (out / "run.json").write_text(json.dumps(run_json))
    pwned = tmp_path / "PWNED"
    export = ["export", out, "--trial", "2", "--rebuild", "--out", tmp_path / "a.onnx"]
    resume = _optimize_args(model_files["bundle_wide"], out, "--trials", "4", "--no-report")
    for args in (export, resume):
        done = _cli(args, env)
        assert done.returncode == 2, done.stderr
        assert "--data" in done.stderr and "Traceback" not in done.stderr
    worker = subprocess.run(
        [sys.executable, "-m", "edgeopt.search.run.loop", str(out), "--trials", "4"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert worker.returncode != 0 and "callable" in worker.stderr, worker.stderr
    assert not pwned.exists()


def test_bad_callables_exit_2_before_any_work(tmp_path: Path, model_files: dict) -> None:
    _modules(tmp_path)
    env = _env(tmp_path)
    cases = {
        "mydata:iterable": "is an IterableDataset",
        "no_such_module_xyz:make": "cannot import 'no_such_module_xyz' for --data",
        "mydata:nope": "has no attribute 'nope'",
        "evil:make": "returned tuple, not (train, val)",
    }
    for ref, message in cases.items():
        out = tmp_path / ref.replace(":", "_")
        done = _cli(_optimize_args(model_files["bundle_wide"], out, "--data", ref), env)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr
        assert not (out / "study.db").exists()


def test_callable_source_reads_targets_unwraps_loaders_and_draws_seeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _modules(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # where the user's module lives
    source = CallableSource("mydata:labelled")
    assert source.splits == ("train", "val")
    assert source.input_shape == (1, 16, 16)
    assert source.class_names == tuple(f"c{i}" for i in range(10))
    reads = source._sets["train"].reads  # the loader's dataset, not the loader
    labels = source.labels("train")
    assert source._sets["train"].reads == reads  # from .targets: no sample read
    assert labels.dtype == np.int64 and len(labels) == source.count("train") == 200
    x, y = source.subset("train", 16, seed=3)
    x2, y2 = source.subset("train", 16, seed=3)
    assert x.shape == (16, 1, 16, 16) and x.dtype == np.float32
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert np.array_equal(y, labels[np.random.default_rng(3).permutation(200)[:16]])
    streamed = list(source.batches("val", batch=25))
    assert [len(b[1]) for b in streamed] == [25, 25, 10]
    plain = CallableSource("mydata:make")  # TensorDatasets: labels read once, ints only
    assert np.array_equal(plain.labels("train")[:200], labels)
    assert plain.fingerprint() == CallableSource("mydata:make").fingerprint()
    assert plain.fingerprint() != CallableSource("mydata:other").fingerprint()
    spec = DataSpec.from_ref("mydata:make").with_fingerprint(plain.fingerprint())
    assert "mydata" not in json.dumps(spec.to_dict())
    assert DataSpec.from_dict({**spec.to_dict(), "ref": "evil:make"}).ref is None
    with pytest.raises(ConfigError, match="study never records") as refused:
        open_source(DataSpec.from_dict(spec.to_dict()))
    assert "pass --data REF" in str(refused.value.hint)
    assert open_source(spec).fingerprint() == plain.fingerprint()
    changed = DataSpec(DataKind.CALLABLE, ref="mydata:other", fingerprint=plain.fingerprint())
    with pytest.raises(ConfigError, match="not what this run started with"):
        open_source(changed)
