"""``edgeopt check``: budgets from flags and config files, verdicts, exit codes, JUnit XML,
on real tiny ONNX models (estimated on mobile for speed, one measured case on the host)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edgeopt import zoo
from edgeopt.budgets import parse_fraction
from edgeopt.check import (
    CheckConfig,
    find_config_file,
    junit_xml,
    load_config_file,
    resolve_config,
    verdict_from_bench,
)
from edgeopt.cli import main
from edgeopt.errors import ConfigError

SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def wide_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same architecture, 8x wider: slower and bigger than the tiny model."""
    from edgeopt.onnx_export import export_onnx

    torch.manual_seed(1)
    model = zoo.plain_cnn(in_channels=1, num_classes=10, width=32).eval()
    return export_onnx(model, SHAPE, tmp_path_factory.mktemp("wide") / "wide.onnx")


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from an empty project folder (its .git stops the config search there)."""
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, ["check", *args])
    return res.exit_code, res.stdout, res.stderr


def test_estimated_budgets_pass_and_fail_with_exit_codes(
    model_files: dict[str, Path], in_tmp: Path
) -> None:
    onnx = str(model_files["onnx"])
    code, out, err = _run(
        onnx,
        "--target",
        "mobile",
        "--max-latency-ms",
        "100",
        "--max-size-mb",
        "1",
        "--max-energy-mj",
        "100",
    )
    assert code == 0, err
    assert "on mobile-sd8gen2 (estimated from the profile)" in out
    assert out.count("PASS") == 3 and "FAIL" not in out
    assert "estimated" in out and "measured" in out  # latency estimated, size measured
    code, out, err = _run(
        onnx, "--target", "mobile", "--max-latency-ms", "0.000001", "--max-size-mb", "1"
    )
    assert code == 1
    assert "max_latency_ms" in out and "FAIL" in out and "PASS" in out
    assert "1 of 2 budget(s) failed: max_latency_ms" in err


def test_measured_on_the_host(model_files: dict[str, Path], tiny_data: Path, in_tmp: Path) -> None:
    code, out, err = _run(
        str(model_files["onnx"]),
        "--target",
        "cpu",
        "--max-latency-ms",
        "1000",
        "--max-memory-mb",
        "1000",
        "--data",
        str(tiny_data),
        "--min-accuracy",
        "0",
        "--time-budget",
        "0.5",
    )
    assert code == 0, err
    assert "(measured on this host)" in out
    rows = [line for line in out.splitlines() if line.startswith("max_") or line.startswith("min_")]
    assert len(rows) == 3 and all(" measured " in r and r.rstrip().find("PASS") > 0 for r in rows)


def test_baseline_regression_is_a_ratio_of_the_two_models(
    model_files: dict[str, Path], wide_onnx: Path, in_tmp: Path, tmp_path: Path
) -> None:
    tiny = str(model_files["onnx"])
    # the tiny model against the wide one: much faster, passes
    code, out, err = _run(
        tiny, "--target", "mobile", "--baseline", str(wide_onnx), "--max-regression", "5%"
    )
    assert code == 0, err
    assert "max_regression" in out
    # the wide one against the tiny one: far more than 5 % slower
    junit = tmp_path / "reports" / "check.xml"
    code, out, err = _run(
        str(wide_onnx),
        "--target",
        "mobile",
        "--baseline",
        tiny,
        "--max-regression",
        "0.05",
        "--max-size-mb",
        "10",
        "--junit",
        str(junit),
    )
    assert code == 1
    assert "max_regression" in err
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"max_regression", "max_size_mb"}
    assert cases["max_regression"].find("failure") is not None
    assert cases["max_size_mb"].find("failure") is None


def test_json_verdict(model_files: dict[str, Path], in_tmp: Path) -> None:
    code, out, _ = _run(
        str(model_files["onnx"]), "--target", "mobile", "--max-size-mb", "0.000001", "--json"
    )
    assert code == 1
    data = json.loads(out)
    assert data["schema_version"] == 2 and data["passed"] is False
    (r,) = data["results"]
    assert r["name"] == "max_size_mb" and r["provenance"] == "measured" and not r["passed"]
    assert r["value"] > r["limit"]


def test_budgets_from_pyproject_and_flags_override(
    model_files: dict[str, Path], in_tmp: Path
) -> None:
    (in_tmp / "pyproject.toml").write_text(
        '[project]\nname = "app"\n\n[tool.edgeopt]\ntarget = "mobile"\n'
        "max_size_mb = 0.000001\nmax_latency_ms = 100\n"
    )
    sub = in_tmp / "src" / "deep"
    sub.mkdir(parents=True)
    import os

    os.chdir(sub)  # found from a subfolder too
    code, out, err = _run(str(model_files["onnx"]))
    assert code == 1
    assert "mobile-sd8gen2" in out and "[tool.edgeopt] in" in out
    assert "max_size_mb:" in err
    code, out, err = _run(str(model_files["onnx"]), "--max-size-mb", "5")
    assert code == 0, err
    assert out.count("PASS") == 2


def test_edgeopt_toml_resolves_paths_against_its_folder(
    model_files: dict[str, Path], tiny_data: Path, in_tmp: Path
) -> None:
    (in_tmp / "data.npz").write_bytes(tiny_data.read_bytes())
    (in_tmp / "edgeopt.toml").write_text(
        'target = "mobile"\ndata = "data.npz"\nmin_accuracy = 0.0\nmax_regression = "10%"\n'
    )
    values = load_config_file(in_tmp / "edgeopt.toml")
    assert values["data"] == str((in_tmp / "data.npz").resolve())
    assert values["max_regression"] == pytest.approx(0.10)
    # max_regression without a baseline: a usage error, before any work
    code, _, err = _run(str(model_files["onnx"]))
    assert code == 2 and "--baseline" in err


def test_unknown_key_names_key_file_and_suggestion(
    model_files: dict[str, Path], in_tmp: Path
) -> None:
    (in_tmp / "pyproject.toml").write_text("[tool.edgeopt]\nmax_latency = 5\n")
    code, _, err = _run(str(model_files["onnx"]))
    assert code == 2
    assert "unknown key 'max_latency'" in err and str(in_tmp / "pyproject.toml") in err
    assert "did you mean 'max_latency_ms'" in err


def test_no_budget_says_how_to_set_one(model_files: dict[str, Path], in_tmp: Path) -> None:
    code, _, err = _run(str(model_files["onnx"]), "--target", "mobile")
    assert code == 2
    assert "no budget to check" in err and "[tool.edgeopt]" in err and "--max-latency-ms" in err
    (in_tmp / "pyproject.toml").write_text('[tool.edgeopt]\ntarget = "mobile"\n')
    code, _, err = _run(str(model_files["onnx"]))
    assert code == 2 and "sets none" in err


def test_usage_errors_before_any_work(model_files: dict[str, Path], in_tmp: Path) -> None:
    onnx = str(model_files["onnx"])
    code, _, err = _run(onnx, "--target", "cpu", "--max-energy-mj", "1")
    assert code == 2 and "power meter" in err
    code, _, err = _run(onnx, "--target", "mobile", "--min-accuracy", "0.5")
    assert code == 2 and "needs labelled data" in err
    code, _, err = _run(onnx, "--target", "mobile", "--max-regression", "5")
    assert code == 2 and "ambiguous" in err
    code, _, err = _run(onnx, "--target", "mobile", "--min-accuracy", "90")
    assert code == 2 and "fraction" in err
    code, _, err = _run(str(in_tmp / "missing.onnx"), "--target", "mobile", "--max-size-mb", "1")
    assert code == 2


def test_config_search_stops_at_the_project_root(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    inner = outer / "repo" / "pkg"
    inner.mkdir(parents=True)
    (outer / "edgeopt.toml").write_text("max_size_mb = 1\n")
    assert find_config_file(inner) == outer / "edgeopt.toml"
    (outer / "repo" / ".git").mkdir()
    assert find_config_file(inner) is None
    # a pyproject without [tool.edgeopt] is passed over
    (inner / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (outer / "repo" / "edgeopt.toml").write_text("max_size_mb = 2\n")
    assert find_config_file(inner) == outer / "repo" / "edgeopt.toml"
    cfg = resolve_config({"max_latency_ms": 3.0}, inner)
    assert cfg.budgets() == {"max_latency_ms": 3.0, "max_size_mb": 2.0}


def test_parse_fraction() -> None:
    assert parse_fraction("5%", "x") == pytest.approx(0.05)
    assert parse_fraction("0.05", "x") == pytest.approx(0.05)
    assert parse_fraction(0.1, "x") == pytest.approx(0.1)
    for bad in ("5", "five", True):
        with pytest.raises(ConfigError):
            parse_fraction(bad, "x")


def test_verdict_and_junit_from_a_bench_record() -> None:
    # a bench record is plain data: the verdict maths on exact numbers
    bench = {
        "target": "mobile-sd8gen2",
        "measured": False,
        "results": [
            {
                "latency_p50_ms": {"value": 2.0, "provenance": "estimated"},
                "size_mb": {"value": 1.5, "provenance": "measured"},
            },
            {"latency_p50_ms": {"value": 1.6, "provenance": "estimated"}},
        ],
        "comparisons": [{"ratio": 0.8, "provenance": "estimated"}],
    }
    cfg = CheckConfig(
        target="mobile",
        baseline="old.onnx",
        max_latency_ms=2.0,
        max_size_mb=1.0,
        max_regression=0.2,
    )
    v = verdict_from_bench(cfg, "new.onnx", bench)
    by = {r.name: r for r in v.results}
    assert by["max_latency_ms"].passed  # 2.0 <= 2.0
    assert not by["max_size_mb"].passed
    assert by["max_regression"].value == pytest.approx(0.25)  # 1/0.8 - 1: 25 % slower
    assert not by["max_regression"].passed
    root = ET.fromstring(junit_xml(v))
    failures = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert sorted(failures) == ["max_regression", "max_size_mb"]


def test_unwritable_junit_path_is_exit_2_after_the_table(
    model_files: dict[str, Path], in_tmp: Path
) -> None:
    onnx = str(model_files["onnx"])
    code, out, err = _run(
        onnx, "--target", "mobile", "--max-size-mb", "1", "--junit", "/proc/nope/x.xml"
    )
    assert code == 2  # a usage error, not "budget failed" (1), which is what CI would read
    assert "PASS" in out  # the results table is printed first
    assert "Error: cannot write the JUnit report /proc/nope/x.xml" in err
    assert "Traceback" not in err
