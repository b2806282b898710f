"""Render an HTML report to PNG with headless Chromium, network off, for a visual check.

    python scripts/screenshot_report.py REPORT.html OUT.png [--width 1400] [--height 3000]
        [--offset PX]

Exits non-zero when Chromium is missing or writes no image. Chromium runs with a throwaway
profile and its background networking disabled; a proxy that points nowhere makes any
request the page might try fail, so the shot shows what an offline reader sees.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """The first Chromium-family browser on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(
    html: Path,
    png: Path,
    *,
    width: int = 1400,
    height: int = 3000,
    offset: int = 0,
    timeout_s: float = 90,
) -> Path:
    """Write a PNG of ``html`` to ``png``; raises RuntimeError when that fails.

    ``offset`` > 0 shoots the page from that many pixels down (through a shifted copy of
    the file), to look at a long report piece by piece.
    """
    browser = find_browser()
    if browser is None:
        raise RuntimeError("no chromium on PATH (apt-get install chromium)")
    png = png.resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeopt-shot-") as profile:
        if offset:
            text = html.read_text(encoding="utf-8")
            shift = f"<style>body{{margin-top:-{offset}px !important}}</style></head>"
            html = Path(profile) / "shifted.html"
            html.write_text(text.replace("</head>", shift, 1), encoding="utf-8")
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--proxy-server=127.0.0.1:9",  # nothing listens there: the network is off
            "--proxy-bypass-list=<-loopback>",
            f"--user-data-dir={profile}/chrome",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            "--hide-scrollbars",
            html.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if not png.exists() or png.stat().st_size == 0:
        raise RuntimeError(
            f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    return png


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--offset", type=int, default=0, help="Start this many pixels down.")
    args = ap.parse_args(argv)
    try:
        out = screenshot(
            args.html, args.png, width=args.width, height=args.height, offset=args.offset
        )
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
