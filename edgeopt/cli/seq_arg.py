"""``--seq-lens 8,16`` of ``edgeopt optimize``: the lengths the front is also timed at after
the search, parsed before any work (set-up checks that the model takes them)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from edgeopt.cli.options import seq_lens_option
from edgeopt.seq_lens import parse_seq_lens

F = TypeVar("F", bound=Callable[..., Any])


def seq_lens_arg(func: F) -> F:
    """``--seq-lens``, handed to the command as ``seq_lens``: the lengths as a tuple (empty
    when not given); ConfigError (exit 2) for a bad list."""

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        text = kwargs.pop("seq_lens")
        return func(*args, seq_lens=parse_seq_lens(text) if text is not None else (), **kwargs)

    option = seq_lens_option(
        "after the search the front and the original are re-timed at each length, one report "
        "column per length (the search optimizes the main length)."
    )
    return option(command)  # type: ignore[return-value]
