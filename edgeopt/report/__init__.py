"""Reports of a run, rendered from its records (never from live Optuna objects).

``render_reports(records, out_dir, formats)`` renders records already loaded (by
``edgeopt.search.run.collect.load_run``, or built by hand in tests), read once into the typed
``edgeopt.records.RunRecord`` by ``summarize``. This package imports nothing
of the search, the pipeline, optuna or torch: loading a run directory is the search's job
(``edgeopt.search.run.collect.write_run_reports`` loads and renders in one call).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.fileio import write_atomic
from edgeopt.records import RunRecord
from edgeopt.report.html import render_html
from edgeopt.report.markdown import render_markdown
from edgeopt.report.model import Summary
from edgeopt.report.summary import summarize
from edgeopt.report.tables import render_csv, render_json

FORMATS = ("html", "md", "json", "csv")
FILE_NAMES = {
    "html": "report.html",
    "md": "report.md",
    "json": "report.json",
    "csv": "trials.csv",
}

__all__ = ["FILE_NAMES", "FORMATS", "parse_formats", "render_reports", "summarize"]


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"html,md"`` (or an iterable of names) -> validated, de-duplicated format names."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in items:
        name = raw.strip().lower()
        if name == "markdown":
            name = "md"
        if not name:
            continue
        if name not in FORMATS:
            raise ConfigError(
                f"unknown report format {raw.strip()!r}",
                hint=f"choose from {', '.join(FORMATS)}",
            )
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("no report format given", hint=f"choose from {', '.join(FORMATS)}")
    return tuple(out)


def _renderers() -> dict[str, Callable[[Summary], str]]:
    return {"html": render_html, "md": render_markdown, "json": render_json, "csv": render_csv}


def render_reports(
    records: RunRecord | Mapping[str, Any],
    out_dir: Path,
    formats: Iterable[str] = FORMATS,
) -> list[Path]:
    """Render ``records`` (a ``RunRecord``, or the dict ``edgeopt.search.run.collect.load_run``
    gives) into ``out_dir``.

    Each file is written atomically. Returns the written paths in ``formats`` order.
    """
    fmts = parse_formats(formats)
    summary = summarize(records)
    renderers = _renderers()
    out_dir = Path(out_dir)
    return [write_atomic(out_dir / FILE_NAMES[f], renderers[f](summary)) for f in fmts]
