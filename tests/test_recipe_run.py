"""A search on an image folder with its own preprocessing (``optimize --data DIR --crop
--mean``, and a ``[tool.edgeopt.data]`` table): the recipe is recorded in run.json, carried
by every trial's model (ONNX metadata equal to ``model.preprocess.json``, stamped before the
trial's digest was recorded), applied identically by ``check``, shown in the report, and a
resume with other settings is refused naming both."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import optuna
import pytest
from band_images import band_folder, run_edgeopt

from edgeopt.data.metadata import read_recipe, recipe_json, sidecar_path
from edgeopt.data.preprocess import Channels, Preprocess

RECIPE = Preprocess((16, 16), 20, (0.4,), (0.5,), Channels.GRAY)
"""--crop 16 (flag), resize 20 (the table), --mean 0.4 (the flag over the table's 0.9),
std 0.5 (the gray default)."""


def _project(root: Path, table: str) -> Path:
    """A project folder (its .git ends the config search) whose pyproject has ``table``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / ".git").mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(f"[tool.edgeopt.data]\n{table}\n")
    return root


def test_a_folder_run_records_carries_and_reports_its_recipe(
    tmp_path: Path, model_files: dict[str, Path]
) -> None:
    data = band_folder(tmp_path / "shapes", {"train": 12, "val": 4, "test": 4}, size=22)
    project = _project(tmp_path / "proj", "resize = 20\nmean = 0.9")
    out = tmp_path / "run"
    common = [model_files["bundle_wide"], "--data", data, "--target", "mobile", "--out", out]
    done = run_edgeopt(
        "optimize", *common, "--crop", "16", "--mean", "0.4", "--trials", "3",
        "--threads", "1", cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "preprocess: resize 20, center crop 16, mean 0.4 std 0.5, gray" in done.stderr
    recorded = json.loads((out / "run.json").read_text())["data"]["recipe"]
    assert Preprocess.from_dict(recorded) == RECIPE  # flags over the table, table over defaults

    # every model the run made carries the recipe, stamped before its digest was recorded
    assert read_recipe(out / "baseline" / "model.onnx") == RECIPE
    assert sidecar_path(out / "baseline" / "model.onnx").read_text() == recipe_json(RECIPE) + "\n"
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out}/study.db")
    trials = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(trials) == 3
    for t in trials:
        model = out / t.user_attrs["onnx"]
        assert read_recipe(model) == RECIPE
        sidecar = json.loads(sidecar_path(model).read_text())
        assert Preprocess.from_dict(sidecar) == RECIPE
        assert sidecar == json.loads(recipe_json(RECIPE))
        assert hashlib.sha256(model.read_bytes()).hexdigest() == t.user_attrs["onnx_sha256"]

    # check on a trial's model reads the folder with the recipe it carries: the run's number
    report = json.loads((out / "report" / "report.json").read_text())
    scored = [t for t in report["trials"] if t.get("test_accuracy") is not None]
    assert scored
    clean = tmp_path / "elsewhere"
    (clean / ".git").mkdir(parents=True)
    for t in scored:
        model = out / "trials" / str(t["number"]) / "model.onnx"
        checked = run_edgeopt(
            "check", model, "--data", data, "--min-accuracy", "0", "--json", cwd=clean
        )
        assert checked.returncode == 0, checked.stderr[-2000:]
        assert f"preprocess: {RECIPE.describe()} (from the preprocessing metadata" in checked.stderr
        (value,) = [r["value"] for r in json.loads(checked.stdout)["results"]]
        assert value == pytest.approx(t["test_accuracy"], abs=1e-9), t["number"]
    # the project's table (mean 0.9) contradicts what the model carries: refused, naming it
    model = out / "trials" / str(scored[0]["number"]) / "model.onnx"
    clash = run_edgeopt("check", model, "--data", data, "--min-accuracy", "0", cwd=project)
    assert clash.returncode == 2, clash.stderr[-2000:]
    assert f"mean = 0.9 in [tool.edgeopt.data] in {project / 'pyproject.toml'}" in clash.stderr

    # the report shows the recipe
    for name in ("report.md", "report.html"):
        text = (out / "report" / name).read_text()
        recipe = "Preprocessing: resize 20, center crop 16x16, gray, scale 0.00392157, mean 0.4"
        assert recipe in text
        assert "model.preprocess.json" in text

    # a resume with another --mean: refused before any work, naming both recipes
    before = [(t.number, t.state) for t in study.get_trials()]
    other = run_edgeopt(
        "optimize", *common, "--crop", "16", "--mean", "0.2", "--trials", "4", cwd=project
    )
    assert other.returncode == 2, other.stderr[-2000:]
    assert "--mean 0.2" in other.stderr
    assert "mean 0.2 std 0.5" in other.stderr and "mean 0.4 std 0.5" in other.stderr
    after = optuna.load_study(study_name=None, storage=f"sqlite:///{out}/study.db").get_trials()
    assert [(t.number, t.state) for t in after] == before


def test_flags_with_an_npz_and_an_unknown_table_key_exit_2(
    tmp_path: Path, model_files: dict[str, Path], tiny_data: Path
) -> None:
    project = _project(tmp_path / "p", "mena = 0.4")
    common = [model_files["bundle_wide"], "--target", "mobile", "--out", tmp_path / "run"]
    npz = run_edgeopt("optimize", *common, "--data", tiny_data, "--crop", "16", cwd=project)
    assert npz.returncode == 2, npz.stderr[-2000:]
    assert "--crop 16: these say how image files are read" in npz.stderr
    data = band_folder(tmp_path / "shapes", {"train": 2, "val": 2}, size=22)
    typo = run_edgeopt("optimize", *common, "--data", data, cwd=project)
    assert typo.returncode == 2, typo.stderr[-2000:]
    assert "unknown key 'mena' in [tool.edgeopt.data]" in typo.stderr
    assert "did you mean 'mean'?" in typo.stderr
    assert not (tmp_path / "run").exists()  # refused before any work
