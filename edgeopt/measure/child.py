"""Subprocess entry point that times models in their runtime: ONNX Runtime (``.onnx``,
``.ort``), OpenVINO (``.xml``) or LiteRT (``.tflite``) where the request names it or the
file's suffix says so.

Run as ``python -m edgeopt.measure.child`` with a JSON request on stdin; prints a JSON reply.
Imports nothing beyond the standard library, numpy, the runtime (onnxruntime, openvino
for an ``.xml``, ai_edge_litert for a ``.tflite``; psutil only where ``/proc`` is missing)
and the three stdlib-only edgeopt modules it shares with the rest of edgeopt (``session``:
how a model is loaded; ``timing``: the interleaved timer; ``power``: energy readings), so the
measured process holds nothing but the runtime and the models: no torch, no optuna. The same
four files are what the SSH runner copies to a remote device (``edgeopt.measure.ssh``), which
needs only onnxruntime (or openvino, or ai-edge-litert), numpy and Python 3.8+.

Request kinds: ``latency`` (interleaved timing; one ``input`` file for every model, or
``inputs``, one per model), ``memory`` (peak RSS of this process) and ``energy`` (needs a
``power`` source from ``edgeopt.measure.power``). Every request may name ``runtime``
(``edgeopt.measure.session.SESSION_FACTORIES``; default: by suffix), ``precision_hint``
(OpenVINO; default f32), ``providers`` (ORT) and a
``deadline_s`` after which the process ends itself (exit code ``DEADLINE_EXIT``, from a
watchdog thread, which runs while ORT holds the main thread), so that no timing process
outlives its caller, here or on a device. On this host the request also names the
``parent_pid`` the child dies with (``edgeopt.lifeline``, stdlib only, imported then).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeopt.measure.power import energy_per_run_mj
from edgeopt.measure.session import ModelSession, model_session, runtime_of_path
from edgeopt.measure.timing import time_interleaved

DEADLINE_EXIT = 3


def _rss_mb() -> float:
    try:  # a device may lack psutil; Linux has /proc
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def _peak_rss_mb() -> float:
    # VmHWM belongs to this process image; ru_maxrss would carry over the (larger) parent's
    # peak across fork+exec and report the parent's memory as ours
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _session(req: dict[str, Any], path: str) -> ModelSession:
    return model_session(
        path,
        threads=req["threads"],
        runtime=req.get("runtime"),
        providers=req.get("providers"),
        precision_hint=req.get("precision_hint", "f32"),
    )


def _feed(sess: ModelSession, x: np.ndarray) -> Callable[[], object]:
    return lambda: sess.run(x)


def _runs(req: dict[str, Any]) -> list[Callable[[], object]]:
    """One run callable per model of ``req``, each fed its input."""
    inputs = req.get("inputs") or [req["input"]] * len(req["paths"])
    if len(inputs) != len(req["paths"]):
        raise ValueError(f"{len(req['paths'])} models but {len(inputs)} inputs")
    return [
        _feed(_session(req, path), np.load(inp))
        for path, inp in zip(req["paths"], inputs)  # noqa: B905 (strict= needs 3.10; devices 3.8)
    ]


def memory(req: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of this process while one model is loaded and run, and the part it added."""
    path = req["paths"][0]
    # the runtime is imported before the baseline so that it is not counted
    runtime = req.get("runtime") or runtime_of_path(path)
    if runtime == "openvino":
        import openvino  # noqa: F401
    elif runtime == "litert":
        import ai_edge_litert.interpreter  # noqa: F401
    else:
        import onnxruntime  # noqa: F401

    x = np.load(req["input"])
    base = _rss_mb()
    run = _feed(_session(req, path), x)
    for _ in range(5):
        run()
    peak = _peak_rss_mb()
    return {"peak_rss_mb": peak, "model_memory_mb": max(peak - base, _rss_mb() - base, 0.0)}


def latency(req: dict[str, Any]) -> dict[str, Any]:
    """Interleaved timing (``edgeopt.measure.timing``): each round runs every model in turn."""
    times = time_interleaved(
        _runs(req),
        warmup=req["warmup"],
        target_round_ms=req["target_round_ms"],
        min_runs=req["min_runs"],
        max_runs=req["max_runs"],
        min_rounds=req["min_rounds"],
        max_rounds=req["max_rounds"],
        time_budget_s=req["time_budget_s"],
    )
    return {
        "round_medians_ms": times.round_medians_ms,
        "samples_ms": times.samples_ms,
        "runs_per_round": times.runs_per_round,
    }


def energy(req: dict[str, Any]) -> dict[str, Any]:
    """Energy per run of one model from the device's power reading (``req["power"]``)."""
    (run,) = _runs(req)
    for _ in range(req.get("warmup", 10)):
        run()
    return energy_per_run_mj(run, req["power"], float(req.get("duration_s", 1.0)))


def _watchdog(deadline_s: float) -> None:
    def expire() -> None:
        print(f"TimeoutError: deadline of {deadline_s:.0f}s reached", file=sys.stderr, flush=True)
        os._exit(DEADLINE_EXIT)

    timer = threading.Timer(deadline_s, expire)
    timer.daemon = True
    timer.start()


def main() -> None:
    req = json.load(sys.stdin)
    if req.get("parent_pid"):  # started by edgeopt on this host (never on a device)
        from edgeopt.lifeline import die_with_parent, ignore_stop_signals

        die_with_parent(int(req["parent_pid"]))
        ignore_stop_signals()
    if req.get("deadline_s"):
        _watchdog(float(req["deadline_s"]))
    kinds = {"memory": memory, "latency": latency, "energy": energy}
    try:
        reply = kinds[req["kind"]](req)
    except Exception as exc:
        # one line for the caller's error message (ORT's errors subclass Exception only)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"{type(exc).__name__}: {first[:500]}", file=sys.stderr)
        sys.exit(1)
    json.dump(reply, sys.stdout)


if __name__ == "__main__":
    main()
