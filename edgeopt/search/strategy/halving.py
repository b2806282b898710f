"""Fine-tuning as a fidelity: stop a fine-tune early when it trails its peers, and continue
the promising ones for longer.

Optuna's pruners are single-objective (``trial.report`` takes one value), and a pruned model
that fine-tunes to a mediocre accuracy may still be the best at its size, so a plain accuracy
comparison across all trials would stop exactly the small models a user came for. edgeopt's
rule is the median stopping rule (Golovin et al., "Google Vizier", KDD 2017), applied
asynchronously at rungs (as ASHA does, Li et al. 2020) and only among *peers*: trials that
pruned a similar share of the model (``prune.ratio`` within ``PEER_RATIO``), so each is
compared with candidates of about its size and latency, never with the unpruned original.

At each rung epoch (1, 2, 4) a fine-tune whose best validation accuracy so far is below the
median of its peers' best at the same epoch ends PRUNED; with fewer than ``MIN_PEERS`` peers
at that rung it goes on. Trials that run their full budget are the promising ones, so long
fine-tunes are spent on them. Every fine-tune records its per-epoch validation accuracy in
the trial (``RUNGS_ATTR``), pruned ones included, so later trials have peers.

**Promotion** is the other half of successive halving: a short fine-tune that turned out
competitive for its latency gets a longer budget, continued from its checkpoint rather than
from scratch. When nothing is queued and every expert seed has run (breadth before depth,
``study.enqueue_next``), the oldest completed trial that earned it is queued again with twice
the fine-tune epochs (at most ``MAX_EPOCHS``); ``promotion`` says whether it did: the trial
is on the current Pareto front (competitive for its latency and size, by the study's own
objectives), its accuracy is more
than ``PROMOTE_GAP`` below the original's (there is something to win back), its fine-tune
ran its whole budget and was still improving at the end (not on a plateau), and its
schedule is continuable (``wsd`` or ``constant``: the longer run then restarts from the
shorter one's checkpoint, ``edgeopt.training.resume``, and costs only the extra epochs).
A promoted trial is exempt from the stopping rule: it was chosen on its results.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

RUNGS: tuple[int, ...] = (1, 2, 4)
PEER_RATIO = 0.1
MIN_PEERS = 3
RUNGS_ATTR = "finetune_val_history"
"""User attr: the fine-tune's validation accuracy after each epoch, in order."""
PROMOTED_ATTR = "promoted_from"
"""User attr: the number of the trial whose longer fine-tune this one is."""
MAX_EPOCHS = 8
PROMOTE_GAP = 0.005
CONTINUABLE = ("wsd", "constant")


def rung_bars(
    peers: Iterable[tuple[Mapping[str, Any], Sequence[float]]], prune_ratio: float
) -> dict[int, float]:
    """The accuracy each rung requires of a fine-tune after pruning ``prune_ratio``.

    ``peers`` are (params, per-epoch validation accuracies) of finished trials; those with a
    ``prune.ratio`` within ``PEER_RATIO`` count. A rung with fewer than ``MIN_PEERS`` peers
    that reached it has no bar.
    """
    group = [
        list(history)
        for params, history in peers
        if history and abs(float(params.get("prune.ratio", 0.0)) - prune_ratio) <= PEER_RATIO + 1e-9
    ]
    bars: dict[int, float] = {}
    for rung in RUNGS:
        best = [max(h[:rung]) for h in group if len(h) >= rung]
        if len(best) >= MIN_PEERS:
            bars[rung] = statistics.median(best)
    return bars


def below_bar(history: Sequence[float], bars: Mapping[int, float]) -> str | None:
    """Why a fine-tune with validation accuracies ``history`` (one per epoch so far) stops
    at this epoch, or None when it goes on."""
    epoch = len(history)
    bar = bars.get(epoch)
    if bar is None or max(history) >= bar:
        return None
    return (
        f"validation accuracy {max(history):.4f} after {epoch} fine-tune epoch(s) is below the "
        f"median of similarly pruned trials at that epoch ({bar:.4f}): median stopping rule"
    )


def promotion(
    params: Mapping[str, Any],
    history: Sequence[float],
    *,
    on_front: bool,
    val_accuracy: float,
    original_accuracy: float,
) -> dict[str, Any] | None:
    """The params of the longer fine-tune a completed trial earns (see the module's
    docstring), or None when it earns none."""
    epochs = int(params.get("finetune.epochs", 0))
    if (
        not on_front
        or float(params.get("prune.ratio", 0.0)) <= 0
        or not 0 < epochs < MAX_EPOCHS
        or params.get("finetune.schedule") not in CONTINUABLE
        or len(history) != epochs  # stopped on a plateau (patience)
        or history[-1] < max(history)  # no longer improving
        or val_accuracy >= original_accuracy - PROMOTE_GAP
    ):
        return None
    return {**params, "finetune.epochs": min(MAX_EPOCHS, 2 * epochs)}
