"""Pure Pareto maths on plain number vectors: dominance, the front, normalisation, the knee.

Every function takes ``points`` (one sequence of objective values per point) and
``maximize`` (one flag per objective). Nothing here knows about trials or files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

KNEE_METHOD = (
    "knee = the front member closest (Euclidean) to the utopia point after min-max "
    "normalising each objective over the front (0 = best value on the front, 1 = worst)"
)


def _check(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> None:
    for p in points:
        if len(p) != len(maximize):
            raise ValueError(f"point {list(p)} has {len(p)} values, expected {len(maximize)}")


def dominates(a: Sequence[float], b: Sequence[float], maximize: Sequence[bool]) -> bool:
    """True when ``a`` is at least as good as ``b`` in every objective and better in one."""
    better = False
    for x, y, up in zip(a, b, maximize, strict=True):
        if up:
            x, y = -x, -y
        if x > y:
            return False
        if x < y:
            better = True
    return better


def pareto_front(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indices (ascending) of the points no other point dominates.

    Exact duplicates of a front point are all kept (none dominates the other).
    """
    _check(points, maximize)
    return [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p, maximize) for j, q in enumerate(points) if j != i)
    ]


def normalize(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[list[float]]:
    """Min-max scale each objective to [0, 1] as a cost: 0 = the best value among ``points``,
    1 = the worst. An objective with a single value maps to 0 for every point."""
    _check(points, maximize)
    if not points:
        return []
    out = [[0.0] * len(maximize) for _ in points]
    for k, up in enumerate(maximize):
        col = [p[k] for p in points]
        lo, hi = min(col), max(col)
        span = hi - lo
        for i, v in enumerate(col):
            if span <= 0 or not math.isfinite(span):
                out[i][k] = 0.0
            else:
                out[i][k] = (hi - v) / span if up else (v - lo) / span
    return out


def knee(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> int | None:
    """Index into ``points`` of the knee of their Pareto front (see ``KNEE_METHOD``).

    Ties go to the lower index, so the result is deterministic. None for no points.
    """
    if not points:
        return None
    front = pareto_front(points, maximize)
    scaled = normalize([points[i] for i in front], maximize)
    dist = [math.sqrt(sum(v * v for v in row)) for row in scaled]
    best = min(range(len(front)), key=lambda j: (dist[j], front[j]))
    return front[best]


def running_best(values: Sequence[float | None], maximize: bool) -> list[float | None]:
    """Best value seen so far at each position; ``None`` entries (no value) are skipped."""
    out: list[float | None] = []
    best: float | None = None
    for v in values:
        if (
            v is not None
            and math.isfinite(v)
            and (best is None or (v > best if maximize else v < best))
        ):
            best = v
        out.append(best)
    return out
