"""The HTML report: one offline file whose plots are inline SVG (no browser needed), and a
headless-Chromium render when ``chromium`` is on PATH."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_demo import demo_records

from edgeopt.report import render_reports, summarize
from edgeopt.report.html import render_html

REPO = Path(__file__).resolve().parent.parent


class _Collect(HTMLParser):
    """Records every start tag with its attributes, and checks tags are balanced for SVG."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.svg_titles: list[str] = []
        self._depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "svg":
            self._depth += 1
        if tag == "title" and self._depth and self.tags[-2][0] == "svg":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._depth -= 1
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.svg_titles.append(data)


def _parse(text: str) -> _Collect:
    p = _Collect()
    p.feed(text)
    p.close()
    assert p._depth == 0, "unbalanced <svg> tags"
    return p


def _expected_plots(n_obj: int, with_importance: bool, *, front: bool = True) -> int:
    pairs = n_obj * (n_obj - 1) // 2
    return pairs + (1 if front else 0) + n_obj + (n_obj if with_importance else 0)


def test_one_svg_per_plot_and_no_external_references() -> None:
    records = demo_records(50)
    text = render_html(summarize(records))
    p = _parse(text)
    svgs = [a for t, a in p.tags if t == "svg"]
    n_obj = len(records["objectives"])  # accuracy, 2 latencies, size
    assert len(svgs) == _expected_plots(n_obj, with_importance=True)
    # every plot names itself
    assert len(p.svg_titles) == len(svgs)
    assert any("vs" in t for t in p.svg_titles)
    assert any(t.startswith("importance for") for t in p.svg_titles)
    assert any(t.startswith("Front members across") for t in p.svg_titles)
    assert sum(t.endswith("by trial") for t in p.svg_titles) == n_obj
    # nothing loads from anywhere: no scripts, stylesheets, images or links to the network
    for tag, attrs in p.tags:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed")
        for key in ("src", "href"):
            assert not attrs.get(key), f"<{tag} {key}=...> refers outside the file"
    without_ns = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in without_ns and "https://" not in without_ns
    assert "@import" not in text and "url(" not in text


def test_axis_labels_carry_units_and_provenance() -> None:
    text = render_html(summarize(demo_records(20)))
    assert "latency on host-cpu (ms, measured)" in text
    assert "latency on mobile-sd8gen2 (ms, estimated)" in text
    assert "size (MB, measured)" in text
    assert "validation accuracy (fraction, measured)" in text
    # legend: distinct markers for the baselines and the front
    for label in ("Pareto front", "original model", "plain int8", "recommended (trial"):
        assert label in text
    assert 'class="prov estimated"' in text and 'class="prov measured"' in text


def test_pick_failures_and_stopped_trials_are_explained() -> None:
    records = demo_records(50)
    s = summarize(records)
    text = render_html(s)
    assert f"Recommended: trial {s.pick.number}" in text  # type: ignore[union-attr]
    assert "utopia" in text
    for t in s.failed:
        assert re.search(rf"<td>{t.number}</td><td>[^<]*</td><td>{t.fail_stage}</td>", text)
    assert "Stopped early (" in text and "far below the budget" in text
    assert "Over a budget (" in text


def test_importance_absent_says_why() -> None:
    records = demo_records(10, importance=False)
    text = render_html(summarize(records))
    assert "not in these records" in text
    records["importance"] = {}
    text = render_html(summarize(records))
    assert "needs at least 4 complete trials" in text
    p = _parse(text)
    n_obj = len(records["objectives"])
    assert sum(1 for t, _ in p.tags if t == "svg") == _expected_plots(n_obj, False)


def test_fidelity_and_no_front_pages_render() -> None:
    text = render_html(summarize(demo_records(8, fidelity=True)))
    assert "not task accuracy" in text and "validation fidelity" in text
    records = demo_records(8, max_size_mb=1e-6)
    text = render_html(summarize(records))
    assert "No recommendation" in text and "meets every budget" in text
    _parse(text)
    only_failures = demo_records(4)
    for t in only_failures["trials"]:
        t.clear()
        t.update(number=len(t), state="fail", fail_stage="export", fail_reason="boom <b>")
    text = render_html(summarize(only_failures))
    assert "boom &lt;b&gt;" in text and "<b>boom" not in text
    _parse(text)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_headless_chromium_renders_the_report(tmp_path: Path) -> None:
    (html_path,) = render_reports(demo_records(50), tmp_path, formats=("html",))
    png = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "screenshot_report.py"),
            str(html_path),
            str(png),
            "--height",
            "2400",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    assert (width, height) == (1400, 2400)
    assert len(data) > 50_000  # plots drawn, not a blank page
