"""The one writer of benchmarks/RESULTS.md: each benchmark replaces only its own section."""

from __future__ import annotations

from pathlib import Path

from edgeopt.fileio import write_atomic

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(start: str, end: str, body: str, path: Path = RESULTS) -> None:
    """Put ``body`` between the ``start`` and ``end`` markers in ``path`` (appended, with the
    markers, when they are not there yet), atomically; the rest of the file stays as it is."""
    block = f"{start}\n{body.strip(chr(10))}\n{end}"
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if start in old and end in old:
        head, rest = old.split(start, 1)
        new = head + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    write_atomic(path, new)
