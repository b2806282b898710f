"""``optimize --seq-lens``: the per-length latencies in every report, not only report.md and
report.json: one column per length in report.html's front table and in trials.csv, with its
provenance, and none for a run that recorded no lengths. Hand-built records (a real run with
--seq-lens is in tests/test_transformers_run.py)."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from report_demo import demo_records

from edgeopt.metrics import Metric
from edgeopt.report import summarize
from edgeopt.report.html import render_html
from edgeopt.report.model import fmt_num
from edgeopt.report.tables import render_csv

HOST = "host-cpu"
LENGTHS = ("16", "64")


def _p50(number: int, length: str) -> float:
    """Distinct from any other number in the report: 11.00n at 16 tokens, 44.00n at 64."""
    return (11.0 if length == "16" else 44.0) + number / 1000


def _records(with_lengths: bool = True, provenance: str = "measured") -> dict[str, Any]:
    records = demo_records(16, targets=(HOST,), seed=1)
    shown = [
        t["number"]
        for t in records["trials"]
        if t["state"] == "complete" and (t["on_front"] or t["baseline"])
    ]
    if with_lengths:  # as final.json's latency_by_seq (edgeopt.search.run.seq_measure)
        records["latency_by_seq"] = {
            HOST: {
                "provenance": provenance,
                "original": {n: {"p50_ms": _p50(0, n)} for n in LENGTHS},
                "trials": {
                    str(k): {n: {"p50_ms": _p50(k, n), "ratio_to_original": 1.0} for n in LENGTHS}
                    for k in shown
                },
            }
        }
    return records


def _front_table(html: str) -> tuple[list[str], list[list[str]]]:
    """report.html's front-member table: its headings and each row's cells."""
    section = html.split("<h2>Front members</h2>", 1)[1].split("</table>", 1)[0]
    head = re.findall(r"<th>(.*?)</th>", section)
    rows = [
        re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)
        for r in re.findall(r"<tr class=[^>]*>(.*?)</tr>", section, re.S)
    ]
    return head, rows


def test_html_front_table_has_a_column_per_length_with_its_provenance() -> None:
    s = summarize(_records())
    head, rows = _front_table(render_html(s))
    assert rows and all(len(r) == len(head) for r in rows)
    for n in LENGTHS:
        (col,) = [i for i, h in enumerate(head) if f"@{n}" in h]
        assert HOST in head[col]
        for cells in rows:
            number = int(cells[0])
            value = fmt_num(_p50(number, n), Metric.LATENCY_MS)
            assert cells[col].startswith(value), (n, number, cells[col])
            assert 'class="prov measured"' in cells[col]


def test_html_says_estimated_for_lengths_the_cost_model_gave() -> None:
    head, rows = _front_table(render_html(summarize(_records(provenance="estimated"))))
    col = next(i for i, h in enumerate(head) if "@64" in h)
    assert all('class="prov estimated"' in r[col] for r in rows)


def test_csv_has_a_column_per_length_and_its_provenance() -> None:
    records = _records()
    timed = records["latency_by_seq"][HOST]["trials"]
    rows = list(csv.DictReader(io.StringIO(render_csv(summarize(records)))))
    assert len(rows) == 16
    for n in LENGTHS:
        col = f"latency_ms@{n}[{HOST}]"
        assert col in rows[0] and f"{col}.provenance" in rows[0]
        for r in rows:
            if r["number"] in timed:
                assert float(r[col]) == _p50(int(r["number"]), n)
                assert r[f"{col}.provenance"] == "measured"
            else:  # not timed at each length: the front and the baselines only
                assert r[col] == "" and r[f"{col}.provenance"] == ""


def test_no_length_columns_without_seq_lens() -> None:
    s = summarize(_records(with_lengths=False))
    head, _ = _front_table(render_html(s))
    assert not any("@" in h for h in head)
    header = render_csv(s).splitlines()[0]
    assert "@" not in header
