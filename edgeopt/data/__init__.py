"""Data sources: what a run reads its train/val/test splits from. Today one kind, an ``.npz``
of arrays (``edgeopt.data.npz``); its names are re-exported here so callers import
``edgeopt.data``."""

from edgeopt.data.npz import (
    MIN_SPLIT_SAMPLES,
    SCORING_ORDER,
    DataBundle,
    ScoringData,
    load_npz,
    load_scoring_npz,
    sample_counts,
    split_sizes,
    synthetic_inputs,
)

__all__ = [
    "MIN_SPLIT_SAMPLES",
    "SCORING_ORDER",
    "DataBundle",
    "ScoringData",
    "load_npz",
    "load_scoring_npz",
    "sample_counts",
    "split_sizes",
    "synthetic_inputs",
]
