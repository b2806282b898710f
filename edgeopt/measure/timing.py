"""The one interleaved timer: every model runs in turn in each round, order alternating.

A shared VM's speed drifts from minute to minute; interleaving makes every model see the same
drift, so per-round ratios stay trustworthy. Used by the timing child (``edgeopt bench``, the
search's host measurements) and by ``profiles calibrate``. Imports only the standard library
and runs on Python 3.8+, since the SSH runner copies it to devices.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a device's python may be 3.8, where abc generics cannot be subscripted
    from collections.abc import Callable, Sequence

    Run = Callable[[], object]


@dataclass(frozen=True)
class InterleavedTimes:
    """Per model (in the order given): its median per round, every timed run, runs per round."""

    round_medians_ms: list[list[float]]
    samples_ms: list[list[float]]
    runs_per_round: list[int]

    def medians_ms(self) -> list[float]:
        """Median of round medians per model."""
        return [statistics.median(r) for r in self.round_medians_ms]


def _timed(run: Run, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def time_interleaved(
    runs: Sequence[Run],
    *,
    warmup: int = 10,
    target_round_ms: float = 40.0,
    min_runs: int = 5,
    max_runs: int = 500,
    min_rounds: int = 5,
    max_rounds: int = 40,
    time_budget_s: float | None = 8.0,
) -> InterleavedTimes:
    """Time ``runs`` (one callable per model) interleaved.

    Each model gets enough runs per round that its round lasts about ``target_round_ms``.
    Rounds stop after ``max_rounds``, or once ``min_rounds`` ran and either ``time_budget_s``
    is spent or every model's median moved < 1 % over the last 3 rounds (after
    ``2 * min_rounds``). With ``min_rounds == max_rounds`` exactly that many rounds run.
    """
    per_run: list[float] = []
    for run in runs:
        _timed(run, warmup)
        per_run.append(statistics.median(_timed(run, 5)))
    counts = [max(min_runs, min(max_runs, int(target_round_ms / max(t, 1e-3)))) for t in per_run]
    rounds: list[list[float]] = [[] for _ in runs]
    samples: list[list[float]] = [[] for _ in runs]
    t_start = time.perf_counter()
    for r in range(max_rounds):
        order = range(len(runs)) if r % 2 == 0 else reversed(range(len(runs)))
        for i in order:
            ts = _timed(runs[i], counts[i])
            samples[i].extend(ts)
            rounds[i].append(statistics.median(ts))
        if r + 1 < min_rounds:
            continue
        if time_budget_s is not None and time.perf_counter() - t_start > time_budget_s:
            break
        if r + 1 >= 2 * min_rounds and _stable(rounds):
            break
    return InterleavedTimes(rounds, samples, counts)


def _stable(rounds: list[list[float]]) -> bool:
    """True when each model's median of round medians moved < 1 % over the last 3 rounds."""
    for rs in rounds:
        now, before = statistics.median(rs), statistics.median(rs[:-3])
        if abs(now - before) > 0.01 * before:
            return False
    return True
