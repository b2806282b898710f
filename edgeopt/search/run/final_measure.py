"""Final host latency of the front: one interleaved pass after the search.

A search measures each candidate once, interleaved with the original, at whatever moment
its trial ran; when other jobs loaded the machine meanwhile, contention that hurts a big
model more than a small one skews that ratio (a "14.1x" that a quiet machine measures as
8.2x). So after the search the front members, the baselines and the original model are timed
again, all together in one interleaved pass on this host, with the host's load recorded
(``edgeopt.measure.machine_load``). Reports show these final figures beside the in-search ones and
say when the two disagree; the in-search figures are kept unchanged.

Only profiles measured on this host are re-measured (``LocalRunner``); a remote device's
profile gets a ``skipped`` note (its in-search figures stand), an estimated profile nothing.

The figures, per profile name (``final.json`` ``final_latency``, and the study)::

    {"device": "local://HOST", "threads": 1, "measured_at": ISO time, "passes": 1,
     "rounds": 5, "load": {...MachineLoad...},
     "original": {"p50_ms", "p90_ms"},
     "trials": {"<number>": {"p50_ms", "p90_ms", "ratio_to_original", "speedup"}},
     "missing": {"<number>": reason}}     # a trial whose file could not be read
    {"skipped": reason}                   # not re-measured (remote device, Ctrl-C, failure)
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.errors import ConfigError, EdgeoptError
from edgeopt.fileio import file_lock
from edgeopt.measure.runners import LocalRunner, runner_for
from edgeopt.measure.service import precision_hint
from edgeopt.search.run.seq_measure import estimate_by_seq, time_by_seq
from edgeopt.search.study.artifacts import trial_artifacts
from edgeopt.search.study.shared import record_final_latency, record_latency_by_seq
from edgeopt.search.trial.runtimes import original_files, recorded, target_paths

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from edgeopt.measure.runtime import LatencyStats
    from edgeopt.profiles import HardwareProfile
    from edgeopt.rundir import RunDir
    from edgeopt.search.study.source import OpenRun

log = logging.getLogger(__name__)

MAX_MODELS_PER_PASS = 16
"""Candidates timed in one process beside the original (more: further passes, each with
the original again, so every ratio is still taken within one interleaved pass)."""
TIME_BUDGET_S = 3.0
MAX_ROUNDS = 20
TARGET_ROUND_MS = 20.0
INTERRUPTED = (
    "interrupted (Ctrl-C or SIGTERM) before the final re-measure finished; in-search figures stand"
)


def final_latency(
    opened: OpenRun,
    run: RunDir,
    trials: Sequence[FrozenTrial],
    profiles: Sequence[HardwareProfile],
    *,
    sample: np.ndarray | None,
    scratch: Path,
) -> dict[str, dict[str, Any]]:
    """Re-measure ``trials`` (the front and the baselines) and the original together on each
    of the run's ``profiles`` measured on this host; figures per profile name (see the module
    doc).

    Never raises for a measurement that fails or is interrupted (Ctrl-C): that profile gets
    ``{"skipped": reason}`` and the caller keeps everything else it computed.
    """
    out: dict[str, dict[str, Any]] = {}
    if not trials:  # nothing completed: no speedup to check
        return out
    for profile in profiles:
        if not profile.measured:  # a cost model has no load to drift with; --seq-lens: figures
            _estimate_by_seq(opened, run, profile, trials, out, scratch)
            continue
        runner = runner_for(profile)
        if not isinstance(runner, LocalRunner):
            out[profile.name] = {
                "skipped": f"measured on {runner.device}, not this host: the final re-measure "
                "runs on this host only; in-search figures stand",
            }
            continue
        try:
            out[profile.name] = _measure_profile(
                opened, run, profile, trials, sample=sample, scratch=scratch
            )
        except KeyboardInterrupt:
            out[profile.name] = {"skipped": INTERRUPTED}
            log.warning("final re-measure on %s interrupted", profile.name)
            break
        except EdgeoptError as exc:
            out[profile.name] = {"skipped": f"final re-measure failed: {exc.message}"}
            log.warning("final re-measure on %s failed: %s", profile.name, exc.message)
    return out


def _measure_profile(
    opened: OpenRun,
    run: RunDir,
    profile: HardwareProfile,
    trials: Sequence[FrozenTrial],
    *,
    sample: np.ndarray | None,
    scratch: Path,
) -> dict[str, Any]:
    files: list[tuple[int, Path]] = []
    missing: dict[str, str] = {}
    # a target whose runtime loads a converted file times each trial's file against the
    # original's, in that runtime
    original = original_files(run, [profile]).get(profile.name)
    for t in trials:
        try:
            if original is None:
                files.append((t.number, opened.trial_onnx(_file_record(t), scratch)))
            else:
                files.append((t.number, _target_file(run, t, profile.name)))
        except ConfigError as exc:  # built on another machine without an artifact store
            missing[str(t.number)] = exc.message
    runner = runner_for(profile)
    entry: dict[str, Any] = {
        "device": runner.device,
        "threads": profile.threads,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "passes": 0,
        "trials": {},
    }
    reference = original or run.baseline_onnx  # the loop below rebinds ``original``
    loads: list[dict[str, Any]] = []
    for start in range(0, max(len(files), 1), MAX_MODELS_PER_PASS):
        chunk = files[start : start + MAX_MODELS_PER_PASS]
        # the original first: every ratio is against it, within this pass
        paths = [original or run.baseline_onnx, *(p for _, p in chunk)]
        with file_lock(run.lock_path("measure")):  # no other worker here times meanwhile
            original, *stats = runner.measure_latency(
                paths,
                threads=profile.threads,
                input_shape=opened.baseline.input_shape,
                sample=sample,
                min_rounds=5,
                max_rounds=MAX_ROUNDS,
                time_budget_s=TIME_BUDGET_S,
                target_round_ms=TARGET_ROUND_MS,
                precision_hint=precision_hint(profile),
            )
        entry["passes"] += 1
        entry.setdefault("original", _figure(original))
        entry.setdefault("rounds", original.rounds)
        if original.load is not None:
            loads.append(original.load)
        for (number, _), s in zip(chunk, stats, strict=True):
            entry["trials"][str(number)] = {
                **_figure(s),
                "ratio_to_original": s.ratio_to_first,
                "speedup": 1.0 / s.ratio_to_first if s.ratio_to_first > 0 else None,
            }
    inputs, seq_lens = opened.config.model.inputs, opened.config.seq_lens
    if seq_lens and inputs is not None:  # after the main length: per length, original first
        try:
            with file_lock(run.lock_path("measure")):
                entry["by_seq"] = time_by_seq(
                    runner,
                    reference,
                    files,
                    inputs,
                    seq_lens,
                    threads=profile.threads,
                    precision_hint=precision_hint(profile),
                )
        except EdgeoptError as exc:  # the main length's figures stand
            entry["by_seq"] = {"skipped": f"timing at --seq-lens failed: {exc.message}"}
    if loads:  # the busiest pass speaks for all
        entry["load"] = max(loads, key=lambda d: float(d.get("other_cpus") or 0.0))
    if missing:
        entry["missing"] = missing
    return entry


def _estimate_by_seq(
    opened: OpenRun,
    run: RunDir,
    profile: HardwareProfile,
    trials: Sequence[FrozenTrial],
    out: dict[str, dict[str, Any]],
    scratch: Path,
) -> None:
    """``out[profile]`` gets ``{"by_seq": ...}`` from the cost model when the run names
    ``--seq-lens`` (``add_final_latency`` moves it to ``latency_by_seq``)."""
    inputs, seq_lens = opened.config.model.inputs, opened.config.seq_lens
    if not seq_lens or inputs is None:
        return
    files = []
    for t in trials:
        try:
            files.append((t.number, opened.trial_onnx(_file_record(t), scratch)))
        except ConfigError:  # built on another machine without an artifact store
            continue
    by_seq = estimate_by_seq(profile, run.baseline_onnx, files, inputs, seq_lens)
    out[profile.name] = {"by_seq": by_seq}


def _target_file(run: RunDir, t: FrozenTrial, target: str) -> Path:
    """Trial ``t``'s file for ``target``'s runtime; ConfigError when it has none here."""
    path = target_paths(run, recorded(t.user_attrs)).get(target)
    if path is None or not path.is_file():
        raise ConfigError(f"trial {t.number} has no file for {target} on this machine")
    return path


def _figure(s: LatencyStats) -> dict[str, float]:
    return {"p50_ms": s.p50_ms, "p90_ms": s.p90_ms}


def _file_record(t: FrozenTrial) -> Mapping[str, Any]:
    """What ``OpenRun.trial_onnx`` needs to find a trial's ONNX file."""
    return {
        "number": t.number,
        "onnx": t.user_attrs.get("onnx"),
        "onnx_sha256": t.user_attrs.get("onnx_sha256"),
        "artifacts": trial_artifacts(t.system_attrs),
        "machine": t.user_attrs.get("machine"),
    }


def add_final_latency(
    opened: OpenRun,
    run: RunDir,
    final: Mapping[str, Any],
    trials: Sequence[FrozenTrial],
    profiles: Sequence[HardwareProfile],
    *,
    sample: np.ndarray | None,
) -> dict[str, Any]:
    """``final`` with ``final_latency`` from a pass run now (:func:`final_latency`), written
    to ``final.json`` and recorded in the study so that every machine's report has it."""
    from edgeopt.search.study.source import scratch_dir

    with scratch_dir() as tmp:
        figures = final_latency(opened, run, trials, profiles, sample=sample, scratch=Path(tmp))
    out = dict(final)
    by_seq = {name: f.pop("by_seq") for name, f in figures.items() if "by_seq" in f}
    figures = {name: f for name, f in figures.items() if f}  # an estimated profile's: moved
    if by_seq:  # in the study too: every machine's report has them
        out["latency_by_seq"] = by_seq
        run.write_final(out)
        record_latency_by_seq(opened.study, by_seq)
    if not figures:  # no profile measured on this host
        return out
    out["final_latency"] = {**out.get("final_latency", {}), **figures}
    run.write_final(out)
    record_final_latency(opened.study, figures)
    return out
