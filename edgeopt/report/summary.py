"""What every renderer shows, derived once from a run's records.

``summarize(records)`` turns a run's ``RunRecord`` (or the dict
``edgeopt.search.run.collect.load_run`` gives) into a ``Summary``: the objectives with units and
provenance, the front, the baselines, the recommended pick with its reason, failures and
notes. Renderers only format a Summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from edgeopt.data_facts import FolderFacts, RecipeFacts
from edgeopt.metrics import DEFAULT_TASK_METRIC, task_metric_noun
from edgeopt.records import RunRecord, TrialState, as_run
from edgeopt.report.final_latency import (
    pass_notes,
)
from edgeopt.report.machines import machine_note

# per-target numbers shown in tables, in ``Metric`` order (latency, peak memory, energy)
from edgeopt.report.model import Summary, objective_infos
from edgeopt.report.pick import choose


def summarize(records: RunRecord | Mapping[str, Any]) -> Summary:
    """Derive the shared view of a run from its records (see module doc): a ``RunRecord``,
    or the dict ``load_run`` gives (read into one here)."""
    records = as_run(records)
    kind = records.accuracy_kind
    objectives = objective_infos(records)
    trials = list(records.trials)
    complete = tuple(t for t in trials if t.state is TrialState.COMPLETE)
    front = tuple(t for t in complete if t.on_front)
    original = next((t for t in complete if t.baseline == "unchanged"), None)
    int8 = next((t for t in complete if t.baseline == "int8"), None)
    s = Summary(
        records=records,
        objectives=tuple(objectives),
        targets=records.targets,
        complete=complete,
        front=front,
        failed=tuple(t for t in trials if t.state is TrialState.FAIL),
        stopped=tuple(t for t in trials if t.state is TrialState.STOPPED),
        original=original,
        int8=int8,
        pick=None,
        no_pick_reason=None,
        accuracy_kind=kind,
    )

    pick, why_not = choose(s)
    notes = list(_notes(s))
    return replace(s, pick=pick, no_pick_reason=why_not, notes=tuple(notes))


def _notes(s: Summary) -> list[str]:
    notes = []
    if s.accuracy_kind == "fidelity":
        notes.append(
            "No task data was given: 'accuracy' here is fidelity, the top-1 agreement with the "
            "original model on synthetic inputs, not task accuracy."
        )
    elif s.metric != DEFAULT_TASK_METRIC:
        notes.append(
            f"Optimized metric: {task_metric_noun(s.metric)} (--metric {s.metric}), measured on "
            "this host: the accuracy objective, the accuracy budgets and the val/test columns "
            f"are {task_metric_noun(s.metric)}, not top-1 accuracy (the task metrics table has "
            "all five). Fine-tuning still keeps its best epoch by top-1 accuracy."
        )
    data = s.records.folder_facts
    if data is not None:
        notes.append(_data_note(data))
    split = s.records.test_split
    if split == "val":
        notes.append(
            "The data has no test split: 'test' numbers are on the validation split the "
            "search selected on, so they are optimistic."
        )
    estimated = sorted({o.target for o in s.objectives if o.provenance == "estimated" and o.target})
    if estimated:
        notes.append(
            "Numbers on " + ", ".join(estimated) + " are estimated from the hardware profile "
            "by the cost model, not measured on the device."
        )
    for off in s.records.disabled_stages:
        notes.append(f"{off['title']} was disabled for this model: {off['reason']}")
    for rest in s.records.rested_stages:
        # failed_in: the streak failed in a step after the stage (a target's conversion)
        where = "failed in it"
        if "failed_in" in rest:
            where = f"with it failed in {rest['failed_in']}"
        notes.append(
            f"{rest['title']} was off for trials {int(rest['after']) + 1}-{rest['until']} "
            f"(rest {rest['times']}): {rest['streak']} trials in a row {where} "
            f"({rest['reason']})."
        )
    if s.records.prune_unsupported:  # records of schema 3 and older
        notes.append(f"Pruning was disabled for this model: {s.records.prune_unsupported}")
    hidden = hidden_note(s.records)
    if hidden:
        notes.append(hidden)

    machines = machine_note(s.records)
    if machines:
        notes.append(machines)
    baselines = [b for b in (s.original, s.int8) if b is not None and b not in s.front]
    notes += pass_notes(s.records, [*s.front, *baselines])
    return notes


def hidden_note(records: RunRecord) -> str | None:
    """How many Pareto-optimal candidates were hidden for hopeless accuracy, if any."""
    hidden, bar = records.hidden_hopeless, records.hopeless_below
    if not hidden or bar is None:
        return None
    original = records.original_val_accuracy
    under = f", more than {100 * (original - bar):.0f} pt under the original" if original else ""
    return (
        f"{len(hidden)} Pareto-optimal candidate(s) (trial {', '.join(map(str, hidden))}) are "
        f"hidden from the front and the pick: validation accuracy below {bar:.4f}{under}, "
        "with no accuracy budget set (set --max-accuracy-drop to choose the bar); they stay "
        "in the trial table."
    )


def _data_note(data: FolderFacts) -> str:
    """An image folder's classes, split counts, preprocessing and scoring subset."""
    counts = ", ".join(f"{k} {v}" for k, v in data.counts.items())
    cap = data.eval_samples
    scored = f"; val/test scored on seeded subsets of at most {cap} images" if cap else ""
    recipe = f" {recipe_note(data.recipe, data.augment)}" if data.recipe is not None else ""
    return (
        f"Data: image folder {data.path}, {len(data.classes)} classes "
        f"({', '.join(data.classes)}); {counts}{scored}.{recipe}"
    )


AUGMENT_WORDS = {
    "crop,flip": "random resized crop and horizontal flip, then noise",
    "crop": "random resized crop, then noise",
    "flip": "horizontal flip, then noise",
    "none": "noise only",
}
"""How the report names an image folder's training augmentation (``data.json``'s ``augment``)."""


def recipe_note(r: RecipeFacts, augment: str | None = None) -> str:
    """The preprocessing recipe as the report states it, with where the app finds it: every
    candidate's model carries it; and the training augmentation ``augment``, which it does
    not (None: a run set up before the setting, whose fine-tunes shifted and added noise)."""
    crop = "x".join(str(c) for c in r.crop)
    named = f"{r.named} defaults, " if r.named else ""
    resize = f"resize {r.resize}, " if r.resize is not None else "no resize, "
    recipe = (
        f"{resize}center crop {crop}, {r.channels}, scale {r.scale:.6g}, {named}"
        f"mean {_numbers(r.mean)}, std {_numbers(r.std)}, {r.interpolation} interpolation"
    )
    trained = AUGMENT_WORDS.get(augment or "", "random shifts, noise")
    return (
        f"Preprocessing: {recipe}. Every candidate's model.onnx carries it (ONNX metadata "
        "edgeopt.preprocess, and model.preprocess.json beside it), and edgeopt export writes "
        "it beside the exported file, so the app repeats exactly what was scored. Only "
        f"fine-tuning augments its training batches ({trained}); scoring never does."
    )


def _numbers(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)
