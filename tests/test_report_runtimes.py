"""What the reports say measured each number: the runtime each measured target ran on (read
from the trials' converted files, ``record_targets``), and that accuracy and the task metrics
are scored on each candidate's ONNX file with ONNX Runtime. Hand-built records of a run
timed on ONNX Runtime and OpenVINO, of one on OpenVINO alone, and of an ORT-only run, whose
wording stays as it was."""

from __future__ import annotations

from typing import Any

from report_demo import demo_records

from edgeopt.report import summarize
from edgeopt.report.html import render_html
from edgeopt.report.markdown import render_markdown

HOST, OV = "host-cpu", "openvino-host"
ORT_FOOTER = (
    "meas. = measured on this host (ORT CPU); est. = estimated from the hardware profile. "
    "val = validation split (selection); test = never seen by the search. Full plots: "
    "report.html."
)
ORT_TASK_LINE = "Task metrics, validation / test (measured on this host, ORT CPU; 95 % intervals:"


def _task_metrics(acc: float) -> dict[str, Any]:
    entries = {m: {"value": acc} for m in ("accuracy", "f1", "precision", "recall", "roc_auc")}
    return {"val": entries, "test": entries}


def _records(targets: tuple[str, ...]) -> dict[str, Any]:
    """Demo records whose ``openvino-host`` (if a target) was measured on this host in
    OpenVINO, each trial's IR recorded as the search records it; task metrics everywhere."""
    records = demo_records(12, targets=targets, seed=2)
    for t in records["trials"]:
        if t["state"] != "complete":
            continue
        t["task_metrics"] = _task_metrics(t["val_accuracy"])
        if OV not in targets:
            continue
        latency = t["measurements"][OV]["latency_ms"]["value"]
        t["measurements"][OV] = {
            "latency_ms": {"value": latency, "provenance": "measured"},
            "size_mb": {"value": t["size_mb"], "provenance": "measured"},
        }
        n = t["number"]
        t["info"] = {
            "target_files": {
                OV: {
                    "runtime": "openvino",
                    "files": [f"trials/{n}/model.xml", f"trials/{n}/model.bin"],
                    "agreement": 1.0,
                    "val_accuracy": t["val_accuracy"],
                }
            }
        }
    return records


def _footer(md: str) -> str:
    return next(line for line in md.splitlines() if line.startswith("meas. = "))


def _task_line(md: str) -> str:
    return next(line for line in md.splitlines() if line.startswith("Task metrics"))


def test_markdown_names_openvino_for_the_target_it_timed() -> None:
    md = render_markdown(summarize(_records((HOST, OV))))
    footer = _footer(md)
    assert footer.startswith(
        "meas. = measured on this host (ORT CPU; openvino-host: OpenVINO CPU); est. = "
    ), footer
    # scores are the ONNX candidate's on ORT, whatever runtime timed it
    assert "val/test scores: each candidate's ONNX file on ORT CPU" in footer
    task = _task_line(md)
    assert "ORT CPU, on each candidate's ONNX file" in task, task


def test_markdown_of_a_run_on_openvino_alone_does_not_name_ort_for_timings() -> None:
    footer = _footer(render_markdown(summarize(_records((OV,)))))
    assert footer.startswith("meas. = measured on this host (openvino-host: OpenVINO CPU); ")
    assert "val/test scores: each candidate's ONNX file on ORT CPU" in footer


def test_markdown_of_an_ort_run_keeps_its_wording() -> None:
    md = render_markdown(summarize(_records((HOST, "mobile-sd8gen2"))))
    assert _footer(md).startswith(ORT_FOOTER)
    assert _task_line(md).startswith(ORT_TASK_LINE)


def test_html_names_openvino_for_the_target_it_timed_and_keeps_ort_wording() -> None:
    html = render_html(summarize(_records((HOST, OV))))
    assert "measured = on this host with ORT CPU; openvino-host: OpenVINO CPU (host" in html
    assert "on each candidate's ONNX file with ONNX Runtime" in html
    plain = render_html(summarize(_records((HOST, "mobile-sd8gen2"))))
    assert "measured = on this host with ONNX Runtime (host latency" in plain
    assert "OpenVINO" not in plain and "candidate's ONNX file" not in plain
