"""Energy as an interval: a lower bound from work and traffic, an upper bound from power x time."""

from __future__ import annotations

from collections.abc import Mapping

from edgeopt.profiles import ComputeUnit, HardwareProfile


def kernel_energy_pj(
    unit: ComputeUnit, dtype: str, ops: float, nbytes: float, pj_per_byte: float
) -> float:
    """Lower-bound energy of one kernel: ``ops x pJ/op + bytes x pJ/byte``."""
    return ops * unit.pj_per_op(dtype) + nbytes * pj_per_byte


def energy_bounds_mj(
    profile: HardwareProfile, busy_s: Mapping[str, float], total_s: float, low_pj: float
) -> tuple[float, float]:
    """``(low, high)`` in mJ; high is ``sum(active_w * busy + idle_w * (T - busy))`` over units
    and never below low."""
    high_j = 0.0
    for u in profile.units:
        b = busy_s.get(u.id, 0.0)
        high_j += u.power.active_w * b + u.power.idle_w * max(total_s - b, 0.0)
    low_mj = low_pj * 1e-9
    return low_mj, max(high_j * 1e3, low_mj)
