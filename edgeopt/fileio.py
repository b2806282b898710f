"""Files written so that a reader never sees half of one: write a temporary file, then rename.
And ``file_lock``: one exclusive lock file shared by this machine's processes."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def refuse_symlinks(root: Path, paths: Iterable[Path]) -> None:
    """ConfigError naming the first of ``paths`` (inside the directory ``root``) that is a
    symbolic link: a run directory is data, and a planted link would make edgeopt write
    outside it."""
    for path in paths:
        if path.is_symlink():
            raise ConfigError(
                f"{path} is a symbolic link inside {root}; edgeopt does not write through it "
                "(the writes would land outside the run directory)",
                hint=f"remove the link {path} (a run directory holds its own files)",
            )


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """``obj`` as JSON, written atomically (``default=str`` for paths and the like)."""
    return write_atomic(path, json.dumps(obj, indent=indent, default=str))


def read_json(path: str | Path) -> Any:
    """Parse the JSON file at ``path`` (errors are the caller's to phrase)."""
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created, with its folder, if missing) while
    the block runs; other processes entering the same lock wait."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
