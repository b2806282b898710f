"""The largest model input edgeopt allocates, checked from the declared shape before any array
of it exists.

A model file or a flag declares the input shape, and edgeopt builds arrays of it: a probe run,
synthetic inputs (up to a few hundred samples without ``--data``), calibration batches. A
declared shape of ``1x1x1000000x1000000`` would ask for terabytes; a smaller one may still fit
in memory and so must be refused from its numbers, not from a failed allocation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from edgeopt.errors import ConfigError

MAX_INPUT_ENV = "EDGEOPT_MAX_INPUT_ELEMENTS"
DEFAULT_MAX_INPUT_ELEMENTS = 1 << 22
"""4,194,304 values per sample (16 MiB as float32): a 3x1024x1024 image fits, and a batch
of 8 (what bench and check feed) stays near 128 MiB."""

HARD_MAX_INPUT_ELEMENTS = 1 << 28
"""268,435,456 values per sample (1 GiB as float32; 3x8192x8192 fits): the most
``EDGEOPT_MAX_INPUT_ELEMENTS`` may allow. Batches of a sample this large already take
gigabytes; a larger setting would let a declared shape ask for terabytes again."""


def max_input_elements() -> int:
    """The limit on one sample's number of values: ``EDGEOPT_MAX_INPUT_ELEMENTS`` when set,
    else ``DEFAULT_MAX_INPUT_ELEMENTS``. ConfigError for a value that is not a positive
    integer."""
    text = os.environ.get(MAX_INPUT_ENV, "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_INPUT_ELEMENTS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= HARD_MAX_INPUT_ELEMENTS:
        raise ConfigError(
            f"{MAX_INPUT_ENV} must be a positive whole number of values per sample, at most "
            f"{HARD_MAX_INPUT_ELEMENTS:,} (1 GiB as float32), got {os.environ[MAX_INPUT_ENV]!r}",
            hint=f"unset it for the default ({DEFAULT_MAX_INPUT_ELEMENTS:,}), or set e.g. "
            f"{MAX_INPUT_ENV}=16777216",
        )
    return value


def check_input_size(shape: Sequence[int], what: str) -> None:
    """ConfigError when one sample of ``shape`` (no batch dimension) holds more values than
    ``max_input_elements()``. ``what`` names where the shape came from (a file, a flag)."""
    n = math.prod(int(d) for d in shape)
    limit = max_input_elements()
    if n <= limit:
        return
    text = "x".join(str(int(d)) for d in shape)
    fix = "fix the shape (--input-shape, or re-export the model)"
    raise ConfigError(
        f"{what} declares an input of {text} = {n:,} values per sample, over the limit of "
        f"{limit:,} ({limit * 4 / 2**20:,.0f} MiB as float32); nothing was allocated",
        hint=f"if the model really takes inputs this large, raise the limit: "
        f"{MAX_INPUT_ENV}={n} edgeopt ...; otherwise {fix}"
        if n <= HARD_MAX_INPUT_ELEMENTS
        else f"edgeopt runs no input over {HARD_MAX_INPUT_ELEMENTS:,} values per sample (the "
        f"most {MAX_INPUT_ENV}={HARD_MAX_INPUT_ELEMENTS} allows): {fix}",
    )
