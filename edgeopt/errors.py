"""Errors that cross module boundaries.

The library raises; only the CLI prints. Each error carries a one-line message, an optional
hint that says what to do, and the process exit code the CLI uses for it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any


class EdgeoptError(Exception):
    """Base for every error edgeopt reports to a user (exit code 1: a runtime failure)."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(EdgeoptError):
    """Bad input or usage: a missing file, a corrupt model, a wrong shape, a typo in a profile.

    Raised before any work starts where possible; exit code 2.
    """

    exit_code = 2


class CandidateError(EdgeoptError):
    """One candidate failed in one stage (prune, export, quantize, ...).

    The search records it as a failed trial with ``stage`` and the message and goes on.
    """

    def __init__(self, stage: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{stage}: {message}", hint)
        self.stage = stage
        self.reason = message

    def __reduce__(self) -> tuple[Any, ...]:  # pickled by a runtime child (its arguments)
        return (type(self), (self.stage, self.reason, self.hint))


class ConversionError(EdgeoptError):
    """A model could not be converted to a runtime's format (an op the converter lacks, ...):
    ``runtime`` names the runtime, ``reason`` is the converter's own first line."""

    def __init__(self, runtime: str, reason: str, hint: str | None = None) -> None:
        super().__init__(f"converting to {runtime} failed: {reason}", hint)
        self.runtime = runtime
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # pickled by a runtime child (its arguments)
        return (type(self), (self.runtime, self.reason, self.hint))


_DISK_FULL_SIGNS = ("no space left", "errno 28", "disk is full", "disk quota exceeded")


def disk_full(folder: Path, reason: str = "", *, need_bytes: int = 1 << 20) -> OSError | None:
    """An ENOSPC ``OSError`` when ``folder``'s file system has under ``need_bytes`` free, or
    ``reason`` (a trial child's error text) says a write ran out of space; None otherwise.

    A child's write that fails for lack of space shows up in its error as anything from
    ENOSPC to a half-written file read back ("Wire format was corrupt", "unexpected pos"):
    the free space tells them apart from a fault of the candidate."""
    text = reason.lower()
    try:
        st = os.statvfs(folder)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = need_bytes
    if free < need_bytes or any(sign in text for sign in _DISK_FULL_SIGNS):
        return OSError(errno.ENOSPC, "No space left on device", str(folder))
    return None


class BudgetError(EdgeoptError):
    """A release check found a budget exceeded (exit code 1, as a failed test would)."""


def environment_error(exc: BaseException) -> ConfigError | None:
    """The ConfigError for a fault of the machine rather than of edgeopt: a full disk, a
    read-only or unwritable folder (also as SQLite reports them). None for anything else.

    Looks through the chain of causes, since SQLAlchemy and ORT wrap the OS error.
    """
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).lower()
        code = getattr(seen, "errno", None)
        name = getattr(seen, "filename", None)
        if code in (errno.ENOSPC, errno.EDQUOT) or "database or disk is full" in text:
            return ConfigError(
                "no space left on the device" + (f" writing {name}" if name else ""),
                hint="free disk space, then re-run the same command: finished trials are kept",
            )
        if code in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly database" in text:
            return ConfigError(
                f"cannot write {name or 'the run directory'}: the folder or file is read-only",
                hint="make it writable, or write elsewhere (--out for reports and runs)",
            )
        seen = seen.__cause__ or seen.__context__
    return None
