"""Latency per sequence length for ``edgeopt bench``/``check`` (``--seq-lens``).

Every model is run once at each length in ORT on this host first (a length the model does
not take is a usage error before any timing), then timed at each length on synthetic inputs
of that length, all models interleaved per length as the main timing is; on an estimated
profile the cost model estimates it at each length instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeopt.bench_files import estimable_onnx
from edgeopt.inputs import ModelInputs
from edgeopt.measure.service import estimate_on_profile
from edgeopt.measure.session import ort_feeds, ort_session
from edgeopt.metrics import Metric
from edgeopt.seq_lens import check_seq_lens, first_line, seq_label


def check_files_take(
    paths: Sequence[Path], names: Sequence[str], inputs: ModelInputs, seq_lens: Sequence[int]
) -> None:
    """ConfigError (``edgeopt.seq_lens.check_seq_lens``) when a model does not take every
    length: each ONNX file is run once per length in ORT on this host."""
    for path, name in zip(paths, names, strict=True):
        onnx_path = estimable_onnx(path)
        if onnx_path is None:  # an OpenVINO IR: the timing itself will say
            continue
        sess = ort_session(onnx_path, threads=1)

        def runs(n: int, sess: Any = sess) -> str | None:
            feeds = ort_feeds(sess.get_inputs(), inputs.with_seq_len(n).synthetic(1, 0))
            try:
                sess.run(None, feeds, _quiet())
            except Exception as exc:  # ORT raises its own types; any failure is the answer
                return first_line(exc)
            return None

        check_seq_lens(inputs, seq_lens, runs, what=name)


def _quiet() -> Any:
    """ORT run options that log nothing: a failed probe is reported in the error message,
    not as ORT's own log lines on stderr."""
    import onnxruntime as ort

    opts = ort.RunOptions()
    opts.log_severity_level = 4
    return opts


def measure_by_seq(
    runner: Any,
    paths: Sequence[Path],
    inputs: ModelInputs,
    seq_lens: Sequence[int],
    *,
    threads: int,
    time_budget_s: float,
    precision_hint: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each model's latency at each length (``{length: {latency_p50_ms, latency_p90_ms}}``,
    measured), timed interleaved per length, and the second model's ratio to the first per
    length (empty with one model)."""
    dev = runner.device
    per_model: list[dict[str, Any]] = [{} for _ in paths]
    ratios: dict[str, Any] = {}
    for n in seq_lens:
        at = inputs.with_seq_len(n)
        stats = runner.measure_latency(
            list(paths),
            threads=threads,
            input_shape=at.first_shape,
            sample=at.synthetic(8, seed=0),
            time_budget_s=time_budget_s,
            precision_hint=precision_hint,
        )
        for row, s in zip(per_model, stats, strict=True):
            row[seq_label(n)] = {
                "latency_p50_ms": _mv(s.p50_ms, "measured", cv=s.cv, device=dev),
                "latency_p90_ms": _mv(s.p90_ms, "measured", device=dev),
            }
        if len(stats) > 1:
            b = stats[1]
            ratios[seq_label(n)] = {"ratio": b.ratio_to_first, "ratio_cv": b.ratio_cv}
    return per_model, ratios


def estimate_by_seq(
    paths: Sequence[Path], inputs: ModelInputs, seq_lens: Sequence[int], profile: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``measure_by_seq``'s records from the cost model on ``profile`` (estimated)."""
    per_model: list[dict[str, Any]] = [{} for _ in paths]
    latency: list[dict[str, float]] = [{} for _ in paths]
    for n in seq_lens:
        shapes = {s.name: s.shape for s in inputs.with_seq_len(n).specs}
        for i, p in enumerate(paths):
            src = estimable_onnx(p)
            assert src is not None  # check_runtimes refused the others
            v = estimate_on_profile(src, profile, input_shapes=shapes)[0].values[Metric.LATENCY_MS]
            per_model[i][seq_label(n)] = {"latency_p50_ms": _mv(v.value, v.provenance.value)}
            latency[i][seq_label(n)] = v.value
    ratios = (
        {k: {"ratio": latency[1][k] / latency[0][k]} for k in latency[0]} if len(paths) > 1 else {}
    )
    return per_model, ratios


def _mv(value: float, provenance: str, **extra: Any) -> dict[str, Any]:
    return {"value": value, "provenance": provenance, **extra}
