"""``--seq-lens``: the per-length latencies of a run record, typed for the reports.

``RunRecord.latency_by_seq`` holds them as ``final.json`` does (one mapping per profile, see
``edgeopt.search.run.seq_measure``); reports read them through ``seq_latency``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SeqLatency:
    """One target's p50 latencies per sequence length, for the original and each trial."""

    provenance: str
    lengths: tuple[str, ...]
    original: Mapping[str, float] = field(default_factory=dict)
    trials: Mapping[int, Mapping[str, float]] = field(default_factory=dict)

    def p50_ms(self, trial: int, length: str) -> float | None:
        """``trial``'s p50 at ``length`` (None where it was not timed)."""
        return self.trials.get(trial, {}).get(length)


def _p50s(figures: Mapping[str, Any]) -> dict[str, float]:
    return {str(n): float(f["p50_ms"]) for n, f in figures.items() if f and "p50_ms" in f}


def seq_latency(by_seq: Mapping[str, Any] | None, target: str) -> SeqLatency | None:
    """``target``'s per-length figures of a run record's ``latency_by_seq`` (None without)."""
    raw = (by_seq or {}).get(target)
    if not raw:
        return None
    original = _p50s(raw.get("original") or {})
    trials = {int(k): _p50s(v or {}) for k, v in (raw.get("trials") or {}).items()}
    return SeqLatency(str(raw.get("provenance") or "estimated"), tuple(original), original, trials)
