"""A training budget as a fidelity: stop a training run early when it trails its peers, and
continue the promising ones for longer. The stage whose config holds the budget declares it
(``edgeopt.stages.Fidelity``: fine-tuning's ``finetune.epochs``, peers by ``prune.ratio``);
this module knows no stage by name. Below, "fine-tune" is that stage's run.

Optuna's pruners are single-objective (``trial.report`` takes one value), and a pruned model
that fine-tunes to a mediocre accuracy may still be the best at its size, so a plain accuracy
comparison across all trials would stop exactly the small models a user came for. edgeopt's
rule is the median stopping rule (Golovin et al., "Google Vizier", KDD 2017), applied
asynchronously at rungs (as ASHA does, Li et al. 2020) and only among *peers*: trials that
pruned a similar share of the model (``prune.ratio`` within ``Fidelity.peer_tolerance``, and
the same ``Fidelity.peer_same`` params: as many blocks removed), so each is
compared with candidates of about its size and latency, never with the unpruned original.

At each rung epoch (1, 2, 4) a fine-tune whose best validation accuracy so far is below the
median of its peers' best at the same *fraction of their own schedule* ends PRUNED; with
fewer than ``MIN_PEERS`` peers at that rung it goes on. Epoch ``e`` of an ``E``-epoch
fine-tune is matched with epoch ``floor(e * b / E)`` of a peer's ``b``-epoch one (a peer that
has not reached it, or is matched with no epoch at all, does not count): an 8-epoch draw
judged at epoch 1 against 2-epoch seeds lost by construction, its learning rate still high
where theirs had decayed (ASHA's brackets keep budgets apart for the same reason). Trials
that run their full budget are the promising ones, so long fine-tunes are spent on them.
Every fine-tune records its per-epoch validation accuracy in the trial
(``Fidelity.history_key``), pruned ones included, so later trials have peers.

**Promotion** is the other half of successive halving: a short fine-tune that turned out
competitive for its latency gets a longer budget, continued from its checkpoint rather than
from scratch. When nothing is queued and every expert seed has run (breadth before depth,
``study.enqueue_next``), the oldest completed trial that earned it is queued again with twice
the fine-tune epochs (at most ``Fidelity.max_budget``); ``promotion`` says whether it did: the trial
is on the current Pareto front (competitive for its latency and size, by the study's own
objectives), its accuracy is more
than ``PROMOTE_GAP`` below the original's (there is something to win back), its fine-tune
ran its whole budget and was still improving at the end (not on a plateau), and its
config is continuable (``Fidelity.continue_when``: a ``wsd`` or ``constant`` schedule; the
longer run then restarts from the shorter one's checkpoint, ``edgeopt.training.resume``,
and costs only the extra epochs).
A promoted trial is exempt from the stopping rule: it was chosen on its results.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from edgeopt.stages import STAGES, Fidelity

RUNGS: tuple[int, ...] = (1, 2, 4)
MIN_PEERS = 3
PROMOTED_ATTR = "promoted_from"
"""User attr: the number of the trial whose longer fine-tune this one is."""
PROMOTE_GAP = 0.005


def fidelity_stage() -> tuple[str, Fidelity] | None:
    """The registered stage whose config holds a training budget, with its ``Fidelity``
    (the first in pipeline order); None when no stage has one."""
    for name, stage in STAGES.items():
        if stage.fidelity is not None:
            return name, stage.fidelity
    return None


def history_key() -> str | None:
    """The trial attribute holding the budgeted stage's per-epoch validation accuracy."""
    found = fidelity_stage()
    return found[1].history_key if found else None


def peer_value(params: Mapping[str, Any], fidelity: Fidelity) -> float:
    """The value of ``fidelity.peer_key`` in ``params``; 0 (absent) means no peers: the
    stage that sets it is at its identity (an unpruned model is nobody's peer)."""
    return float(params.get(fidelity.peer_key, 0.0))


def rung_bars(
    peers: Iterable[tuple[Mapping[str, Any], Sequence[float]]],
    peer: float,
    fidelity: Fidelity | None = None,
    budget: int | None = None,
    same: Mapping[str, Any] | None = None,
) -> dict[int, float]:
    """The accuracy each rung requires of a fine-tune whose peer key is ``peer`` (a pruning
    ratio) and whose budget is ``budget`` epochs.

    ``peers`` are (params, per-epoch validation accuracies) of finished trials; those with a
    peer key within ``fidelity.peer_tolerance`` count, each at the same fraction of its own
    budget (see the module's docstring; None: at the same epoch), and only those whose
    ``fidelity.peer_same`` params equal ``same``'s (the candidate's params; absent = 0). A
    rung with fewer than ``MIN_PEERS`` peers that reached it has no bar. ``fidelity``: the
    registered stage's by default.
    """
    found = fidelity_stage()
    fidelity = fidelity or (found[1] if found else None)
    if fidelity is None or found is None:
        return {}
    key = f"{found[0]}.{fidelity.budget}"
    tolerance = fidelity.peer_tolerance + 1e-9
    group = [
        (list(history), int(params.get(key, len(history))))
        for params, history in peers
        if history
        and abs(peer_value(params, fidelity) - peer) <= tolerance
        and all(params.get(k, 0) == (same or {}).get(k, 0) for k in fidelity.peer_same)
    ]
    bars: dict[int, float] = {}
    for rung in RUNGS:
        best = []
        for history, own in group:
            at = rung if budget is None else math.floor(rung * own / budget + 1e-9)
            if 1 <= at <= len(history):
                best.append(max(history[:at]))
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
    found = fidelity_stage()
    if found is None:
        return None
    name, fidelity = found
    budget = f"{name}.{fidelity.budget}"
    epochs = int(params.get(budget, 0))
    continuable = all(
        params.get(f"{name}.{field}") in values for field, values in fidelity.continue_when.items()
    )
    if (
        not on_front
        or peer_value(params, fidelity) <= 0
        or not 0 < epochs < fidelity.max_budget
        or not continuable
        or len(history) != epochs  # stopped on a plateau (patience)
        or history[-1] < max(history)  # no longer improving
        or val_accuracy >= original_accuracy - PROMOTE_GAP
    ):
        return None
    return {**params, budget: min(fidelity.max_budget, 2 * epochs)}
