"""What a command says about the data it scored on: which split, and how little an accuracy
measured on a small split tells (its 95 % Wilson interval)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click


def small_split_warning(split: str, n: int, accuracy: float | None) -> str | None:
    """The warning for a scored split of ``n`` samples under ``MIN_SPLIT_SAMPLES`` (None at or
    above it), with the interval of ``accuracy`` measured on it (of 0.5, the widest, when
    ``accuracy`` is unknown or not a proportion)."""
    from edgeopt.data import MIN_SPLIT_SAMPLES
    from edgeopt.report.stats import fmt_interval, wilson_interval

    if n >= MIN_SPLIT_SAMPLES:
        return None
    p = accuracy if accuracy is not None and 0.0 <= accuracy <= 1.0 else 0.5
    interval = fmt_interval(wilson_interval(p, n))
    return (
        f"warning: the {split} split has only {_samples(n)} (fewer than {MIN_SPLIT_SAMPLES}): "
        f"an accuracy of {p:.4f} measured on it lies anywhere in {interval} "
        "(95% Wilson interval), too wide to tell models apart; score on a few hundred samples "
        "or more"
    )


def _samples(n: int) -> str:
    return f"{n} sample" + ("" if n == 1 else "s")


def echo_scoring_notes(data: Any, report: Mapping[str, Any]) -> None:
    """For bench and check, on stderr: a note when the train split was scored, and the
    small-split warning for the scored split, with the first model's top-1 accuracy."""
    if data is None:
        return
    if data.scored == "train":
        click.echo(
            "note: scored on the train split (the data file has no test or val split); a model "
            "scores higher on the data it was trained on",
            err=True,
        )
    accuracy = report["results"][0].get("accuracy") if report.get("results") else None
    line = small_split_warning(
        data.scored, len(data.y), float(accuracy["value"]) if accuracy else None
    )
    if line:
        click.echo(line, err=True)


def echo_run_data_notes(config: Any, baseline: Any, run_dir: Path | None = None) -> None:
    """For optimize, before the search, on stderr: for a folder, one line of what set-up
    found (``data.json``); a warning for each split of ``config.data`` under
    ``MIN_SPLIT_SAMPLES`` (validation and test with the baseline's interval)."""
    from edgeopt.data import MIN_SPLIT_SAMPLES, DataKind, sample_counts
    from edgeopt.rundir import RunDir

    if not config.data:
        return
    if config.data.kind is DataKind.NPZ:
        counts = sample_counts(config.data.path)
    else:
        assert run_dir is not None, "a streamed source's facts are in the run directory"
        facts = json.loads(RunDir(run_dir).data_file.read_text())
        click.echo(data_line(facts), err=True)
        counts = dict(facts["counts"])
    n_train = counts.get("train", MIN_SPLIT_SAMPLES)
    if n_train < MIN_SPLIT_SAMPLES:
        click.echo(
            f"warning: the train split has only {_samples(n_train)} (fewer than "
            f"{MIN_SPLIT_SAMPLES}): fine-tuning learns from those alone",
            err=True,
        )
    top1 = config.metric == "accuracy"  # another metric is no proportion: the widest interval
    scored = {"val": baseline.val_accuracy, "test": baseline.test_accuracy}
    for split, value in scored.items():
        if split in counts:
            line = small_split_warning(split, counts[split], value if top1 else None)
            if line:
                click.echo(line, err=True)


def data_line(facts: dict[str, Any]) -> str:
    """One line of an image folder's facts (``data.json``): classes, per-split counts, the
    preprocessing, the images skipped; of a callable's Datasets, the counts alone."""
    from edgeopt.data.preprocess import Preprocess

    counts = ", ".join(f"{s} {n}" for s, n in facts["counts"].items())
    if facts.get("kind") == "callable":
        shape = "x".join(map(str, facts["input_shape"]))
        return f"data: Datasets from the --data callable; {counts}; samples {shape}"
    classes = facts["classes"]
    shown = ", ".join(classes[:10]) + (f", ... ({len(classes)})" if len(classes) > 10 else "")
    recipe = Preprocess.from_dict(facts["recipe"]).describe()
    split = facts.get("split")
    how = (
        f" (split {split['train']:.0%}/{split['val']:.0%}/{split['test']:.0%}"
        f", seed {split['seed']})"
        if split
        else ""
    )
    bad = facts["bad_images"]["count"]
    skipped = (
        f"; {bad} unreadable image(s) skipped: {', '.join(facts['bad_images']['first'])}"
        if bad
        else ""
    )
    return f"data: {len(classes)} classes ({shown}); {counts}{how}; preprocess: {recipe}{skipped}"
