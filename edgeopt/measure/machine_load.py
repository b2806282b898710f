"""How busy this host was while a measurement ran, recorded beside every host-measured latency.

Interleaving protects a ratio against slow drift, not against contention that hurts a big
model more than a small one: a search that ran beside other jobs can report a speedup that a
quiet machine does not reproduce. So every host measurement records the load around it (the
1-minute load average before and after, and the other processes that used CPU meanwhile), and
reports can say why an in-search figure and the final re-measure disagree.

"Other processes" are every process but this one and its children (the timing child); their
CPU use is the CPU time they spent over the measurement window itself, so no extra sampling
time is spent. A process that started and ended inside the window is not seen.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import psutil

BUSY_FRACTION = 0.2
"""A process using at least this share of one CPU over the window counts as busy."""
MAX_NAMED = 5
"""The busiest processes named in a record (the rest are counted)."""

_Key = tuple[int, float]  # (pid, create time): a pid reused meanwhile is another process


@dataclass(frozen=True)
class MachineLoad:
    """The host's load around one measurement.

    ``loadavg_1m``: the 1-minute load average when it ended (``loadavg_1m_before`` when it
    began; None where the OS has none). ``other_cpus``: CPUs that other processes used over
    the ``window_s`` seconds (1.0 = one core kept busy). ``busy``: how many of them used at
    least ``BUSY_FRACTION`` of a CPU; ``busy_processes``: the busiest, as
    ``{"name", "pid", "cpu"}`` (``cpu`` in CPUs), at most ``MAX_NAMED``.
    """

    loadavg_1m: float | None
    loadavg_1m_before: float | None
    cpu_count: int
    other_cpus: float
    busy: int
    busy_processes: tuple[dict[str, Any], ...]
    window_s: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["busy_processes"] = [dict(p) for p in self.busy_processes]
        return d

    @property
    def level(self) -> float | None:
        """One number for "how loaded": the larger of the load averages, else other CPUs."""
        avgs = [v for v in (self.loadavg_1m, self.loadavg_1m_before) if v is not None]
        return max(avgs) if avgs else self.other_cpus


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # no load average on this OS
        return None


def _cpu_seconds() -> dict[_Key, tuple[str, float]]:
    """CPU seconds spent so far by every process this user can see, by (pid, start time)."""
    out: dict[_Key, tuple[str, float]] = {}
    for p in psutil.process_iter(["name", "cpu_times", "create_time"]):
        times, created = p.info.get("cpu_times"), p.info.get("create_time")
        if times is None or created is None:
            continue
        out[(p.pid, created)] = (str(p.info.get("name") or "?"), times.user + times.system)
    return out


def _ours() -> set[int]:
    """This process and its children (the timing child, a trial child)."""
    me = psutil.Process()
    try:
        return {me.pid} | {c.pid for c in me.children(recursive=True)}
    except psutil.Error:
        return {me.pid}


class LoadMonitor:
    """``with LoadMonitor() as m: measure()`` then ``m.load``: the load over that block."""

    def __init__(self) -> None:
        self.load: MachineLoad | None = None

    def __enter__(self) -> LoadMonitor:
        self._avg0 = _loadavg()
        self._cpu0 = _cpu_seconds()
        self._t0 = time.monotonic()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.load = self._finish()

    def _finish(self) -> MachineLoad:
        window = max(time.monotonic() - self._t0, 1e-3)
        cpu1, ours = _cpu_seconds(), _ours()
        used: list[dict[str, Any]] = []
        for key, (name, seconds) in cpu1.items():
            if key[0] in ours:
                continue
            before = self._cpu0.get(key, (name, 0.0))[1]  # new: all its time is in the window
            cpu = (seconds - before) / window
            if cpu > 0:
                used.append({"name": name, "pid": key[0], "cpu": round(cpu, 2)})
        used.sort(key=lambda p: -p["cpu"])
        busy = [p for p in used if p["cpu"] >= BUSY_FRACTION]
        return MachineLoad(
            loadavg_1m=_loadavg(),
            loadavg_1m_before=self._avg0,
            cpu_count=os.cpu_count() or 1,
            other_cpus=round(float(sum(p["cpu"] for p in used)), 2),
            busy=len(busy),
            busy_processes=tuple(busy[:MAX_NAMED]),
            window_s=round(window, 3),
        )
