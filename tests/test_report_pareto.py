"""Pareto maths: invariants checked on seeded random inputs (property-style, no hypothesis)."""

from __future__ import annotations

import random

import pytest

from edgeopt.report.pareto import dominates, knee, normalize, pareto_front, running_best


def _cases(n_cases: int = 300) -> list[tuple[list[list[float]], list[bool]]]:
    rng = random.Random(1234)
    out = []
    for _ in range(n_cases):
        k = rng.randint(1, 4)
        n = rng.randint(1, 25)
        maximize = [rng.random() < 0.5 for _ in range(k)]
        # a coarse grid makes ties and exact duplicates common
        grid = rng.choice([None, 3, 5])
        pts = [
            [float(rng.randint(0, grid)) if grid else rng.uniform(-5, 5) for _ in range(k)]
            for _ in range(n)
        ]
        out.append((pts, maximize))
    return out


CASES = _cases()


def test_front_members_are_mutually_non_dominated() -> None:
    for pts, up in CASES:
        front = pareto_front(pts, up)
        assert front, "a non-empty set always has a front"
        for i in front:
            for j in front:
                assert not dominates(pts[i], pts[j], up)


def test_every_non_member_is_dominated_by_a_member() -> None:
    for pts, up in CASES:
        front = pareto_front(pts, up)
        for i in set(range(len(pts))) - set(front):
            assert any(dominates(pts[j], pts[i], up) for j in front)


def test_knee_is_on_the_front_and_deterministic() -> None:
    for pts, up in CASES:
        k = knee(pts, up)
        assert k in pareto_front(pts, up)
        assert knee(pts, up) == k


def test_knee_is_invariant_to_affine_rescaling_of_an_objective() -> None:
    rng = random.Random(7)
    for pts, up in CASES[:100]:
        col = rng.randrange(len(up))
        scale, shift = rng.uniform(0.1, 50), rng.uniform(-10, 10)
        scaled = [[v * scale + shift if c == col else v for c, v in enumerate(p)] for p in pts]
        assert knee(scaled, up) == knee(pts, up)


def test_normalize_maps_best_to_zero_and_worst_to_one() -> None:
    for pts, up in CASES:
        norm = normalize(pts, up)
        for c, is_max in enumerate(up):
            col = [p[c] for p in pts]
            ncol = [r[c] for r in norm]
            assert all(0.0 <= v <= 1.0 for v in ncol)
            if max(col) == min(col):
                assert all(v == 0.0 for v in ncol)
                continue
            best = col.index(max(col) if is_max else min(col))
            worst = col.index(min(col) if is_max else max(col))
            assert ncol[best] == 0.0 and ncol[worst] == 1.0


def test_knee_on_a_hand_built_front() -> None:
    # accuracy (max) vs latency (min): the balanced point wins over the two extremes
    pts = [[0.95, 10.0], [0.93, 3.0], [0.70, 1.0], [0.90, 9.0]]
    up = [True, False]
    assert pareto_front(pts, up) == [0, 1, 2]
    assert knee(pts, up) == 1
    assert knee([], up) is None


def test_dominance_respects_direction() -> None:
    assert dominates([2.0, 1.0], [1.0, 1.0], [True, False])
    assert not dominates([2.0, 1.0], [1.0, 1.0], [False, False])
    assert not dominates([1.0, 1.0], [1.0, 1.0], [True, True])
    with pytest.raises(ValueError):
        pareto_front([[1.0, 2.0]], [True])


def test_running_best_skips_missing_values() -> None:
    assert running_best([3.0, None, 1.0, 2.0], maximize=False) == [3.0, 3.0, 1.0, 1.0]
    assert running_best([None, 1.0, 0.5, 4.0], maximize=True) == [None, 1.0, 1.0, 4.0]
