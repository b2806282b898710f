"""``edgeopt export`` and ``edgeopt report`` on a real tiny run made here with ``optimize``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeopt.cli import main
from edgeopt.data import load_npz
from edgeopt.measure.accuracy import onnx_accuracy
from edgeopt.search.run.collect import SCHEMA_VERSION


@pytest.fixture(scope="module")
def run_dir(
    tmp_path_factory: pytest.TempPathFactory, model_files: dict[str, Path], tiny_data: Path
) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    res = CliRunner().invoke(
        main,
        [
            "optimize",
            str(model_files["bundle"]),
            "--data",
            str(tiny_data),
            "--target",
            "mobile",
            "--trials",
            "3",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    return out


def _records(run_dir: Path) -> dict:
    return json.loads((run_dir / "report" / "report.json").read_text())


def test_optimize_left_every_report(run_dir: Path) -> None:
    names = sorted(p.name for p in (run_dir / "report").iterdir())
    assert names == ["report.html", "report.json", "report.md", "trials.csv"]
    data = _records(run_dir)
    assert data["schema_version"] == SCHEMA_VERSION and len(data["trials"]) == 3


def test_export_reproduces_the_reported_test_accuracy(
    run_dir: Path, tiny_data: Path, tmp_path: Path
) -> None:
    data = _records(run_dir)
    number = data["pick"]["number"] if data["pick"] else data["front"][0]
    out = tmp_path / "release" / "model.onnx"
    res = CliRunner().invoke(
        main, ["export", str(run_dir), "--trial", str(number), "--out", str(out), "--rebuild"]
    )
    assert res.exit_code == 0, res.output
    assert "rebuild matches" in res.output
    trial = next(t for t in data["trials"] if t["number"] == number)
    # the exact file of the trial
    assert out.read_bytes() == (run_dir / trial["onnx"]).read_bytes()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["trial"] == number and meta["candidate"] == trial["candidate"]
    assert meta["rebuild"]["matches"] and meta["rebuild"]["max_abs_diff"] <= 1e-4
    # its test accuracy, measured again here, is the one the report states
    bundle = load_npz(tiny_data)
    x, y = bundle.split("test")
    assert onnx_accuracy(out, x, y) == pytest.approx(trial["test_accuracy"], abs=1e-9)
    assert meta["test_accuracy"] == trial["test_accuracy"]


def test_rebuilt_model_gives_the_same_outputs(run_dir: Path) -> None:
    from edgeopt.measure.accuracy import onnx_logits
    from edgeopt.records import as_run
    from edgeopt.search.run.collect import load_run
    from edgeopt.search.run.replay import rebuild_check

    records = as_run(load_run(run_dir))
    done = [t for t in records.trials if t.is_complete]
    for trial in done:
        assert trial.onnx, trial.number
        check = rebuild_check(records, run_dir, trial, run_dir / trial.onnx)
        assert check.matches, (trial.number, check)
        assert check.top1_agreement == 1.0
    # the comparison is not vacuous: checked against another trial's model it fails
    x = np.random.default_rng(0).standard_normal((16, 1, 16, 16)).astype(np.float32)
    outs = {t.number: onnx_logits(run_dir / str(t.onnx), x) for t in done}
    pairs = [
        (a, b) for a in done for b in done if np.max(np.abs(outs[a.number] - outs[b.number])) > 1e-3
    ]
    if pairs:
        a, b = pairs[0]
        assert not rebuild_check(records, run_dir, a, run_dir / str(b.onnx)).matches


def test_export_errors_name_the_front(run_dir: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main, ["export", str(run_dir), "--trial", "99", "--out", str(tmp_path / "m.onnx")]
    )
    assert res.exit_code == 2
    assert "no trial 99" in res.output and "front trials:" in res.output
    res = CliRunner().invoke(
        main, ["export", str(tmp_path), "--trial", "0", "--out", str(tmp_path / "m.onnx")]
    )
    assert res.exit_code == 2 and "not an edgeopt run directory" in res.output


def test_export_of_a_failed_trial_is_a_usage_error(tmp_path: Path) -> None:
    from report_demo import demo_records

    from edgeopt.errors import ConfigError
    from edgeopt.search.run.replay import find_trial

    records = demo_records(30)
    failed = next(t for t in records["trials"] if t["state"] == "fail")
    with pytest.raises(ConfigError, match=f"trial {failed['number']} has no model") as exc:
        find_trial(records, failed["number"])
    assert exc.value.hint and exc.value.hint.startswith("front trials: ")


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the shared run that a test may damage (its study is the copy's study.db)."""
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def _front_trial(run: Path) -> dict:
    data = _records(run)
    number = data["pick"]["number"] if data["pick"] else data["front"][0]
    return next(t for t in data["trials"] if t["number"] == number)


def _record_onnx_path(run: Path, number: int, recorded: str, key: str = "onnx") -> None:
    """Make the study record ``recorded`` as trial ``number``'s model (or its ``key``), as a
    hand edit of the database would: Optuna refuses to change a finished trial's attributes
    itself."""
    import optuna

    from edgeopt.rundir import RunDir

    study_db = RunDir(run).study_db
    storage = f"sqlite:///{study_db}"
    study = optuna.load_study(study_name=None, storage=storage)
    trial_id = next(t._trial_id for t in study.get_trials(deepcopy=False) if t.number == number)
    with contextlib.closing(sqlite3.connect(study_db)) as db, db:
        changed = db.execute(
            "UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = ?",
            (json.dumps(recorded), trial_id, key),
        ).rowcount
    assert changed == 1
    reloaded = optuna.load_study(study_name=None, storage=storage)
    assert reloaded.trials[number].user_attrs[key] == recorded


def _export(run: Path, number: int, out: Path) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["export", str(run), "--trial", str(number), "--out", str(out)])
    return res.exit_code, res.output


@pytest.mark.parametrize("recorded", ["../../../../etc/hostname", "/etc/hostname"])
def test_export_refuses_a_recorded_path_outside_the_run(
    run_dir: Path, tmp_path: Path, recorded: str
) -> None:
    run = _copy_run(run_dir, tmp_path)
    number = _front_trial(run)["number"]
    _record_onnx_path(run, number, recorded)
    out = tmp_path / "release" / "model.onnx"
    code, output = _export(run, number, out)
    assert code == 2, output
    lines = output.splitlines()
    assert lines[0].startswith("Error: ") and len(lines) == 2 and lines[1].startswith("Hint: ")
    assert repr(recorded) in lines[0] and "outside the run directory" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "not a model"])
def test_export_refuses_a_file_that_is_not_an_onnx_model(
    run_dir: Path, tmp_path: Path, damage: str
) -> None:
    run = _copy_run(run_dir, tmp_path)
    trial = _front_trial(run)
    if damage == "truncated":
        model = run / trial["onnx"]
        model.write_bytes(model.read_bytes()[:300])
    else:
        # inside the run directory, so allowed as a path, but run.json is no model
        _record_onnx_path(run, trial["number"], "run.json")
        model = run / "run.json"
    # the study's SHA-256 edited to match too (else that check refuses the file first)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    _record_onnx_path(run, trial["number"], digest, key="onnx_sha256")
    out = tmp_path / "release" / "model.onnx"
    code, output = _export(run, trial["number"], out)
    assert code == 2, output
    assert output.startswith("Error: ") and "is not a valid ONNX model" in output
    assert "Traceback" not in output
    # neither the model, its .json, nor the temporary copy is left behind
    assert list(out.parent.iterdir()) == []


def test_report_command_writes_chosen_formats(run_dir: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main, ["report", str(run_dir), "--format", "md,csv", "--out", str(tmp_path / "r")]
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.md", "trials.csv"]
    res = CliRunner().invoke(main, ["report", str(run_dir), "--format", "pdf"])
    assert res.exit_code == 2 and "unknown report format" in res.output


def test_export_of_a_run_with_a_recipe_carries_it(run_dir: Path, tmp_path: Path) -> None:
    from edgeopt.data.metadata import read_recipe
    from edgeopt.data.preprocess import Preprocess
    from edgeopt.measure.accuracy import onnx_logits

    run = _copy_run(run_dir, tmp_path)
    recipe = Preprocess.default_for((1, 16, 16))
    config = json.loads((run / "run.json").read_text())
    config["data"]["recipe"] = recipe.to_dict()  # as an image-folder run records it
    (run / "run.json").write_text(json.dumps(config))
    trial = _front_trial(run)
    source = run / trial["onnx"]
    before = source.read_bytes()
    outs = [tmp_path / "release" / "a.onnx", tmp_path / "release" / "b.onnx"]
    for out in outs:
        code, output = _export(run, trial["number"], out)
        assert code == 0, output
        sidecar = out.with_name(out.stem + ".preprocess.json")
        assert f"preprocessing: {sidecar}" in output
        assert read_recipe(out) == recipe
        assert Preprocess.from_dict(json.loads(sidecar.read_text())) == recipe
        meta = json.loads(out.with_suffix(".json").read_text())
        assert meta["onnx_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        assert meta["source_onnx_sha256"] == hashlib.sha256(before).hexdigest()
        assert meta["preprocess"] == recipe.to_dict()
    # the trial's own file is untouched (its recorded digest still holds), the copy differs
    # only in its metadata: the same outputs
    assert source.read_bytes() == before and outs[0].read_bytes() != before
    x = np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32)
    assert np.array_equal(onnx_logits(outs[0], x), onnx_logits(source, x))
    assert read_recipe(source) is None
