"""Confidence intervals on accuracies in the reports, and the pick that does not decide on
accuracy alone when two accuracies are within each other's interval."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from report_demo import demo_records

from edgeopt.data import split_sizes
from edgeopt.report.markdown import render_markdown
from edgeopt.report.stats import accuracy_interval, tied, untie_knee, wilson_interval
from edgeopt.report.summary import summarize


@pytest.mark.parametrize(
    ("p", "n", "low", "high"),
    [
        (0.5, 100, 0.40383, 0.59617),  # the textbook example
        (0.0, 10, 0.0, 0.27753),  # upper = z^2 / (n + z^2)
        (1.0, 10, 0.72247, 1.0),
        (0.9, 50, 0.78640, 0.95653),
        (0.98, 360, 0.95968, 0.99018),  # the roots of (0.98 - p)^2 = z^2 p (1 - p) / n
    ],
)
def test_wilson_interval_matches_known_values(p: float, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(p, n)
    assert lo == pytest.approx(low, abs=5e-5) and hi == pytest.approx(high, abs=5e-5)
    assert lo <= p <= hi


def test_wilson_interval_narrows_with_more_samples_and_refuses_nonsense() -> None:
    widths = [np.subtract(*wilson_interval(0.9, n)[::-1]) for n in (10, 100, 1000, 10000)]
    assert widths == sorted(widths, reverse=True)
    with pytest.raises(ValueError):
        wilson_interval(0.5, 0)
    with pytest.raises(ValueError):
        wilson_interval(1.2, 10)
    assert accuracy_interval(None, 100) is None and accuracy_interval(0.9, None) is None


def test_two_accuracies_028_points_apart_on_360_samples_are_tied() -> None:
    assert tied(0.9833, 0.9805, 360)
    assert not tied(0.9833, 0.93, 360)  # 5 points apart: the data tells them apart
    assert not tied(0.9833, 0.9805, 100_000)  # with enough samples it does too


def _records(accuracies: list[float], latencies: list[float], n_val: int | None) -> dict:
    """A run whose front is one trial per (accuracy, latency), all the same size."""
    trials = []
    for number, (acc, lat) in enumerate(zip(accuracies, latencies, strict=True)):
        m = {"value": lat, "provenance": "measured"}
        trials.append(
            {
                "number": number,
                "state": "complete",
                "describe": f"candidate {number}",
                "baseline": None,
                "values": {"accuracy": acc, "latency_ms[host-cpu]": lat, "size_mb": 0.5},
                "val_accuracy": acc,
                "test_accuracy": acc - 0.001,
                "measurements": {
                    "host-cpu": {
                        "latency_ms": m,
                        "size_mb": {"value": 0.5, "provenance": "measured"},
                    }
                },
                "size_mb": 0.5,
                "constraints": {},
                "feasible": True,
                "on_front": True,
            }
        )
    rec: dict[str, Any] = {
        "schema_version": 1,
        "config": {"model": {"path": "m.pt"}, "budgets": {}},
        "baseline": {"accuracy_kind": "accuracy"},
        "targets": ["host-cpu"],
        "objectives": [
            {"name": "accuracy", "direction": "maximize"},
            {"name": "latency_ms[host-cpu]", "direction": "minimize"},
            {"name": "size_mb", "direction": "minimize"},
        ],
        "trials": trials,
        "test_split": "test",
    }
    if n_val is not None:
        rec["n_val"], rec["n_test"] = n_val, n_val
    return rec


def test_the_pick_treats_028_points_on_360_samples_as_a_tie_on_accuracy() -> None:
    # trial 0 is 0.28 pt more accurate, trial 1 a little faster: on the front both are
    # "best" in one objective, so the knee is a coin toss that goes to trial 0
    accs, lats = [0.9833, 0.9805], [9.0, 8.9]
    assert summarize(_records(accs, lats, None)).pick.number == 0  # no counts: as before
    s = summarize(_records(accs, lats, 360))
    assert s.pick is not None and s.pick.number == 1  # accuracy alone does not decide
    assert "picked over the knee of the front, trial 0" in s.pick.reason
    assert "95 % Wilson score interval (on the 360 validation samples)" in s.pick.method
    # 5 points apart is not a tie: the knee stands
    assert summarize(_records([0.9833, 0.93], lats, 360)).pick.number == 0


def test_untie_stays_within_the_knees_interval() -> None:
    # 1 ties the knee (0) and beats it elsewhere; 2 ties 1 but not the knee: no drift to it
    points = [[0.92, 10.0], [0.90, 9.0], [0.875, 1.0]]
    assert tied(0.92, 0.90, 360) and tied(0.90, 0.875, 360) and not tied(0.92, 0.875, 360)
    assert untie_knee(points, [True, False], 0, 360, 0) == 1
    assert untie_knee(points, [True, False], 0, 360, 2) == 2  # nothing beats it elsewhere


def test_reports_show_the_interval_next_to_front_accuracies() -> None:
    rec = _records([0.9833, 0.93], [9.0, 8.9], 360)
    md = render_markdown(summarize(rec))
    lo, hi = wilson_interval(0.9833, 360)
    assert f"0.9833 [{lo:.3f}, {hi:.3f}]" in md
    assert "95 % confidence interval (Wilson score)" in md
    from edgeopt.report.html import render_html

    html = render_html(summarize(rec))
    assert f"0.9833 <span class='muted ci'>[{lo:.3f}, {hi:.3f}]</span>" in html


def test_sample_counts_change_the_reports_only_where_intervals_appear() -> None:
    from edgeopt.report.html import render_html
    from edgeopt.report.stats import interval_note, tie_rule

    rec = demo_records(20)
    counted = {**copy.deepcopy(rec), "n_val": 360, "n_test": 400}
    before, after = summarize(rec), summarize(counted)
    assert after.pick is not None and before.pick is not None
    assert after.pick.number == before.pick.number  # no tie with this run's knee
    note = interval_note(after.records)
    assert note is not None
    for render, escape in ((render_markdown, str), (render_html, _html_escape)):
        text = render(after)
        assert re.search(r"\[0\.\d{3}, [01]\.\d{3}\]", text)
        text = re.sub(
            r" (<span class='muted ci'>)?\[[01]\.\d{3}, [01]\.\d{3}\](</span>)?", "", text
        )
        text = text.replace(escape("; " + tie_rule(360)), "")
        text = text.replace(f"<p class='muted'>{escape(note)}</p>\n", "")
        assert text.replace(f" {note}", "") == render(before)


def _html_escape(text: str) -> str:
    from html import escape

    return escape(text)


def test_split_sizes_reads_the_label_counts(tiny_data: Path, tmp_path: Path) -> None:
    assert split_sizes(tiny_data) == {"n_val": 60, "n_test": 60}
    no_test = tmp_path / "no_test.npz"
    x, y = np.zeros((5, 1, 2, 2), np.float32), np.zeros(5, np.int64)
    np.savez(no_test, x_train=x, y_train=y, x_val=x[:3], y_val=y[:3])
    assert split_sizes(no_test) == {"n_val": 3, "n_test": 3}  # test falls back to val
    assert split_sizes(tmp_path / "gone.npz") == {"n_val": None, "n_test": None}
