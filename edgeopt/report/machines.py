"""Which machine built and measured each trial of a study that several machines shared."""

from __future__ import annotations

from edgeopt.records import RunRecord, TrialRecord


def machine_label(t: TrialRecord) -> str:
    """``hostname (CPU line)`` of the machine that built and measured a trial, or ``""``."""
    return "" if t.machine is None else t.machine.label


def machine_note(records: RunRecord) -> str | None:
    """Which machine measured which trials, when more than one did (a shared study)."""
    by_machine: dict[str, list[TrialRecord]] = {}
    for t in records.trials:
        label = machine_label(t)
        if label:
            by_machine.setdefault(label, []).append(t)
    if len(by_machine) < 2:
        return None
    parts = []
    for label, trials in by_machine.items():
        nums = ", ".join(str(t.number) for t in trials[:12]) + (", …" if len(trials) > 12 else "")
        machine = trials[0].machine
        own = machine.baseline_latency_ms if machine is not None else {}
        there = (
            "; original " + ", ".join(f"{v:.4g} ms on {k}" for k, v in own.items()) if own else ""
        )
        parts.append(f"{label}: trials {nums}{there}")
    text = f"Trials ran on {len(by_machine)} machines: " + "; ".join(parts) + "."
    if records.host_latency_ms:
        text += (
            " Each measured latency is that machine's ratio to the original (timed "
            "interleaved there) times the study's reference latency of the original, measured "
            f"on {records.host or 'the first machine'}; so they compare across machines, "
            "while raw milliseconds from different machines do not."
        )
    return text
