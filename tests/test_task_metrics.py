"""``--metric``: the numpy task metrics against scikit-learn, and the metric through the real
command line: a tiny ``optimize --metric f1`` run whose report carries F1 values equal to an
independent computation on the exported ONNX files, ``check --metric`` judging a budget on
F1, and ``bench --metric auc``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from edgeopt.cli import main
from edgeopt.config import RunConfig
from edgeopt.data import load_npz
from edgeopt.errors import ConfigError
from edgeopt.loading import ModelSpec
from edgeopt.measure.task_metrics import (
    bootstrap_interval,
    check_defined,
    roc_auc_ovr,
    softmax,
    task_metric,
    task_metrics,
)
from edgeopt.search.study.shared import SETTINGS, check_settings, settings_of


def _sk(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """scikit-learn's values of the five metrics (AUC as the module doc defines it)."""
    pred = logits.argmax(axis=1)
    kw = {"average": "macro", "zero_division": 0}
    scores = softmax(logits)
    if logits.shape[1] == 2:
        auc = roc_auc_score(y, scores[:, 1])
    else:
        auc = roc_auc_score(y, scores, multi_class="ovr", average="macro")
    return {
        "accuracy": float((pred == y).mean()),
        "f1": f1_score(y, pred, **kw),
        "precision": precision_score(y, pred, **kw),
        "recall": recall_score(y, pred, **kw),
        "auc": auc,
    }


@pytest.mark.parametrize("seed", range(12))
def test_metrics_equal_sklearn_on_random_inputs_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(2, 7))
    n = int(rng.integers(classes + 5, 90))
    # small integer logits: many tied scores, and argmax ties too
    logits = rng.integers(-2, 3, (n, classes)).astype(np.float32)
    y = rng.integers(0, classes, n)
    y[:classes] = np.arange(classes)  # every class present, as roc_auc_score requires
    ours, ref = task_metrics(logits, y), _sk(y, logits)
    assert ours.keys() == ref.keys()
    for name in ours:
        assert ours[name] == pytest.approx(ref[name], abs=1e-12), name
        assert task_metric(name, logits, y) == pytest.approx(ref[name], abs=1e-12)


def test_a_class_never_predicted_and_one_never_true_score_as_sklearn() -> None:
    # 4 outputs; class 3 is never true and never predicted, class 2 is never predicted,
    # class 1 is predicted but never true
    y = np.array([0, 0, 0, 2, 2, 0])
    logits = np.full((6, 4), -5.0)
    logits[[0, 1, 3, 4], 0] = 3.0
    logits[[2, 5], 1] = 3.0
    pred = logits.argmax(axis=1)
    assert set(pred) == {0, 1}
    ours = task_metrics(logits, y)
    kw = {"average": "macro", "zero_division": 0}
    # classes in the labels or the predictions (0, 1, 2) count; class 3 is left out
    assert ours["f1"] == pytest.approx(f1_score(y, pred, **kw))
    assert ours["precision"] == pytest.approx(precision_score(y, pred, **kw))
    assert ours["recall"] == pytest.approx(recall_score(y, pred, **kw))
    assert ours["recall"] == pytest.approx((2 / 4 + 0 + 0) / 3)  # class 0: 2 of 4 found
    # AUC: one-vs-rest for the classes present in the labels (0 and 2) only
    s = softmax(logits)
    expected = np.mean([roc_auc_score(y == k, s[:, k]) for k in (0, 2)])
    assert ours["auc"] == pytest.approx(expected)


def test_auc_with_one_class_is_undefined_and_said_so_up_front() -> None:
    logits = np.random.default_rng(0).standard_normal((5, 3))
    y = np.zeros(5, dtype=np.int64)
    with pytest.raises(ValueError, match="two classes"):
        roc_auc_ovr(y, softmax(logits))
    assert "auc" not in task_metrics(logits, y)
    with pytest.raises(ConfigError, match="single class"):
        check_defined("auc", y, "the test split")
    check_defined("f1", y, "the test split")  # defined: no error


def test_bootstrap_interval_is_seeded_and_brackets_the_value() -> None:
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((200, 4))
    y = np.where(rng.random(200) < 0.7, logits.argmax(axis=1), rng.integers(0, 4, 200))
    for name in ("f1", "auc"):
        low, high = bootstrap_interval(name, logits, y) or (np.nan, np.nan)
        assert low < task_metric(name, logits, y) < high
        assert high - low < 0.3
        assert bootstrap_interval(name, logits, y) == (low, high)


# ------------------------------------------------------------------ through the CLI
def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    """The model's outputs from a plain ORT session made here (not edgeopt's helper)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def _f1(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    pred = _logits(path, x).argmax(axis=1)
    return float(f1_score(y, pred, average="macro", zero_division=0))


@pytest.fixture(scope="module")
def f1_run(
    tmp_path_factory: pytest.TempPathFactory, model_files: dict[str, Path], tiny_data: Path
) -> Path:
    out = tmp_path_factory.mktemp("metric") / "run"
    args = ["optimize", model_files["onnx"], "--data", tiny_data, "--target", "mobile"]
    # an accuracy budget on F1: no trial is abandoned on its top-1 epoch accuracy
    args += ["--metric", "f1", "--max-accuracy-drop", "0.5", "--trials", "3", "--out", out]
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert "validation macro F1" in res.stderr  # the baseline line names the metric
    return out


def test_optimize_metric_f1_reports_f1_equal_to_an_independent_computation(
    f1_run: Path, tiny_data: Path
) -> None:
    data = load_npz(tiny_data)
    report = json.loads((f1_run / "report" / "report.json").read_text())
    assert report["metric"] == "f1" and report["config"]["metric"] == "f1"
    assert report["schema_version"] >= 2  # 2 added metric and task_metrics
    base = report["baseline"]
    assert "hopeless_below" not in base
    original = f1_run / "baseline" / "model.onnx"
    assert base["val_accuracy"] == pytest.approx(_f1(original, data.x_val, data.y_val))
    assert base["test_accuracy"] == pytest.approx(_f1(original, data.x_test, data.y_test))
    shown = [t for t in report["trials"] if t.get("task_metrics")]
    assert {t["number"] for t in shown} >= set(report["front"]) | {0, 1}  # front + baselines
    for t in shown:
        onnx = f1_run / t["onnx"]
        val_f1 = _f1(onnx, data.x_val, data.y_val)
        test_f1 = _f1(onnx, data.x_test, data.y_test)
        # what the search optimized (val) and reported (test) is F1
        assert t["val_accuracy"] == pytest.approx(val_f1)
        assert t["test_accuracy"] == pytest.approx(test_f1)
        assert t["values"]["accuracy"] == pytest.approx(val_f1)
        tm = t["task_metrics"]
        assert tm["val"]["f1"]["value"] == pytest.approx(val_f1)
        assert tm["test"]["f1"]["value"] == pytest.approx(test_f1)
        ref = _sk(data.y_test, _logits(onnx, data.x_test))
        for name, value in ref.items():
            assert tm["test"][name]["value"] == pytest.approx(value), name
            assert tm["test"][name]["provenance"] == "measured"
        assert tm["test"]["f1"]["low"] <= test_f1 <= tm["test"]["f1"]["high"]
    md = (f1_run / "report" / "report.md").read_text()
    assert "Optimized metric: macro F1 (--metric f1)" in md
    assert "val f1" in md and "Task metrics, validation / test" in md
    html = (f1_run / "report" / "report.html").read_text()
    assert "Task metrics of the front" in html and "percentile bootstrap" in html
    final = json.loads((f1_run / "final.json").read_text())
    assert final["task_metrics"].keys() == {str(t["number"]) for t in shown}


def test_resuming_with_another_metric_is_refused(f1_run: Path, tiny_data: Path) -> None:
    args = ["optimize", "x.onnx", "--data", tiny_data, "--target", "mobile", "--out", f1_run]
    run = json.loads((f1_run / "run.json").read_text())
    args[1] = run["model"]["path"]
    res = CliRunner().invoke(main, [str(a) for a in [*args, "--trials", "3"]])
    assert res.exit_code == 2
    assert "holds a run with different metric" in res.stderr


def test_metric_without_data_is_a_one_line_config_error(
    model_files: dict[str, Path], tmp_path: Path
) -> None:
    args = ["optimize", model_files["onnx"], "--metric", "auc", "--out", tmp_path / "r"]
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 2
    assert "Error: --metric auc needs labelled data" in res.stderr
    assert "Hint: pass --data" in res.stderr and "Traceback" not in res.stderr


def test_a_study_recorded_before_metric_existed_had_top1_accuracy(
    model_files: dict[str, Path], tiny_data: Path
) -> None:
    cfg = RunConfig(
        model=ModelSpec(path=str(model_files["onnx"])), targets=("mobile",), data=str(tiny_data)
    )
    old = {k: v for k, v in settings_of(cfg).items() if k != "metric"}
    check_settings({SETTINGS: old}, cfg, "the database")  # joins: the same settings
    with pytest.raises(ConfigError, match=r"metric \(f1 here, accuracy in the study\)"):
        check_settings({SETTINGS: old}, replace(cfg, metric="f1"), "the database")


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder (its .git stops the config file search there)."""
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_check_metric_f1_judges_min_accuracy_on_f1(
    model_files: dict[str, Path], tiny_data: Path, in_tmp: Path
) -> None:
    data = load_npz(tiny_data)
    onnx = model_files["onnx"]
    f1 = _f1(onnx, data.x_test, data.y_test)
    top1 = float((_logits(onnx, data.x_test).argmax(axis=1) == data.y_test).mean())
    assert abs(f1 - top1) > 1e-3  # the two metrics tell apart here
    base = ["check", str(onnx), "--target", "mobile", "--data", str(tiny_data), "--json"]
    for limit, code in ((f1 - 0.001, 0), (f1 + 0.001, 1)):
        res = CliRunner().invoke(main, [*base, "--metric", "f1", "--min-accuracy", f"{limit:.6f}"])
        assert res.exit_code == code, res.output
        verdict = json.loads(res.stdout)
        assert verdict["metric"] == "f1" and verdict["schema_version"] == 2
        (r,) = verdict["results"]
        assert r["value"] == pytest.approx(f1) and r["provenance"] == "measured"
        assert r["detail"] == "macro F1 on the test split"
    res = CliRunner().invoke(main, [*base, "--min-accuracy", "0.01"])
    assert json.loads(res.stdout)["results"][0]["value"] == pytest.approx(top1)
    # a metric from pyproject.toml, overridden by the flag
    (in_tmp / "pyproject.toml").write_text('[tool.edgeopt]\nmetric = "recall"\n')
    res = CliRunner().invoke(main, [*base, "--min-accuracy", "0.01"])
    assert json.loads(res.stdout)["metric"] == "recall"
    res = CliRunner().invoke(main, [*base, "--min-accuracy", "0.01", "--metric", "f1"])
    assert json.loads(res.stdout)["results"][0]["value"] == pytest.approx(f1)
    (in_tmp / "pyproject.toml").write_text('[tool.edgeopt]\nmetric = "kappa"\n')
    res = CliRunner().invoke(main, [*base, "--min-accuracy", "0.01"])
    assert res.exit_code == 2 and "unknown metric 'kappa'" in res.stderr


def test_bench_metric_auc_shows_it_beside_accuracy(
    model_files: dict[str, Path], tiny_data: Path
) -> None:
    data = load_npz(tiny_data)
    args = ["bench", str(model_files["onnx"]), "--target", "mobile", "--data", str(tiny_data)]
    res = CliRunner().invoke(main, [*args, "--metric", "auc", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["metric"] == "auc"
    row = report["results"][0]
    auc = _sk(data.y_test, _logits(model_files["onnx"], data.x_test))["auc"]
    assert row["auc"] == {"value": pytest.approx(auc), "provenance": "measured"}
    assert "accuracy" in row
    res = CliRunner().invoke(main, [*args, "--metric", "auc"])
    assert "macro one-vs-rest ROC AUC: measured on this host" in res.stdout.replace(
        "accuracy and ", ""
    )
