"""``optimize --seq-lens``: the model checked at set-up, the front timed at each length after.

Set-up runs the original once at each length (torch, or ORT for an ONNX input) before any
run directory work: a model without a sequence axis or a length above its position table is a
usage error naming the limit (``edgeopt.seq_lens.check_seq_lens``). After the search the
final measurement times the original and the front at each length, interleaved per length,
the original first, on synthetic inputs of that length; an estimated profile gets the cost
model's figure at each length instead. The search itself optimizes the main length only.

The figures, per profile name (``final.json`` ``latency_by_seq``)::

    {"provenance": "measured" | "estimated",
     "original": {"<length>": {"p50_ms"[, "p90_ms"]}},
     "trials": {"<number>": {"<length>": {"p50_ms"[, "p90_ms"], "ratio_to_original"}}}}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeopt.bench_seq import check_files_take
from edgeopt.inputs import ModelInputs
from edgeopt.measure.service import estimate_on_profile
from edgeopt.metrics import Metric
from edgeopt.seq_lens import check_seq_lens, first_line, seq_label
from edgeopt.training.batch import tensors

MAX_MODELS_PER_PASS = 16
TIME_BUDGET_S = 2.0


def check_model_takes(loaded: Any, seq_lens: Sequence[int]) -> None:
    """ConfigError (exit 2) when the loaded model (``edgeopt.loading``) does not run at every
    length in ``seq_lens``; nothing to check without lengths."""
    if not seq_lens:
        return
    if loaded.is_onnx:
        check_files_take([Path(loaded.onnx_path)], [str(loaded.source)], loaded.inputs, seq_lens)
        return
    import torch

    module = loaded.module

    def runs(n: int) -> str | None:
        x = tensors(loaded.inputs.with_seq_len(n).synthetic(1, seed=0))
        try:
            with torch.no_grad():
                module(*x) if isinstance(x, tuple) else module(x)
        except Exception as exc:  # any failure at that length is the answer
            return first_line(exc)
        return None

    check_seq_lens(loaded.inputs, seq_lens, runs, what=str(loaded.source))


def time_by_seq(
    runner: Any,
    original: Path,
    files: Sequence[tuple[int, Path]],
    inputs: ModelInputs,
    seq_lens: Sequence[int],
    *,
    threads: int,
    precision_hint: str,
) -> dict[str, Any]:
    """The original and ``files`` (trial number, file) timed at each length: per length, in
    passes of at most ``MAX_MODELS_PER_PASS`` models with the original first in each."""
    out: dict[str, Any] = {"provenance": "measured", "original": {}, "trials": {}}
    for n in seq_lens:
        at, key = inputs.with_seq_len(n), seq_label(n)
        for start in range(0, max(len(files), 1), MAX_MODELS_PER_PASS):
            chunk = files[start : start + MAX_MODELS_PER_PASS]
            first, *stats = runner.measure_latency(
                [original, *(p for _, p in chunk)],
                threads=threads,
                input_shape=at.first_shape,
                sample=at.synthetic(8, seed=0),
                min_rounds=5,
                time_budget_s=TIME_BUDGET_S,
                precision_hint=precision_hint,
            )
            out["original"].setdefault(key, {"p50_ms": first.p50_ms, "p90_ms": first.p90_ms})
            for (number, _), s in zip(chunk, stats, strict=True):
                out["trials"].setdefault(str(number), {})[key] = {
                    "p50_ms": s.p50_ms,
                    "p90_ms": s.p90_ms,
                    "ratio_to_original": s.ratio_to_first,
                }
    return out


def estimate_by_seq(
    profile: Any,
    original: Path,
    files: Sequence[tuple[int, Path]],
    inputs: ModelInputs,
    seq_lens: Sequence[int],
) -> dict[str, Any]:
    """``time_by_seq``'s record from the cost model on ``profile`` (estimated)."""
    out: dict[str, Any] = {"provenance": "estimated", "original": {}, "trials": {}}
    for n in seq_lens:
        shapes = {s.name: s.shape for s in inputs.with_seq_len(n).specs}
        key = seq_label(n)

        def ms(path: Path, shapes: dict[str, Any] = shapes) -> float:
            figures = estimate_on_profile(path, profile, input_shapes=shapes)[0]
            return float(figures.values[Metric.LATENCY_MS].value)

        base = ms(original)
        out["original"][key] = {"p50_ms": base}
        for number, path in files:
            v = ms(path)
            out["trials"].setdefault(str(number), {})[key] = {
                "p50_ms": v,
                "ratio_to_original": v / base if base > 0 else None,
            }
    return out
