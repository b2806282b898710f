"""Which machine built and measured each trial of a study that several machines shared."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def machine_label(t: Mapping[str, Any]) -> str:
    """``hostname (CPU line)`` of the machine that built and measured a trial, or ``""``."""
    m = t.get("machine") or {}
    if not m:
        return ""
    return f"{m.get('hostname', '?')} ({m.get('cpu', 'unknown CPU')})"


def machine_note(records: Mapping[str, Any]) -> str | None:
    """Which machine measured which trials, when more than one did (a shared study)."""
    by_machine: dict[str, list[Mapping[str, Any]]] = {}
    for t in records.get("trials", []):
        label = machine_label(t)
        if label:
            by_machine.setdefault(label, []).append(t)
    if len(by_machine) < 2:
        return None
    parts = []
    for label, trials in by_machine.items():
        nums = ", ".join(str(t["number"]) for t in trials[:12]) + (
            ", …" if len(trials) > 12 else ""
        )
        own = (trials[0].get("machine") or {}).get("baseline_latency_ms") or {}
        there = (
            "; original " + ", ".join(f"{v:.4g} ms on {k}" for k, v in own.items()) if own else ""
        )
        parts.append(f"{label}: trials {nums}{there}")
    text = f"Trials ran on {len(by_machine)} machines: " + "; ".join(parts) + "."
    base = records.get("baseline") or {}
    if base.get("host_latency_ms"):
        text += (
            " Each measured latency is that machine's ratio to the original (timed "
            "interleaved there) times the study's reference latency of the original, measured "
            f"on {base.get('host', 'the first machine')}; so they compare across machines, "
            "while raw milliseconds from different machines do not."
        )
    return text
