"""Task metrics of a classifier from its outputs, in plain numpy: top-1 accuracy, macro F1,
macro precision, macro recall and macro one-vs-rest ROC AUC (``--metric``).

They equal scikit-learn's (``f1_score``/``precision_score``/``recall_score`` with
``average="macro", zero_division=0``; ``roc_auc_score(multi_class="ovr", average="macro")``
on the softmax of the logits) wherever those are defined; scikit-learn is a test dependency
only. Which classes a macro average runs over:

- F1, precision, recall: the classes present in the labels or in the predictions (as
  scikit-learn does without ``labels=``). A class predicted but never true scores recall 0
  (0/0) and precision 0; a class true but never predicted scores precision 0 (0/0). Classes
  neither true nor predicted on the split are left out, so a split that happens to lack a
  class does not score 0 for it.
- AUC: the classes present in the labels, each one against the rest on its softmax score
  (ties count one half, as ``roc_auc_score`` counts them). A class absent from the labels has
  no one-vs-rest AUC and is left out (scikit-learn refuses such input); fewer than two
  classes present leaves AUC undefined (``ValueError``; ``check_defined`` says so up front).
  A two-output model is scored as scikit-learn scores a binary task: on class 1's score.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np

from edgeopt.errors import ConfigError
from edgeopt.metrics import TASK_METRICS

BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_SEED = 0


class UndefinedMetric(ValueError):
    """A metric that has no value on these labels (AUC with fewer than two classes)."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (the scores AUC ranks)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Top-1 accuracy: the share of ``pred`` equal to ``y``."""
    return float(np.mean(np.asarray(pred) == np.asarray(y)))


def macro_prf(y: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    """``(precision, recall, f1)``, each the unweighted mean over the classes present in ``y``
    or ``pred``; 0/0 counts as 0 (see the module doc)."""
    y, pred = np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    labels = np.union1d(y, pred)
    n = int(labels.max()) + 1
    tp = np.bincount(y[y == pred], minlength=n)[labels].astype(np.float64)
    true = np.bincount(y, minlength=n)[labels].astype(np.float64)
    predicted = np.bincount(pred, minlength=n)[labels].astype(np.float64)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, true)
    f1 = _ratio(2 * tp, true + predicted)  # = 2PR/(P+R), 0 where tp = 0
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``; tied values share the mean of their ranks."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(xs)]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]
    return ranks


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for the boolean ``positive`` labels (Mann-Whitney U with tied
    scores counted one half). ValueError when one side is empty."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs positive and negative samples")
    r = average_ranks(score)
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc_ovr(y: np.ndarray, scores: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC of ``scores`` (N x classes, e.g. ``softmax(logits)``) over
    the classes present in ``y``. ValueError when fewer than two are present."""
    y = np.asarray(y, dtype=np.int64)
    present = np.unique(y)
    if len(present) < 2:
        raise UndefinedMetric(
            f"ROC AUC needs at least two classes in the labels, got {len(present)}"
        )
    if scores.shape[1] == 2:  # binary: the positive class's score (its one-vs-rest twin
        return binary_auc(y == 1, scores[:, 1])  # is the same AUC up to float rounding)
    return float(np.mean([binary_auc(y == k, scores[:, k]) for k in present]))


class Outputs:
    """A classifier's ``logits`` (N x classes) on labels ``y``, with what the formulas share:
    top-1 predictions, softmax scores and macro precision/recall/F1, each computed once."""

    def __init__(self, logits: np.ndarray, y: np.ndarray) -> None:
        self.logits, self.y = np.asarray(logits), np.asarray(y)

    @cached_property
    def pred(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @cached_property
    def scores(self) -> np.ndarray:
        return softmax(self.logits)

    @cached_property
    def prf(self) -> tuple[float, float, float]:
        return macro_prf(self.y, self.pred)

    def take(self, idx: np.ndarray) -> Outputs:
        """The samples at ``idx`` (a bootstrap resample), reusing the predictions and the
        scores computed so far (argmax and softmax work row by row, so their rows are the
        resample's own)."""
        out = Outputs(self.logits[idx], self.y[idx])
        out.__dict__["pred"] = self.pred[idx]
        if "scores" in self.__dict__:
            out.__dict__["scores"] = self.__dict__["scores"][idx]
        return out


FORMULAS: dict[str, Callable[[Outputs], float]] = {
    "accuracy": lambda o: accuracy(o.y, o.pred),
    "f1": lambda o: o.prf[2],
    "precision": lambda o: o.prf[0],
    "recall": lambda o: o.prf[1],
    "auc": lambda o: roc_auc_ovr(o.y, o.scores),
}
"""``--metric`` name -> its formula; the names and their order are
``edgeopt.metrics.TASK_METRICS``' (tests/test_tables.py checks that both list the same)."""


def task_metrics(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """All of ``TASK_METRICS`` for a model's ``logits`` (N x classes) on labels ``y``; AUC is
    left out when undefined (fewer than two classes in ``y``)."""
    outputs = Outputs(logits, y)
    out: dict[str, float] = {}
    for name, formula in FORMULAS.items():
        try:
            out[name] = formula(outputs)
        except UndefinedMetric:
            continue
    return out


def task_metric(name: str, logits: np.ndarray, y: np.ndarray) -> float:
    """One of ``TASK_METRICS`` (see ``task_metrics``). ValueError for an unknown name or an
    undefined AUC."""
    return _formula(name)(Outputs(logits, y))


def _formula(name: str) -> Callable[[Outputs], float]:
    if name not in TASK_METRICS or name not in FORMULAS:
        raise ValueError(f"unknown task metric {name!r}")
    return FORMULAS[name]


def bootstrap_interval(
    name: str,
    logits: np.ndarray,
    y: np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval (``level``) of metric ``name`` over the split's samples,
    resampled with replacement ``resamples`` times (seeded, so a report is reproducible).
    Resamples on which the metric is undefined (AUC with one class) are skipped; None when
    none is left."""
    formula = _formula(name)
    outputs = Outputs(logits, y)
    if name == "auc":
        _ = outputs.scores  # once here, not once per resample
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        try:
            values.append(formula(outputs.take(rng.integers(0, len(y), len(y)))))
        except ValueError:  # undefined on this resample
            continue
    if not values:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def check_defined(name: str, y: np.ndarray, where: str) -> None:
    """ConfigError (before any work) when metric ``name`` cannot be computed on labels ``y``
    of ``where`` (a split of a data file): AUC needs two classes."""
    if name == "auc" and len(np.unique(y)) < 2:
        raise ConfigError(
            f"--metric auc is undefined on {where}: its labels hold a single class",
            hint=f"use --metric {'|'.join(m for m in TASK_METRICS if m != name)}, or a split "
            "with two or more classes",
        )


def task_metric_entries(logits: np.ndarray, y: np.ndarray) -> dict[str, dict[str, Any]]:
    """Every task metric of ``logits`` on ``y`` as ``{"value", "provenance"[, "low",
    "high"]}``: ``low``/``high`` are the 95 % percentile bootstrap interval, given for every
    metric but top-1 accuracy (whose Wilson interval a report computes from the count)."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in task_metrics(logits, y).items():
        entry: dict[str, Any] = {"value": value, "provenance": "measured"}
        if name != "accuracy":
            ci = bootstrap_interval(name, logits, y)
            if ci is not None:
                entry["low"], entry["high"] = ci
        out[name] = entry
    return out
