"""What the terminal names as the pick, ``export --best``, and what ``export``/``report``
refuse to write or hand out: on real tiny runs made here with ``optimize``."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result

from edgeopt.cli import main


def _optimize(out: Path, model: Path, data: Path, *extra: str) -> Result:
    args = ["optimize", str(model), "--data", str(data), "--target", "mobile"]
    args += ["--trials", "4", "--threads", "1", "--out", str(out), *extra]
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def f1_run(
    tmp_path_factory: pytest.TempPathFactory, model_files: dict[str, Path], tiny_data: Path
) -> tuple[Path, Result]:
    """A run optimizing macro F1 on the mobile profile (a long profile name)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    res = _optimize(out, model_files["bundle"], tiny_data, "--metric", "f1")
    assert res.exit_code == 0, res.output
    return out, res


@pytest.fixture(scope="module")
def infeasible_run(
    tmp_path_factory: pytest.TempPathFactory, model_files: dict[str, Path], tiny_data: Path
) -> tuple[Path, Result]:
    """A run whose size budget no model can meet: nothing to recommend."""
    out = tmp_path_factory.mktemp("runs") / "run"
    res = _optimize(out, model_files["bundle"], tiny_data, "--max-size-mb", "0.000001")
    assert res.exit_code == 1, res.output
    return out, res


def _report(run: Path) -> dict:
    return json.loads((run / "report" / "report.json").read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` with its SHA-256 (to prove nothing was written)."""
    return {str(p.relative_to(path)): _sha(p) for p in sorted(path.rglob("*")) if p.is_file()}


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error(res: Result) -> str:
    """The Error:/Hint: pair of a usage error, checked for shape; the error line."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("Error: ") and lines[-1].startswith("Hint: "), res.stderr
    return lines[0]


# ------------------------------------------------------------------ the pick, named
def test_optimize_ends_with_the_reports_pick_and_export_best_writes_it(
    f1_run: tuple[Path, Result], tmp_path: Path
) -> None:
    run, res = f1_run
    pick = _report(run)["pick"]
    assert pick is not None
    trial = next(t for t in _report(run)["trials"] if t["number"] == pick["number"])
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith(f"recommended: trial {pick['number']}, "), res.stdout
    assert str(run / trial["onnx"]) in last
    # the last progress line's pick is the report's (no final re-measure on an estimated
    # target that could change it)
    progress = [ln for ln in res.stderr.splitlines() if ln.startswith("[4/4] ")]
    assert len(progress) == 1 and f"pick: trial {pick['number']} (" in progress[0]
    # edgeopt report says the same
    rep = _invoke("report", run, "--format", "json", "--out", tmp_path / "r")
    assert rep.exit_code == 0, rep.output
    assert rep.stdout.strip().splitlines()[-1] == last
    # export --best: exactly that trial's file
    out = tmp_path / "release" / "model.onnx"
    exp = _invoke("export", run, "--best", "--out", out)
    assert exp.exit_code == 0, exp.output
    assert f"trial {pick['number']}: " in exp.stdout
    assert _sha(out) == _sha(run / trial["onnx"]) == trial["onnx_sha256"]
    assert json.loads(out.with_suffix(".json").read_text())["trial"] == pick["number"]


def test_export_best_and_trial_are_exclusive_and_one_is_needed(
    f1_run: tuple[Path, Result], tmp_path: Path
) -> None:
    run, _ = f1_run
    out = tmp_path / "m.onnx"
    both = _invoke("export", run, "--best", "--trial", "0", "--out", out)
    assert both.exit_code == 2 and "--best" in both.output and "--trial" in both.output
    neither = _invoke("export", run, "--out", out)
    assert neither.exit_code == 2 and "--best" in neither.output and "--trial" in neither.output
    assert not out.exists()


def test_export_best_without_a_feasible_pick_says_why(
    infeasible_run: tuple[Path, Result], tmp_path: Path
) -> None:
    run, res = infeasible_run
    assert res.stdout.strip().splitlines()[-1].startswith("recommended: none: ")
    out = tmp_path / "m.onnx"
    error = _one_error(_invoke("export", run, "--best", "--out", out))
    assert "no trial to recommend" in error and "size_mb" in error
    assert not out.exists() and not out.with_suffix(".json").exists()


# ------------------------------------------------------------------ the metric, named
def test_a_f1_run_names_macro_f1_not_accuracy(f1_run: tuple[Path, Result]) -> None:
    run, res = f1_run
    lines = [ln for ln in res.stderr.splitlines() if re.match(r"\[\d+/4\] ", ln)]
    assert len(lines) == 4
    for line in lines:
        assert "accuracy" not in line, line
    assert any("val macro F1 " in ln for ln in lines)
    assert "val macro F1" in res.stdout  # the final front table's heading
    md = (run / "report" / "report.md").read_text()
    head = next(ln for ln in md.splitlines() if "objectives:" in ln)
    assert "accuracy" not in head and "macro F1 (max)" in head
    html = (run / "report" / "report.html").read_text()
    assert "<th>accuracy (measured)</th>" not in html
    assert "val macro F1 (measured)" in html


def test_the_front_table_cuts_no_name(f1_run: tuple[Path, Result]) -> None:
    run, res = f1_run
    data = _report(run)
    table = res.stdout.split("Pareto front", 1)[1].split("meas. = ", 1)[0]
    for target in data["targets"]:
        assert target in table  # mobile-sd8gen2, not mobile-sd8ge
    shown = [t for t in data["trials"] if t["number"] in data["front"] or t.get("baseline")]
    for t in shown:
        if t["state"] == "complete":
            assert t["describe"] in table, t["describe"]


def test_front_table_keeps_a_long_name_whole() -> None:
    from edgeopt.report.terminal import render_front

    long = "prune 0.50 l2 + finetune 3ep kd + int8_static + fp32 nodes conv1,conv2"
    meas = {"latency_ms": {"value": 0.5, "provenance": "estimated"}}
    trial = {
        "number": 7,
        "state": "complete",
        "describe": long,
        "on_front": True,
        "val_accuracy": 0.9,
        "test_accuracy": 0.89,
        "size_mb": 1.0,
        "measurements": {"a-very-long-profile-name-x1": meas},
    }
    text = render_front({"trials": [trial], "targets": ["a-very-long-profile-name-x1"]})
    assert long in text and "a-very-long-profile-name-x1" in text


# ------------------------------------------------------------------ export refuses
@pytest.mark.parametrize("how", ["direct", "through a link"])
def test_export_refuses_an_out_inside_the_run_dir(
    f1_run: tuple[Path, Result], tmp_path: Path, how: str
) -> None:
    run = _copy(f1_run[0], tmp_path)
    done = [t for t in _report(run)["trials"] if t["state"] == "complete"]
    victim, other = done[0], done[-1]
    assert victim["number"] != other["number"]
    target = run / victim["onnx"]
    if how == "through a link":
        link = tmp_path / "elsewhere"
        link.symlink_to(target.parent, target_is_directory=True)
        target = link / target.name
    before = _tree(run)
    error = _one_error(_invoke("export", run, "--trial", other["number"], "--out", target))
    assert "inside the run directory" in error
    assert _tree(run) == before  # nothing overwritten, nothing added
    # and the run still hands out the right file
    out = tmp_path / "m.onnx"
    assert _invoke("export", run, "--trial", victim["number"], "--out", out).exit_code == 0
    assert _sha(out) == victim["onnx_sha256"]


def test_export_refuses_a_trial_file_changed_after_the_run(
    f1_run: tuple[Path, Result], tmp_path: Path
) -> None:
    run = _copy(f1_run[0], tmp_path)
    done = [t for t in _report(run)["trials"] if t["state"] == "complete"]
    victim, other = done[0], done[-1]
    # a valid ONNX model, but not the one the study recorded for the trial
    shutil.copyfile(run / other["onnx"], run / victim["onnx"])
    tampered = _sha(run / victim["onnx"])
    assert tampered != victim["onnx_sha256"]
    out = tmp_path / "m.onnx"
    error = _one_error(_invoke("export", run, "--trial", victim["number"], "--out", out))
    assert victim["onnx_sha256"] in error and tampered in error
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert list(tmp_path.glob("*.tmp")) == [] and list(tmp_path.glob(".*")) == []


def test_report_refuses_an_out_inside_the_run_dir(
    f1_run: tuple[Path, Result], tmp_path: Path
) -> None:
    run = _copy(f1_run[0], tmp_path)
    before = _tree(run)
    for inside in (run / "trials" / "0", run, run / "trials"):
        error = _one_error(_invoke("report", run, "--out", inside))
        assert "inside the run directory" in error
    assert _tree(run) == before
    # its own report folder (the default) stays allowed
    assert _invoke("report", run, "--format", "md", "--out", run / "report").exit_code == 0


# ------------------------------------------------------------------ more bad input
def test_export_out_under_a_file_is_a_usage_error(
    f1_run: tuple[Path, Result], tmp_path: Path
) -> None:
    run, _ = f1_run
    (tmp_path / "afile").write_text("x")
    error = _one_error(_invoke("export", run, "--trial", "0", "--out", tmp_path / "afile/m.onnx"))
    assert "afile" in error and "not a folder" in error
    assert (tmp_path / "afile").read_text() == "x"


def test_report_out_under_a_file_is_a_usage_error(
    f1_run: tuple[Path, Result], tmp_path: Path
) -> None:
    run, _ = f1_run
    (tmp_path / "afile").write_text("x")
    error = _one_error(_invoke("report", run, "--out", tmp_path / "afile" / "r"))
    assert "afile" in error and "not a folder" in error


def test_export_of_a_trial_still_running_says_so(
    f1_run: tuple[Path, Result], tmp_path: Path
) -> None:
    run = _copy(f1_run[0], tmp_path)
    study = optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run / 'study.db'}")
    running = study.ask()  # a trial a worker is computing right now
    out = tmp_path / "m.onnx"
    error = _one_error(_invoke("export", run, "--trial", running.number, "--out", out))
    assert f"trial {running.number} has not finished" in error
    assert not out.exists()


# ------------------------------------------------------------------ from the artifact store
@pytest.fixture(scope="module")
def shared_run(
    tmp_path_factory: pytest.TempPathFactory, model_files: dict[str, Path], tiny_data: Path
) -> tuple[Path, Path]:
    """A run whose trial files were also uploaded to an artifact folder: (run, folder)."""
    root = tmp_path_factory.mktemp("shared")
    out, store = root / "run", root / "artifacts"
    res = _optimize(out, model_files["bundle"], tiny_data, "--artifacts", str(store))
    assert res.exit_code == 0, res.output
    return out, store


def _from_store(run: Path, store: Path, *args: object) -> Result:
    """``export`` as a machine without the run directory does it: study and artifact folder."""
    source = ["--storage", f"sqlite:///{run / 'study.db'}", "--artifacts", store]
    return _invoke("export", *source, *args)


def test_an_artifact_changed_in_the_store_is_refused_naming_both_hashes(
    shared_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run, store = shared_run
    copy = Path(shutil.copytree(run.parent, tmp_path / "copy"))
    run, store = copy / run.name, copy / store.name
    done = [t for t in _report(run)["trials"] if t["state"] == "complete"]
    victim, other = done[0], done[-1]
    artifact = store / victim["artifacts"]["model.onnx"]
    shutil.copyfile(store / other["artifacts"]["model.onnx"], artifact)
    tampered = _sha(artifact)
    out = tmp_path / "m.onnx"
    error = _one_error(_from_store(run, store, "--trial", victim["number"], "--out", out))
    assert victim["onnx_sha256"] in error and tampered in error
    assert not out.exists()
    # the untouched one still comes out whole
    good = _from_store(run, store, "--trial", other["number"], "--out", out)
    assert good.exit_code == 0, good.output
    assert _sha(out) == other["onnx_sha256"]


def test_export_refuses_an_out_inside_the_artifact_folder(
    shared_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run, store = shared_run
    before = _tree(store)
    error = _one_error(_from_store(run, store, "--trial", 0, "--out", store / "m.onnx"))
    assert "inside the artifact folder" in error
    assert _tree(store) == before


def test_an_artifact_id_that_is_a_path_is_refused(tmp_path: Path) -> None:
    """The study is data: an artifact id edited into a path is a one-line error, never a
    traceback (Optuna's own check raised ValueError) nor a read outside the store."""
    from optuna.artifacts import FileSystemArtifactStore

    from edgeopt.errors import ConfigError
    from edgeopt.search.study.artifacts import fetch

    store = FileSystemArtifactStore(str(tmp_path / "store"))
    (tmp_path / "store").mkdir()
    for bad in ("../../../../etc/passwd", "/etc/passwd", "..", ".hidden", "a/b"):
        with pytest.raises(ConfigError, match="invalid artifact id"):
            fetch(store, bad, tmp_path / "out" / "model.onnx", None, "trial 1's model")
    assert not (tmp_path / "out" / "model.onnx").exists()
