"""Self-contained HTML report (placeholder until the plots land)."""

from __future__ import annotations

import html

from edgeopt.report.markdown import render_markdown
from edgeopt.report.summary import Summary


def render_html(s: Summary) -> str:
    """One offline HTML page."""
    body = html.escape(render_markdown(s))
    head = "<!doctype html><html><head><meta charset='utf-8'></head>"
    return f"{head}<body><pre>{body}</pre></body></html>"
