"""An image folder as the data of a command that only scores a model (``bench``,
``check``): the test split (else val) of a ``FolderSource``, streamed in batches, with the
same face as an npz's ``ScoringData`` (``scored``, ``y``, ``input_shape``, ``max_label``,
``sample``, ``scoring_batches``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edgeopt.data.folder import FolderSource
from edgeopt.data.npz import SCORING_ORDER

SCORING_BATCH = 64
"""Images decoded at a time while scoring: the folder is never held in memory whole."""


@dataclass(frozen=True)
class FolderScoring:
    """``source``'s first split of ``SCORING_ORDER`` (test, else val), scored in batches."""

    source: FolderSource

    @property
    def scored(self) -> str:
        return next(s for s in SCORING_ORDER if s in self.source.splits)

    @property
    def y(self) -> np.ndarray:
        """Every label of the scored split (read from the folder names: nothing decoded)."""
        return self.source.labels(self.scored)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.source.input_shape

    def max_label(self) -> tuple[str, int]:
        return self.source.max_label()

    def sample(self, n: int) -> np.ndarray:
        """The first ``n`` inputs of the scored split (what latency runs feed the model)."""
        return next(self.source.batches(self.scored, batch=n))[0]

    def scoring_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(x, y)`` of the scored split, ``SCORING_BATCH`` images at a time; a file that
        fails to decode is skipped (and listed in ``source.bad_images``) with its label."""
        return self.source.batches(self.scored, batch=SCORING_BATCH)
