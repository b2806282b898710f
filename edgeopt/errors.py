"""Errors that cross module boundaries.

The library raises; only the CLI prints. Each error carries a one-line message, an optional
hint that says what to do, and the process exit code the CLI uses for it.
"""

from __future__ import annotations


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


class BudgetError(EdgeoptError):
    """A release check found a budget exceeded (exit code 1, as a failed test would)."""
