"""``--seq-lens 8,16``: the sequence lengths a text model is timed at beside its main one.

Parsing the flag, and the check that a model takes every length named: a model without a
sequence axis, or a length above what it takes (its position table), is a usage error that
names the limit. The caller says how to run the model at a length (a torch forward, an ORT
session), so this module stays free of both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from edgeopt.errors import ConfigError
from edgeopt.inputs import ModelInputs

MAX_SEQ_LENS = 8
"""At most this many lengths: each one is a full timing run per model."""

Runs = Callable[[int], str | None]
"""Runs the model once at a sequence length: None when it ran, else the error's first line."""


def parse_seq_lens(text: str) -> tuple[int, ...]:
    """``8,16`` as ``(8, 16)``: positive integers, no repeats, in the order given.
    ConfigError for anything else."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        lens = tuple(int(p) for p in parts)
    except ValueError:
        lens = ()
    if not lens or any(n <= 0 for n in lens):
        raise ConfigError(
            f"--seq-lens {text!r}: give positive sequence lengths separated by commas",
            hint="e.g. --seq-lens 16,32,64",
        )
    if len(set(lens)) != len(lens):
        raise ConfigError(f"--seq-lens {text}: a length is named twice", hint="name each once")
    if len(lens) > MAX_SEQ_LENS:
        raise ConfigError(
            f"--seq-lens names {len(lens)} lengths; at most {MAX_SEQ_LENS}",
            hint="each length is one more timing run per model: name the ones you ship",
        )
    return lens


def seq_label(n: int) -> str:
    """The key a length goes under in JSON records (object keys are strings)."""
    return str(n)


def check_seq_lens(
    inputs: ModelInputs, seq_lens: Sequence[int], runs: Runs, what: str = "the model"
) -> None:
    """Refuse ``seq_lens`` ``what`` cannot be run at: ConfigError when its inputs have no
    sequence axis, or when ``runs`` fails at a length; for a length above the main one the
    message names the longest length that runs (found by bisection: a position table
    takes every length up to its rows)."""
    if not seq_lens:
        return
    main = inputs.seq_len
    if main is None:
        raise ConfigError(
            f"--seq-lens: {what} has no sequence axis (inputs {inputs.text()})",
            hint="--seq-lens is for text models whose token inputs take any length; leave it out",
        )
    good = {main}
    for n in sorted(seq_lens):
        if n in good:
            continue
        error = runs(n)
        if error is None:
            good.add(n)
            continue
        below = [g for g in good if g < n]
        if not below:
            raise ConfigError(
                f"--seq-lens {n}: {what} does not run at {n} tokens: {error}",
                hint=f"name lengths it takes (its main length is {main})",
            )
        limit = _longest(max(below), n, runs)
        raise ConfigError(
            f"--seq-lens {n}: {what} takes at most {limit} tokens "
            f"(at {limit + 1} it raises: {error if limit + 1 == n else runs(limit + 1)})",
            hint=f"name lengths up to {limit}",
        )


def _longest(ok: int, bad: int, runs: Runs) -> int:
    """The longest length in ``[ok, bad)`` that runs, given that ``ok`` runs and ``bad``
    does not."""
    while bad - ok > 1:
        mid = (ok + bad) // 2
        if runs(mid) is None:
            ok = mid
        else:
            bad = mid
    return ok


def first_line(exc: BaseException) -> str:
    """An exception as one short line: ORT's messages run over several lines and lead with
    the source file and the failed assertion; what the user can read is the node and the
    sentence at the end."""
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    node = re.search(r"running (\w+) node", line)
    if node and "Status Message:" in line:
        detail = line.rsplit("Status Message:", 1)[1]
        detail = re.sub(r"^\s*\S+:\d+\s+", "", detail)  # the source file:line
        detail = detail.rsplit(" was false. ", 1)[-1].strip()  # the assertion's text
        line = f"ORT {node.group(1)} node: {detail}"
    return line if len(line) <= 160 else line[:157] + "..."
