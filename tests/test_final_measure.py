"""The front's final host latency: re-measured in one interleaved pass after the search, with
the host's load recorded, shown beside the in-search figure, and flagged when the two
disagree. A real tiny search through the command line, a real loaded machine (a spinning
child process), a real Ctrl-C, and report functions on crafted plain records."""

from __future__ import annotations

import copy
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from edgeopt.cli import main
from edgeopt.export.convert import ConvertOptions, convert
from edgeopt.measure.accuracy import onnx_logits
from edgeopt.measure.machine_load import MAX_NAMED
from edgeopt.measure.runners import LocalRunner
from edgeopt.profiles.runtime_spec import Runtime
from edgeopt.records import SCHEMA_VERSION, RunRecord, TrialRecord
from edgeopt.report import summarize
from edgeopt.report.final_latency import final_figure
from edgeopt.report.markdown import render_markdown
from edgeopt.report.model import fmt_num
from edgeopt.report.tables import render_json
from edgeopt.search.run.collect import load_run
from edgeopt.search.run.setup import finalize

HOST = "host-cpu"
LOAD_NUMBERS = ("loadavg_1m", "loadavg_1m_before", "other_cpus", "window_s")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, model_files: dict, tiny_data: Path) -> Path:
    """A real 3-trial search on this host through the command line, reports included."""
    out = tmp_path_factory.mktemp("final") / "run"
    args = ["optimize", model_files["bundle_wide"], "--data", tiny_data, "--target", "cpu"]
    args += ["--trials", "3", "--sampler", "random", "--threads", "1", "--out", out]
    args += ["--objectives", "accuracy,latency,size"]  # int8: smaller, on the front
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code in (0, 1), result.output  # 1: nothing feasible is still reported
    (out.parent / "output.txt").write_text(result.output)
    return out


@pytest.fixture
def spinner() -> Iterator[int]:
    """The pid of a process that keeps one CPU busy: another job beside the measurement
    (started through a shell that exits, so it is not a child of this process)."""
    shell = subprocess.run(
        ["sh", "-c", f"'{sys.executable}' -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(shell.stdout.strip())
    time.sleep(0.5)  # past its start-up: spinning
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)


def _assert_load(load: dict[str, Any]) -> None:
    for key in LOAD_NUMBERS:
        assert isinstance(load[key], float), (key, load)
    assert isinstance(load["busy"], int) and isinstance(load["cpu_count"], int)
    assert load["window_s"] > 0 and load["other_cpus"] >= 0


def test_final_json_holds_a_figure_for_every_front_member_and_the_original(
    run_dir: Path,
) -> None:
    final = json.loads((run_dir / "final.json").read_text())
    entry = final["final_latency"][HOST]
    assert entry["passes"] == 1 and entry["threads"] == 1
    assert entry["device"].startswith("local://")
    assert entry["original"]["p50_ms"] > 0
    assert entry["original"]["p90_ms"] >= entry["original"]["p50_ms"]
    _assert_load(entry["load"])
    records = load_run(run_dir)
    front = {t["number"] for t in records["trials"] if t.get("on_front")}
    baselines = {t["number"] for t in records["trials"] if t.get("baseline")}
    assert front and front | baselines <= {int(n) for n in entry["trials"]}
    for number, fig in entry["trials"].items():
        assert fig["p50_ms"] > 0 and fig["p90_ms"] >= fig["p50_ms"], number
        assert fig["speedup"] == pytest.approx(1 / fig["ratio_to_original"])
    # the unchanged model timed against the original it is: a ratio near 1
    unchanged = next(t for t in records["trials"] if t.get("baseline") == "unchanged")
    assert 0.5 < entry["trials"][str(unchanged["number"])]["ratio_to_original"] < 2.0
    # the in-search figure is kept, with the load recorded while it was measured
    for t in records["trials"]:
        if t["state"] == "complete":
            lat = t["measurements"][HOST]["latency_ms"]
            assert lat["provenance"] == "measured" and lat["value"] > 0
            _assert_load(lat["load"])
            assert t["raw_latency"][HOST]["load"] == lat["load"]


def test_every_report_shows_the_final_figure_beside_the_in_search_one(run_dir: Path) -> None:
    md = (run_dir / "report" / "report.md").read_text()
    assert f"final latency ms {HOST} (meas., after search)" in md
    assert "in-search" in md
    assert f"Final latency on {HOST}: the front, the baselines and the original" in md
    html = (run_dir / "report" / "report.html").read_text()
    assert "final latency ms<br>host-cpu<br>(after the search)" in html
    data = json.loads((run_dir / "report" / "report.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["final_latency"][HOST]["original"]["p50_ms"] > 0
    assert isinstance(data["latency_disagreements"], list)
    for t in data["trials"]:
        if t.get("on_front"):
            assert t["final_latency"][HOST]["speedup"] > 0
    printed = (run_dir.parent / "output.txt").read_text()
    assert f"final latency on {HOST} (measured on this host after the search" in printed
    header = (run_dir / "report" / "trials.csv").read_text().splitlines()[0]
    assert f"final_latency_ms[{HOST}]" in header and f"final_speedup[{HOST}]" in header


def test_pick_uses_the_final_figure(run_dir: Path) -> None:
    records = load_run(run_dir)
    s = summarize(records)
    if s.pick is None or not any(o.metric == "latency_ms" for o in s.objectives):
        pytest.skip("no pick in this tiny run")
    picked = s.records.trial(s.pick.number)
    assert picked is not None
    f = final_figure(s.records, picked, HOST)
    assert f is not None
    assert "after the search, in one interleaved pass with the original" in s.pick.reason
    assert f"{fmt_num(f.p50_ms, 'latency_ms')} ms" in s.pick.reason


def test_host_measurement_names_a_busy_process_beside_it(
    tmp_path: Path, model_files: dict, spinner: int
) -> None:
    (stats,) = LocalRunner().measure_latency(
        [model_files["onnx"]], threads=1, input_shape=(1, 16, 16), time_budget_s=0.5
    )
    assert stats.load is not None
    _assert_load(stats.load)
    pids = [p["pid"] for p in stats.load["busy_processes"]]
    assert spinner in pids or stats.load["busy"] > MAX_NAMED, stats.load
    assert stats.load["other_cpus"] >= 0.2
    assert os.getpid() not in pids  # this process and its timing child are not "others"


def test_final_pass_on_a_loaded_machine_records_that_load(run_dir: Path, spinner: int) -> None:
    final = finalize(run_dir)  # again, now beside a job that keeps a CPU busy
    load = final["final_latency"][HOST]["load"]
    pids = [p["pid"] for p in load["busy_processes"]]
    assert spinner in pids or load["busy"] > MAX_NAMED
    assert json.loads((run_dir / "final.json").read_text())["final_latency"][HOST]["load"] == load


def test_ctrl_c_during_the_final_pass_keeps_the_test_numbers_and_says_so(
    tmp_path: Path, run_dir: Path
) -> None:
    _ctrl_c_during_the_final_pass(tmp_path, run_dir)


def test_ctrl_c_in_the_final_pass_after_openvino_converted_and_scored_here(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    # OpenVINO loaded into this process (its TBB threads) before a search made this Ctrl-C
    # a segmentation fault: edgeopt converts and scores in a runtime child, so this process
    # never loads it, whatever ran before (here: a conversion, a scoring, a search whose
    # set-up converts the original and whose final pass scores each target)
    x = np.random.default_rng(0).standard_normal((8, 1, 16, 16)).astype(np.float32)
    ir = convert(model_files["onnx"], Runtime.OPENVINO, tmp_path / "ir" / "m.xml").path
    half = ConvertOptions(fp16_weights=True)
    convert(model_files["onnx"], Runtime.OPENVINO, tmp_path / "ir" / "h.xml", half)
    ref = onnx_logits(model_files["onnx"], x, threads=1)
    assert np.abs(onnx_logits(ir, x, threads=1) - ref).max() < 1e-4
    assert np.abs(onnx_logits(ir, x, threads=1, precision_hint="bf16") - ref).max() < 0.1
    out = tmp_path / "run"
    args = ["optimize", model_files["bundle_wide"], "--data", tiny_data, "--out", out]
    args += ["--target", "cpu", "--trials", "3", "--sampler", "random", "--threads", "1"]
    args += ["--objectives", "accuracy,latency,size"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code in (0, 1), result.output
    _ctrl_c_during_the_final_pass(tmp_path, out)


def _ctrl_c_during_the_final_pass(tmp_path: Path, run_dir: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(run_dir, run)
    stop = threading.Event()
    # Ctrl-C raises KeyboardInterrupt here even where pytest was started in the background
    # (with SIGINT ignored)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=_ctrl_c_once_timing_starts, args=(stop,), daemon=True).start()
    try:
        final = finalize(run)  # a copy of a run directory is the same run
    finally:
        stop.set()
        signal.signal(signal.SIGINT, old)
    assert final["test_accuracy"]  # computed before the pass: kept
    assert "interrupted" in final["final_latency"][HOST]["skipped"]
    on_disk = json.loads((run / "final.json").read_text())
    assert on_disk["test_accuracy"] == final["test_accuracy"]
    md = render_markdown(summarize(load_run(run)))
    assert f"Final latency on {HOST} was not re-measured: interrupted" in md


def _ctrl_c_once_timing_starts(stop: threading.Event) -> None:
    """Send this process SIGINT (Ctrl-C) once its timing child runs."""
    import psutil

    me = psutil.Process()
    while not stop.wait(0.02):
        for child in me.children():
            try:
                if "edgeopt.measure.child" in " ".join(child.cmdline()):
                    os.kill(me.pid, signal.SIGINT)
                    return
            except psutil.Error:
                continue


def _crafted(records: dict[str, Any], final_speedup: float, search: float, now: float) -> dict:
    """``records`` with one front member's final speedup set and the load recorded during
    the search (``search`` other CPUs) and the final pass (``now``)."""
    out = copy.deepcopy(records)
    t = next(t for t in out["trials"] if _member(t))
    ref = out["baseline"]["host_latency_ms"][HOST]
    t["measurements"][HOST]["latency_ms"].update(value=ref / 14.1, load=_load(search, 3.4))
    t["final_latency"] = {HOST: {"p50_ms": ref / final_speedup, "speedup": final_speedup}}
    t["final_latency"][HOST]["load"] = _load(now, 0.3)
    return out


def _load(other_cpus: float, avg: float) -> dict[str, Any]:
    busy = [{"name": "stress", "pid": 7, "cpu": other_cpus}] if other_cpus >= 0.2 else []
    return {
        "loadavg_1m": avg,
        "loadavg_1m_before": avg,
        "cpu_count": 2,
        "other_cpus": other_cpus,
        "busy": len(busy),
        "busy_processes": busy,
        "window_s": 1.0,
    }


def _member(t: dict[str, Any]) -> bool:
    """A front member that is not the original (the plain int8 baseline may be one)."""
    return bool(t.get("on_front")) and t.get("baseline") != "unchanged"


def _has_member(records: dict[str, Any]) -> bool:
    return any(_member(t) for t in records["trials"])


@pytest.mark.parametrize(
    ("search", "now", "why"),
    [
        (1.9, 0.0, "the machine was loaded during the search (load 3.4, other processes used"),
        (0.0, 1.9, "the machine was loaded during the final pass"),
        (0.0, 0.0, "the recorded load does not explain it"),
    ],
)
def test_a_disagreement_over_15_percent_is_said_on_its_row(
    run_dir: Path, search: float, now: float, why: str
) -> None:
    records = load_run(run_dir)
    if not _has_member(records):
        pytest.skip("only baselines on the front of this tiny run")
    crafted = _crafted(records, 8.2, search, now)
    s = summarize(crafted)
    md = render_markdown(s)
    row = next(line for line in md.splitlines() if "⚠ in-search 14.1x vs final 8.20x" in line)
    assert why in row
    data = json.loads(render_json(s))
    (flag,) = [d for d in data["latency_disagreements"] if d["final_speedup"] == 8.2]
    assert flag["in_search_speedup"] == pytest.approx(14.1)
    assert why in flag["note"]
    assert "figure(s) disagree with the search by more than 15%, flagged on their rows" in md


def test_within_15_percent_is_not_flagged() -> None:
    records = RunRecord.from_dict({"targets": [HOST], "baseline": {"host_latency_ms": {HOST: 1.0}}})
    trial: dict[str, Any] = {
        "number": 0,
        "state": "complete",
        "measurements": {HOST: {"latency_ms": {"value": 0.5, "provenance": "measured"}}},
        "final_latency": {HOST: {"p50_ms": 0.4, "speedup": 2.2}},
    }
    f = final_figure(records, TrialRecord.from_dict(trial), HOST)
    assert f is not None and f.in_search_speedup == pytest.approx(2.0)
    assert not f.disagrees and f.note() is None
    trial["final_latency"][HOST]["speedup"] = 2.4  # 20 % apart
    f = final_figure(records, TrialRecord.from_dict(trial), HOST)
    assert f is not None and f.disagrees
    assert "no load was recorded during the search" in (f.note() or "")


def test_an_older_run_without_final_figures_still_reports(tmp_path: Path, run_dir: Path) -> None:
    import shutil

    run = tmp_path / "old"
    shutil.copytree(run_dir, run)
    # as an older edgeopt left it: no final figures in final.json or the study, no load
    final = json.loads((run / "final.json").read_text())
    final.pop("final_latency")
    (run / "final.json").write_text(json.dumps(final))
    with sqlite3.connect(run / "study.db") as db:
        db.execute("DELETE FROM study_user_attributes WHERE key LIKE 'final_latency:%'")
    result = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "final latency" not in md and "Final latency" not in md
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["final_latency"] == {} and data["latency_disagreements"] == []
    assert not any("final_latency" in t for t in data["trials"])
    records = load_run(run)
    for t in records["trials"]:  # older trials recorded no load either
        for m in (t.get("measurements") or {}).values():
            m["latency_ms"].pop("load", None)
    assert "Recommended: trial" in render_markdown(summarize(records))
