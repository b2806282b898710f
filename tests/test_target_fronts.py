"""The front of each target alone (edgeopt/report/target_fronts.py) for a run over several
targets: the dominance on hand-built records, the "Front per target" section of report.md,
report.json and report.html only for such runs, and a real tiny search over two estimated
targets on which the plain int8 baseline is fast on one and slow on the other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from report_demo import demo_records

from edgeopt.cli import main
from edgeopt.report import summarize
from edgeopt.report.html import render_html
from edgeopt.report.markdown import render_markdown
from edgeopt.report.pareto import pareto_front
from edgeopt.report.tables import render_json
from edgeopt.report.target_fronts import target_fronts
from edgeopt.report.terminal import render_front
from edgeopt.search.run.collect import load_run

A, B = "host-cpu", "mobile-sd8gen2"
NAMES = ["accuracy", f"latency_ms[{A}]", f"latency_ms[{B}]", "size_mb"]


def _trial(number: int, acc: float, lat_a: float, lat_b: float, **extra: Any) -> dict[str, Any]:
    values = dict(zip(NAMES, (acc, lat_a, lat_b, 1.0), strict=True))
    measurements = {
        A: {"latency_ms": {"value": lat_a, "provenance": "measured"}},
        B: {"latency_ms": {"value": lat_b, "provenance": "estimated"}},
    }
    return {
        "number": number,
        "state": "complete",
        "describe": f"candidate {number}",
        "values": values,
        "val_accuracy": acc,
        "measurements": measurements,
        "size_mb": 1.0,
        "feasible": True,
        "on_front": False,
        "onnx": f"trials/{number}/model.onnx",
        **extra,
    }


def _records() -> dict[str, Any]:
    """Plain records: 0 fast on A, 1 fast on B, 2 ties 0 on everything A is judged on but is
    slower on B (so the joint front drops it), 3 the most accurate, 4 the fastest but over a
    budget, 5 failed, 6 fast everywhere at a hopeless accuracy."""
    b_file = {
        "runtime": "ort-format",
        "files": ["trials/1/model.ort", "trials/1/ops.config"],
        "val_accuracy": 0.87,  # its own runtime's score
    }
    trials = [
        _trial(0, 0.90, 1.0, 5.0),
        _trial(1, 0.90, 2.0, 2.0, info={"target_files": {B: b_file}}),
        _trial(2, 0.90, 1.0, 6.0),
        _trial(3, 0.95, 3.0, 3.0),
        _trial(4, 0.99, 0.1, 0.1, feasible=False),
        {"number": 5, "state": "fail", "fail_stage": "quantize", "fail_reason": "no"},
        _trial(6, 0.50, 0.05, 0.05),
    ]
    joint = [t for t in trials if t["state"] == "complete" and t["feasible"]]
    joint = [t for t in joint if t["val_accuracy"] >= 0.85]
    maximize = [True, False, False, False]
    for i in pareto_front([[t["values"][n] for n in NAMES] for t in joint], maximize):
        joint[i]["on_front"] = True
    return {
        "targets": [A, B],
        "objectives": [
            {"name": n, "direction": "maximize" if up else "minimize"}
            for n, up in zip(NAMES, maximize, strict=True)
        ],
        "trials": trials,
        "hidden_hopeless": [6],
        "hopeless_below": 0.85,
    }


def test_each_target_keeps_its_own_pareto_optimal_candidates() -> None:
    records = _records()
    joint = {t["number"] for t in records["trials"] if t.get("on_front")}
    assert joint == {0, 1, 3}  # 2 is dominated by 0 (equal on A, faster on B)
    fronts = {f.target: f for f in target_fronts(records)}
    assert list(fronts) == [A, B]
    # on A alone 2 ties 0, which dominated it jointly: it is as good a choice there
    assert fronts[A].numbers == [0, 2, 3]
    # 0 is on the joint front only for its A latency: on B, 1 dominates it
    assert fronts[B].numbers == [1, 3]
    assert [o.name for o in fronts[B].objectives] == ["accuracy", f"latency_ms[{B}]", "size_mb"]
    assert [t.number for t in fronts[B].fastest_first()] == [1, 3]
    # the runtime and file each target loads: a converted file where recorded, else the ONNX
    assert (fronts[A].runtime, fronts[A].format, fronts[A].label) == (
        "ort",
        "onnx",
        "ONNX Runtime, .onnx",
    )
    assert (fronts[B].runtime, fronts[B].format) == ("ort-format", "ort")
    one = next(t for t in fronts[B].members if t.number == 1)
    assert fronts[B].file_of(one) == "trials/1/model.ort"
    assert fronts[A].file_of(one) == "trials/1/model.onnx"


def test_one_target_or_no_per_target_objective_has_no_fronts_per_target() -> None:
    one = _records()
    one["targets"] = [A]
    assert target_fronts(one) == ()
    shared = _records()  # objectives that name no target: each front would be the joint one
    shared["objectives"] = [o for o in shared["objectives"] if "[" not in o["name"]]
    assert target_fronts(shared) == ()


def test_reports_show_the_fronts_per_target_only_for_several_targets() -> None:
    s = summarize(_records())
    md, html = render_markdown(s), render_html(s)
    report = json.loads(render_json(s))
    assert (
        "**Front per target**" in md and "*mobile-sd8gen2* (ORT Mobile (.ort format), .ort)" in md
    )
    assert "latency ms (est.)" in md and "latency ms (meas.)" in md
    assert [
        (f["target"], f["runtime"], f["format"], f["front"]) for f in report["target_fronts"]
    ] == [
        (A, "ort", "onnx", [0, 2, 3]),
        (B, "ort-format", "ort", [1, 3]),
    ]
    assert "<h2>Front per target</h2>" in html and "trials/1/model.ort" in html
    # a converted file's own score beside the ONNX candidate's, on its target's front only
    assert "| trial | config | val acc. | val, its .ort file |" in md
    assert "| 1 | candidate 1 | 0.9000 | 0.8700 |" in md
    assert md.count("val, its") == 1
    assert "<td>0.8700</td>" in html and "val accuracy, its file" in html
    # the terminal too: one line a target, its trials fastest first, and the file to export
    lines = render_front(_records()).splitlines()
    assert f"  {A} (ONNX Runtime, .onnx): 0, 2, 3 (fastest first; --format onnx)" in lines
    assert f"  {B} (ORT Mobile (.ort format), .ort): 1, 3 (fastest first; --format ort)" in lines
    for single in (demo_records(30, targets=("host-cpu",)), demo_records(30)):
        s = summarize(single)
        several = len(s.targets) > 1
        assert ("front per target" in render_front(single)) is several
        assert ("Front per target" in render_markdown(s)) is several
        assert ("Front per target" in render_html(s)) is several
        assert ("target_fronts" in json.loads(render_json(s))) is several


@pytest.fixture(scope="module")
def two_target_run(tmp_path_factory: pytest.TempPathFactory, model_files: dict) -> Path:
    """A real search over two estimated targets, data-free (fidelity: the original's is 1, so
    no candidate beats it on the accuracy objective), objectives accuracy and latency, the two
    baselines: int8 (quantized for the mobile NPU) is estimated slower than fp32 there and
    faster on the FPGA."""
    out = tmp_path_factory.mktemp("fronts") / "run"
    args = [model_files["bundle_wide"], "--target", "mobile,fpga", "--objectives"]
    args += ["accuracy,latency", "--trials", "2", "--threads", "1", "--out", out]
    result = CliRunner().invoke(main, ["optimize", *map(str, args)])
    assert result.exit_code == 0, result.output
    return out


def test_a_real_two_target_run_reports_each_targets_own_front(two_target_run: Path) -> None:
    report = json.loads((two_target_run / "report" / "report.json").read_text())
    trials = {t["number"]: t for t in report["trials"]}
    mobile, fpga = "latency_ms[mobile-sd8gen2]", "latency_ms[fpga-zcu104-dpu]"
    assert trials[1]["baseline"] == "int8" and trials[0]["baseline"] == "unchanged"
    assert trials[1]["values"][mobile] > trials[0]["values"][mobile]
    assert trials[1]["values"][fpga] < trials[0]["values"][fpga]
    assert report["front"] == [0, 1]  # each best on one target's latency
    fronts = {f["target"]: f for f in report["target_fronts"]}
    assert fronts["mobile-sd8gen2"]["front"] == [0]  # int8 is dominated on the phone
    assert 1 in fronts["fpga-zcu104-dpu"]["front"]
    assert (fronts["mobile-sd8gen2"]["runtime"], fronts["mobile-sd8gen2"]["format"]) == (
        "ort-format",
        "ort",
    )
    assert fronts["fpga-zcu104-dpu"]["objectives"] == ["accuracy", fpga]
    md = (two_target_run / "report" / "report.md").read_text()
    assert "**Front per target**" in md and "latency ms (est.)" in md
    html = (two_target_run / "report" / "report.html").read_text()
    assert "<h2>Front per target</h2>" in html and "trials/0/model.ort" in html
    lines = render_front(load_run(two_target_run)).splitlines()
    assert (
        "  mobile-sd8gen2 (ORT Mobile (.ort format), .ort): 0 (fastest first; --format ort)"
        in lines
    )
