"""Data sources: what a run reads its train/val/test splits from. ``edgeopt.data.source``:
``DataSpec`` (what a run records) and the ``DataSource`` interface; today one kind, an
``.npz`` of arrays (``edgeopt.data.npz``). Names are re-exported here so callers import
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
from edgeopt.data.source import (
    EVAL_SAMPLES,
    DataKind,
    DataSource,
    DataSpec,
    NpzSource,
    add_to_salt,
    eval_batches,
    eval_count,
    fingerprint_of,
    first_inputs,
    in_model_order,
    is_streamed,
    open_source,
    scored_split,
)

__all__ = [
    "EVAL_SAMPLES",
    "eval_batches",
    "eval_count",
    "first_inputs",
    "is_streamed",
    "scored_split",
    "DataKind",
    "DataSource",
    "DataSpec",
    "NpzSource",
    "add_to_salt",
    "fingerprint_of",
    "in_model_order",
    "open_source",
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
