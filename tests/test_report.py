"""Markdown, JSON and CSV reports rendered from plain run records (seeded demo records of
the exact ``load_run`` shape, so sizes a quick real run cannot reach are covered)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from report_demo import demo_records

from edgeopt.errors import ConfigError
from edgeopt.report import parse_formats, render_reports, summarize
from edgeopt.report.markdown import render_markdown
from edgeopt.report.pareto import pareto_front
from edgeopt.report.tables import render_csv, render_json


def test_markdown_of_a_50_trial_run_is_short_and_carries_front_and_pick() -> None:
    records = demo_records(50)
    s = summarize(records)
    md = render_markdown(s)
    lines = md.splitlines()
    assert len(lines) < 60
    assert s.pick is not None
    assert f"**Recommended: trial {s.pick.number}.**" in md
    assert "knee" in md and "utopia" in md
    # front rows: every shown front member appears as a table row
    rows = [line for line in lines if line.startswith("| ")]
    shown = {int(r.split("|")[1].strip().strip("*★ ").split()[0]) for r in rows[1:]}
    assert shown >= {t["number"] for t in s.front[:15]}
    assert "(meas.)" in md and "(est.)" in md
    assert "Failed trials" in md and "Stopped early" in md
    assert "estimated from the hardware profile" in md


def test_pick_is_a_front_member_within_budget_and_reason_has_numbers() -> None:
    for seed in range(5):
        s = summarize(demo_records(30, seed=seed))
        assert s.pick is not None
        picked = next(t for t in s.front if t["number"] == s.pick.number)
        assert picked["feasible"] and picked["on_front"]
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
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert pruned and all(r["pruned_reason"] for r in pruned)
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
