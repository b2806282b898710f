"""How sure an accuracy is: Wilson score intervals, and ties on accuracy within them.

An accuracy measured on n samples is a proportion; its 95 % Wilson score interval (Wilson,
1927) stays inside [0, 1] and holds its coverage near 0 and 1 and on small n, where the
normal approximation does not. Pure maths on plain numbers, like ``pareto``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edgeopt.metrics import task_metric_noun
from edgeopt.records import RunRecord
from edgeopt.report.pareto import dominates, normalize

Z95 = 1.959963984540054
"""The standard normal quantile of 0.975: two-sided 95 %."""


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """``(low, high)`` of the Wilson score interval of a proportion ``p`` observed on ``n``
    samples (``z`` = 1.96: 95 %). ValueError for ``n < 1`` or ``p`` outside [0, 1]."""
    if n < 1:
        raise ValueError(f"an interval needs at least one sample, got n={n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a proportion lies in [0, 1], got {p}")
    z2n = z * z / n
    center = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    # exactly 0 and 1 at the ends (rounding would leave 1 - 1e-16 above p = 1)
    low = 0.0 if p == 0.0 else max(0.0, center - half)
    high = 1.0 if p == 1.0 else min(1.0, center + half)
    return low, high


def accuracy_interval(value: object, n: object) -> tuple[float, float] | None:
    """``wilson_interval(value, n)``, or None when either is missing or not a proportion on
    a sample count (a report of a run that recorded no counts shows no interval)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return None
    return wilson_interval(float(value), n)


def fmt_interval(interval: tuple[float, float]) -> str:
    """``[0.966, 0.992]``: three decimals, enough for the interval of a few thousand samples."""
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def tied(a: float, b: float, n: int) -> bool:
    """True when accuracies ``a`` and ``b``, each on ``n`` samples, lie within each other's
    95 % Wilson interval: the data cannot tell them apart."""
    ia, ib = accuracy_interval(a, n), accuracy_interval(b, n)
    if ia is None or ib is None:  # not proportions: nothing to say they are alike
        return False
    return ib[0] <= a <= ib[1] and ia[0] <= b <= ia[1]


def untie_knee(
    points: Sequence[Sequence[float]],
    maximize: Sequence[bool],
    accuracy: int,
    n: int,
    knee_index: int,
) -> int:
    """The pick once accuracy alone may not decide (see ``tie_rule``): among the points
    ``tied`` with the knee on objective ``accuracy`` that are at least as good as it on every
    other objective and better on one, the closest to the utopia point on those other
    objectives (min-max normalised over ``points``; ties to the lower index); the knee itself
    when there is none. The pick's accuracy so stays within the knee's interval."""
    k = points[knee_index]
    others = [i for i in range(len(maximize)) if i != accuracy]
    up = [maximize[i] for i in others]
    rest = [[p[i] for i in others] for p in points]
    better = [
        j
        for j, p in enumerate(points)
        if j != knee_index
        and tied(p[accuracy], k[accuracy], n)
        and dominates(rest[j], rest[knee_index], up)
    ]
    if not better:
        return knee_index
    scaled = normalize(rest, up)
    return min(better, key=lambda j: (math.sqrt(sum(v * v for v in scaled[j])), j))


def tie_rule(n: int) -> str:
    """The rule of ``untie_knee`` in words, for the report's "how picked" text."""
    return (
        "accuracy alone does not decide: when other front members have a validation "
        "accuracy within the knee's 95 % Wilson score interval (on the "
        f"{n} validation samples), and it within theirs, and are at least as good on every "
        "other objective and better on one, the one of them closest to the utopia point on "
        "those other objectives is picked instead"
    )


def interval_note(records: RunRecord, kind: str = "accuracy") -> str | None:
    """What the bracketed intervals after an accuracy (``kind``: or fidelity; or the run's
    ``--metric``) are, from the records' sample counts; None when the run recorded none (then
    no interval is shown)."""
    n_val, n_test = records.n_val, records.n_test
    if not isinstance(n_val, int) or n_val < 1:
        return None
    on = f"{n_val} validation" + (f", {n_test} test" if isinstance(n_test, int) else "")
    metric = records.task_metric
    if kind != "fidelity" and metric != "accuracy":
        return (
            f"[low, high] after a {task_metric_noun(metric)}: its 95 % percentile bootstrap "
            f"interval (200 resamples of the split's samples: {on}), recorded for the front "
            "and the baselines; top-1 accuracy in the task metrics table has its Wilson score "
            "interval."
        )
    what = "a fidelity" if kind == "fidelity" else "an accuracy"
    return (
        f"[low, high] after {what}: its 95 % confidence interval (Wilson score) on the "
        f"split's samples ({on}); values within each other's interval are not told apart by "
        "this data."
    )
