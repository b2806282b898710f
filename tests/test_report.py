"""Markdown, JSON and CSV reports rendered from plain run records (seeded demo records of
the exact ``load_run`` shape, so sizes a quick real run cannot reach are covered)."""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import subprocess
import sys
from html import escape
from pathlib import Path
from typing import Any

import pytest
from report_demo import demo_records

from edgeopt.errors import ConfigError
from edgeopt.metrics import Metric
from edgeopt.report import parse_formats, render_reports, summarize
from edgeopt.report.html import render_html
from edgeopt.report.markdown import render_markdown
from edgeopt.report.pareto import pareto_front
from edgeopt.report.tables import render_csv, render_json

TESTS = Path(__file__).resolve().parent


def test_markdown_of_a_50_trial_run_is_short_and_carries_front_and_pick() -> None:
    records = demo_records(50)
    s = summarize(records)
    md = render_markdown(s)
    lines = md.splitlines()
    assert len(lines) < 60
    assert s.pick is not None
    assert f"**Recommended: trial {s.pick.number}.**" in md
    assert "knee" in md and "utopia" in md
    # front rows: every shown front member appears as a row of the front table (the first
    # table; the fronts per target follow it)
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    end = next(i for i, line in enumerate(lines[start:], start) if not line.startswith("|"))
    rows = [line for line in lines[start:end] if line.startswith("| ")]
    shown = {int(r.split("|")[1].strip().strip("*★ ").split()[0]) for r in rows[1:]}
    assert shown >= {t.number for t in s.front[:15]}
    assert "(meas.)" in md and "(est.)" in md
    assert "Failed trials" in md and "Stopped early" in md
    assert "estimated from the hardware profile" in md


def test_pick_is_a_front_member_within_budget_and_reason_has_numbers() -> None:
    for seed in range(5):
        s = summarize(demo_records(30, seed=seed))
        assert s.pick is not None
        picked = next(t for t in s.front if t.number == s.pick.number)
        assert picked.feasible and picked.on_front
        assert "against the original" in s.pick.reason
        assert "x faster" in s.pick.reason or "x slower" in s.pick.reason


def test_no_feasible_trial_explains_why() -> None:
    records = demo_records(12, max_size_mb=0.0001)
    for t in records["trials"]:
        assert not t.get("on_front")
    s = summarize(records)
    assert s.pick is None
    assert s.no_pick_reason is not None
    assert "size_mb: 0 of" in s.no_pick_reason
    assert "No recommendation" in render_markdown(s)


def test_fidelity_runs_say_it_is_not_task_accuracy() -> None:
    s = summarize(demo_records(8, fidelity=True))
    md = render_markdown(s)
    assert "fidelity" in md and "not task accuracy" in md
    assert "val fid." in md


def test_json_is_strict_and_keeps_schema_version() -> None:
    records = demo_records(20)
    records["trials"][0]["values"]["size_mb"] = float("inf")  # must not leak as Infinity
    data = json.loads(render_json(summarize(records)))
    assert data["schema_version"] == 1
    assert data["kind"] == "edgeopt-report"
    assert data["trials"][0]["values"]["size_mb"] is None
    assert data["pick"]["number"] in data["front"]
    assert len(data["trials"]) == 20


def test_csv_has_one_row_per_trial_with_params_targets_and_reasons() -> None:
    records = demo_records(40)
    rows = list(csv.DictReader(io.StringIO(render_csv(summarize(records)))))
    assert len(rows) == 40
    assert [int(r["number"]) for r in rows] == list(range(40))
    cols = rows[0].keys()
    assert "param.prune.ratio" in cols and "param.quantize.mode" in cols
    assert "latency_ms[host-cpu]" in cols and "latency_ms[mobile-sd8gen2].provenance" in cols
    failed = [r for r in rows if r["state"] == "fail"]
    assert failed and all(r["fail_stage"] and r["fail_reason"] for r in failed)
    stopped = [r for r in rows if r["state"] == "stopped"]
    assert stopped and all(r["stopped_reason"] for r in stopped)
    done = [r for r in rows if r["state"] == "complete"]
    assert {r["latency_ms[mobile-sd8gen2].provenance"] for r in done} == {"estimated"}
    assert {r["latency_ms[host-cpu].provenance"] for r in done} == {"measured"}
    assert sum(r["picked"] == "true" for r in rows) == 1


def test_render_reports_writes_every_format_atomically(tmp_path: Path) -> None:
    paths = render_reports(demo_records(10), tmp_path / "out", formats=("md", "json", "csv"))
    assert [p.name for p in paths] == ["report.md", "report.json", "trials.csv"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


def test_parse_formats() -> None:
    assert parse_formats("html, md,markdown,json") == ("html", "md", "json")
    with pytest.raises(ConfigError, match="unknown report format 'pdf'"):
        parse_formats("html,pdf")


def test_demo_front_matches_pareto_maths() -> None:
    records = demo_records(30, max_size_mb=None)
    names = [o["name"] for o in records["objectives"]]
    up = [o["direction"] == "maximize" for o in records["objectives"]]
    done = [t for t in records["trials"] if t["state"] == "complete"]
    front = pareto_front([[t["values"][n] for n in names] for t in done], up)
    assert {done[i]["number"] for i in front} == {t["number"] for t in done if t["on_front"]}


FORBIDDEN_IN_REPORT = ("edgeopt.search", "edgeopt.pipeline", "optuna", "torch")


def _forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN_IN_REPORT)


# imports every module of edgeopt.report and renders every format, then names what came in
_LAYERING_PROBE = """
import importlib, pkgutil, sys, tempfile
import edgeopt.report
from report_demo import demo_records
for m in pkgutil.walk_packages(edgeopt.report.__path__, "edgeopt.report."):
    importlib.import_module(m.name)
with tempfile.TemporaryDirectory() as out:
    edgeopt.report.render_reports(demo_records(12), out, edgeopt.report.FORMATS)
print("\\n".join(sorted(sys.modules)))
"""


def test_report_imports_nothing_of_the_search_the_pipeline_optuna_or_torch() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _LAYERING_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=TESTS,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.split()
    assert "edgeopt.report.html_plots" in loaded and "edgeopt.report.svg_parallel" in loaded
    assert [m for m in loaded if _forbidden(m)] == []


def test_report_source_has_no_import_of_the_search_even_inside_a_function() -> None:
    # the subprocess check above misses an import inside a function no renderer calls
    found = []
    for path in sorted((TESTS.parent / "edgeopt" / "report").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            found += [f"{path.name}:{node.lineno} {n}" for n in names if _forbidden(n)]
    assert found == []


def test_report_reads_records_through_attributes_not_get_chains() -> None:
    # the run is a typed record (edgeopt/records.py): a renderer reads
    # t.task_metric(split, m), not ((t.get("task_metrics") or {}).get(split) or {}).get(m);
    # a .get with a literal key in report/ is a record read past the types
    found = []
    for path in sorted((TESTS.parent / "edgeopt" / "report").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and node.args
                and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
            ):
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert found == []


def _every_metric_records() -> dict[str, Any]:
    """Demo records whose objectives cover every ``Metric`` (memory and energy on mobile)."""
    records = demo_records(20, seed=3)
    extra = ("peak_memory_mb[mobile-sd8gen2]", "energy_mj[mobile-sd8gen2]")
    records["objectives"] += [{"name": n, "direction": "minimize"} for n in extra]
    for t in records["trials"]:
        if t["state"] == "complete":
            for name in extra:
                metric, target = name.rstrip("]").split("[")
                t["values"][name] = t["measurements"][target][metric]["value"]
    return records


def test_every_unit_shown_is_the_metric_specs_unit() -> None:
    s = summarize(_every_metric_records())
    assert {Metric(o.metric) for o in s.objectives} == set(Metric)
    for o in s.objectives:
        spec = Metric(o.metric)
        assert o.unit == spec.unit
        assert o.label.endswith(f"({spec.unit or 'fraction'}, {o.provenance})")
        if spec is Metric.ACCURACY:  # named by what it is: the validation score
            assert o.short == "val accuracy"
        else:
            assert o.short.startswith(" ".join(b for b in (spec.noun, spec.unit) if b))
    # the pick's reason prints each number with the spec's unit
    assert s.pick is not None and s.original is not None
    for o in s.objectives:
        if o.unit:
            where = f" on {o.target}" if o.target else ""
            num = r"[-+0-9.e]+"
            pattern = rf"{re.escape(o.noun + where)} {num} {o.unit} vs {num} {o.unit} \("
            assert re.search(pattern, s.pick.reason), (o.name, s.pick.reason)
    # Markdown: size and per-target latency headings; HTML: axis labels and front columns
    md = render_markdown(s)
    size, latency = Metric.SIZE_MB, Metric.LATENCY_MS
    assert f"| {size.noun} {size.unit} |" in md
    assert all(f"| {latency.noun} {latency.unit} {tgt} (" in md for tgt in s.targets)
    page = render_html(s)
    assert all(escape(o.label) in page for o in s.objectives)
    per_target = [m for m in Metric if m.per_target]
    assert all(f"<th>{m.noun} {m.unit}<br>mobile-sd8gen2</th>" in page for m in per_target)
    labels = json.loads(render_json(s))["objective_labels"]
    assert labels == {o.name: o.label for o in s.objectives}


def test_recommended_line_names_the_file_only_where_it_is(tmp_path: Path) -> None:
    """On a machine of a shared study, the pick may be a trial another machine built: the
    line must not name a path that does not exist here."""
    from edgeopt.report.terminal import recommended_line

    s = summarize(demo_records(20))
    assert s.pick is not None
    onnx = next(t.onnx for t in s.complete if t.number == s.pick.number)
    assert onnx
    elsewhere = recommended_line(s, tmp_path)
    assert f"trial {s.pick.number}, built on" in elsewhere and "not in" in elsewhere
    assert str(tmp_path / onnx) not in elsewhere
    (tmp_path / onnx).parent.mkdir(parents=True)
    (tmp_path / onnx).write_bytes(b"onnx")
    assert recommended_line(s, tmp_path) == f"recommended: trial {s.pick.number}, {tmp_path / onnx}"
