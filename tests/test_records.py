"""The run as a typed record (edgeopt/records.py): a real tiny run's records and the seeded
demo records read into ``RunRecord`` and written back exactly, the accessors that replace
the dict ``.get`` chains, and a record built in code laid out as ``load_run`` lays it out."""

from __future__ import annotations

import ast
import csv
import io
import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from report_demo import demo_records

from edgeopt.cli import main
from edgeopt.errors import ConfigError
from edgeopt.record_codec import Record
from edgeopt.records import (
    SCHEMA_VERSION,
    MetricEntry,
    RunRecord,
    TrialRecord,
    TrialState,
    as_run,
)
from edgeopt.report import summarize
from edgeopt.report.markdown import render_markdown
from edgeopt.report.tables import render_csv
from edgeopt.search.run.collect import load_run, study_records
from edgeopt.search.run.progress import _summary
from edgeopt.search.study.records import trial_record
from edgeopt.search.trial.protocol import Status, TrialResult

EDGEOPT = Path(__file__).resolve().parents[1] / "edgeopt"


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, model_files: dict, tiny_data: Path) -> tuple:
    """A real 3-trial search on a measured and an estimated target: ``(load_run's
    records with importances, the JSON report)``."""
    out = tmp_path_factory.mktemp("records") / "run"
    args = ["optimize", model_files["bundle"], "--data", tiny_data, "--target", "cpu,mobile"]
    args += ["--trials", "3", "--sampler", "random", "--threads", "1", "--out", out]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    # one int8 flavour per search, the first target's, and the CLI says so
    assert "warning: int8 candidates are quantized for host-cpu" in result.output
    report = json.loads((out / "report" / "report.json").read_text())
    return load_run(out, importance=True), report


def _same(a: Any, b: Any) -> None:
    """Equal, and written as the same JSON text (same keys in the same order)."""
    assert a == b
    assert json.dumps(a) == json.dumps(b)


def test_a_real_runs_records_and_its_json_report_read_back_exactly(real: tuple) -> None:
    records, report = real
    for d in (records, report):  # the report's own keys (pick, notes ...) come back as well
        _same(RunRecord.from_dict(d).to_dict(), d)
    run = RunRecord.from_dict(records)
    assert run.schema_version == SCHEMA_VERSION == report["schema_version"]
    assert TrialState.COMPLETE in {t.state for t in run.trials}
    assert run.kept is not None and not run.kept.extra and not run.kept.raw  # all typed
    # the search builds the typed record itself; the progress line reads it as it is
    study = optuna.load_study(study_name=run.study["name"], storage=run.study["storage"])
    live = study_records(study)
    assert isinstance(live, RunRecord) and live.kept is None
    assert live.trials == run.trials and live.final_latency == run.final_latency


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"n_trials": 200, "seed": 4},
        {"fidelity": True},
        {"max_size_mb": None, "importance": False},
        {"targets": ("host-cpu",), "seed": 2},
        {"n_trials": 1},
    ],
)
def test_demo_records_read_back_exactly(kwargs: dict[str, Any]) -> None:
    d = demo_records(**kwargs)
    run = RunRecord.from_dict(d)
    _same(run.to_dict(), d)
    assert len(run.trials) == len(d["trials"])
    assert as_run(run) is run and as_run(d) == run


def test_the_accessors_read_what_the_dicts_say(real: tuple) -> None:
    records, _ = real
    run = RunRecord.from_dict(records)
    assert run.targets == ("host-cpu", "mobile-sd8gen2") and run.task_metric == "accuracy"
    assert run.budgets == {} and run.model_path == records["config"]["model"]["path"]
    assert run.n("val") == records["n_val"] and run.n("test") == records["n_test"]
    assert run.accuracy_kind == "accuracy" and run.host == records["baseline"]["host"]
    assert [o.maximize for o in run.objectives] == [
        o["direction"] == "maximize" for o in records["objectives"]
    ]
    seen_task = seen_final = 0
    for t, d in zip(run.trials, records["trials"], strict=True):
        assert t.number == d["number"] and t.accuracy("val") == d.get("val_accuracy")
        assert t.state == d["state"] and t.fail_reason == d.get("fail_reason")
        assert t.machine is not None and t.machine.hostname == d["machine"]["hostname"]
        for target, by_metric in d.get("measurements", {}).items():
            for metric, entry in by_metric.items():
                got = t.metric(target, metric)
                assert got is not None and got.to_dict() == entry
                assert got.value == entry["value"] and got.provenance == entry["provenance"]
        for split, by_metric in d.get("task_metrics", {}).items():
            for metric, entry in by_metric.items():
                got = t.task_metric(split, metric)
                assert got is not None and got.value == entry["value"]
                assert got.interval == ((entry["low"], entry["high"]) if "low" in entry else None)
                seen_task += 1
        for target, figure in d.get("final_latency", {}).items():
            final = t.final(target)
            assert final is not None and final.p50_ms == figure["p50_ms"]
            assert final.load is not None and final.load.other_cpus == figure["load"]["other_cpus"]
            seen_final += 1
        assert t.task_metric("val", "nonexistent") is None and t.metric("nowhere", "x") is None
    assert seen_task and seen_final  # the front and the original have both
    host = run.final_latency["host-cpu"]
    assert host.original is not None and host.original.p50_ms > 0 and host.skipped is None


def _forget(x: Any) -> Any:
    """``x`` as if built in code: every record in it without what it was read from."""
    if isinstance(x, Record):
        return replace(x, kept=None, **{f.name: _forget(getattr(x, f.name)) for f in _own(x)})
    if isinstance(x, tuple):
        return tuple(_forget(v) for v in x)
    if isinstance(x, Mapping):
        return {k: _forget(v) for k, v in x.items()}
    return x


def _own(x: Record) -> list:
    return [f for f in fields(x) if f.name != "kept"]


def test_a_record_built_in_code_is_laid_out_as_load_run_writes_it(real: tuple) -> None:
    records, _ = real
    built = _forget(RunRecord.from_dict(records))
    assert built.kept is None and built.trials[0].kept is None
    _same(built.to_dict(), records)
    # a stopped and a failed trial, as the search records them
    stopped = TrialRecord(number=4, state=TrialState.STOPPED, stopped_reason="below the bar")
    assert list(stopped.to_dict())[-1] == "stopped_reason"
    assert "values" not in stopped.to_dict() and "fail_stage" not in stopped.to_dict()
    failed = TrialRecord(number=5, state=TrialState.FAIL, fail_stage="prune", fail_reason="x")
    assert list(failed.to_dict())[-2:] == ["fail_stage", "fail_reason"]


def test_a_value_read_differently_is_written_back_as_read() -> None:
    d = demo_records(8)
    d["trials"][0]["measurements"] = None  # a mapping that is null
    d["trials"][1]["machine"] = {}
    d["trials"][2]["written_by_a_later_version"] = [1, {"a": 2}]
    d["trials"][3]["raw_latency"] = {"host-cpu": None}
    d["future_key"] = {"x": 1}
    d["targets"] = [*d["targets"], None]
    run = RunRecord.from_dict(d)
    _same(run.to_dict(), d)
    assert run.trials[0].measurements == {} and run.trials[1].machine is None
    assert run.trials[3].raw_latency == {} and None not in run.targets
    # a field set since it was read is written (and one read oddly, then replaced, too)
    t = replace(run.trials[2], hopeless=True)
    assert t.to_dict()["hopeless"] is True and "written_by_a_later_version" in t.to_dict()
    m = replace(run.trials[0], measurements={"x": {"latency_ms": MetricEntry(value=1.0)}})
    assert m.to_dict()["measurements"] == {"x": {"latency_ms": {"value": 1.0}}}


def test_a_record_shares_nothing_mutable_with_its_dicts() -> None:
    d = demo_records(4)
    run = RunRecord.from_dict(d)
    d["trials"][0]["values"]["accuracy"] = -1.0
    out = run.to_dict()
    out["trials"][0]["candidate"]["prune"]["ratio"] = 9
    assert run.trials[0].values["accuracy"] != -1.0
    assert run.trials[0].candidate["prune"]["ratio"] != 9


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda t: t.pop("number"), "without 'number'"),
        (lambda t: t.pop("state"), "without 'state'"),
        (lambda t: t.update(state="running"), "unknown trial state 'running'"),
    ],
)
def test_a_trial_record_without_its_identity_is_refused(change: Any, words: str) -> None:
    d = demo_records(3)
    change(d["trials"][1])
    with pytest.raises(ConfigError, match=words):
        RunRecord.from_dict(d)


def test_the_records_module_imports_only_the_standard_library_and_errors_and_metrics() -> None:
    """Records stay readable anywhere (reports, devices): stdlib and a few light modules."""
    allowed = {"edgeopt.errors", "edgeopt.metrics", "edgeopt.record_codec", "edgeopt.data_facts"}
    for name in ("records.py", "record_codec.py", "data_facts.py"):
        tree = ast.parse((EDGEOPT / name).read_text())
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        ours = {m for m in mods if m and m.split(".")[0] == "edgeopt"}
        assert ours <= allowed, (name, ours)
        assert {m.split(".")[0] for m in mods if m} - {"edgeopt"} <= set(
            sys.stdlib_module_names
        ) | {"__future__"}
    code = (
        "import sys, edgeopt.records; print(sorted(m for m in ('optuna', 'torch', 'onnx', "
        "'onnxruntime', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- "stopped"
def _as_schema_3(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` as an edgeopt of schema 3 wrote it: Optuna's word for a trial stopped early."""
    old = json.loads(json.dumps(d))
    old["schema_version"] = 3
    for i, t in enumerate(old["trials"]):
        if t["state"] == "stopped":
            t["state"] = "pruned"
            old["trials"][i] = {
                ("pruned_reason" if k == "stopped_reason" else k): v for k, v in t.items()
            }
    return old


def test_records_of_an_older_edgeopt_that_say_pruned_still_read_and_report() -> None:
    new = demo_records(50)
    assert SCHEMA_VERSION == 5
    old = _as_schema_3(new)
    run = RunRecord.from_dict(old)
    _same(run.to_dict(), old)  # read back exactly as it was written
    stopped = [t for t in run.trials if t.state is TrialState.STOPPED]
    assert stopped and all("far below the budget" in (t.stopped_reason or "") for t in stopped)
    # the same run in either schema reads the same and reports the same
    assert run.trials == RunRecord.from_dict(new).trials
    s = summarize(old)
    assert len(s.stopped) == len(stopped)
    md = render_markdown(s)
    assert f"**Stopped early ({len(stopped)}):**" in md and "far below the budget" in md
    assert md == render_markdown(summarize(new))
    rows = list(csv.DictReader(io.StringIO(render_csv(s))))
    assert {r["state"] for r in rows} >= {"stopped"} and "pruned" not in {r["state"] for r in rows}
    assert all(r["stopped_reason"] for r in rows if r["state"] == "stopped")


def test_a_study_and_a_trial_result_of_an_older_edgeopt_read_as_stopped(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'old.db'}")
    for attrs in ({"pruned_reason": "older: below the bar"}, {"stopped_reason": "below it"}):
        study.add_trial(
            optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs=attrs)
        )
    old, new = study.get_trials()
    assert _summary(old, []) == "stopped early: older: below the bar"
    assert _summary(new, []) == "stopped early: below it"
    for t, why in ((old, "older: below the bar"), (new, "below it")):
        rec = trial_record(t)
        assert rec.state is TrialState.STOPPED and rec.stopped_reason == why
        d = rec.to_dict()
        assert d["state"] == "stopped" and d["stopped_reason"] == why and "pruned_reason" not in d
        assert TrialRecord.from_dict(d) == rec
    # the child's answer, as an older edgeopt wrote it
    (tmp_path / "result.json").write_text(json.dumps({"status": "pruned", "reason": "r"}))
    assert TrialResult.read(tmp_path / "result.json").status is Status.STOPPED
    TrialResult(Status.STOPPED, reason="r").write(tmp_path / "new.json")
    assert json.loads((tmp_path / "new.json").read_text())["status"] == "stopped"


def test_a_quiet_machines_load_is_laid_out_as_measured() -> None:
    """On a quiet machine ``busy_processes`` is empty and MachineLoad still writes it: a
    Load built in code must too (the layout test passed only on a loaded machine)."""
    from edgeopt.measure.machine_load import MachineLoad
    from edgeopt.records import Load

    quiet = MachineLoad(0.1, 0.1, 2, 0.0, 0, (), 1.0).to_dict()
    assert Load(**{**quiet, "busy_processes": ()}).to_dict() == quiet
    assert list(Load(**{**quiet, "busy_processes": ()}).to_dict()) == list(quiet)
