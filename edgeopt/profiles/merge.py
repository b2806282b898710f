"""Several target profiles at once: what a candidate must satisfy to run on all of them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from edgeopt.errors import ConfigError
from edgeopt.profiles.runtime_spec import RUNTIMES
from edgeopt.profiles.schema import HardwareProfile


def merge_profiles(profiles: Sequence[HardwareProfile]) -> HardwareProfile:
    """One profile for *suggesting* candidates that every target in ``profiles`` can run.

    The first profile's numbers are kept; quantization modes are intersected (int8-only if any
    target is), contrib ops only when every target's runtime runs them
    (``runs_contrib_ops``), ORT's quantizer options only when some target ships its
    quantization (``quantizes_with_ort``), the channel multiple is the least common
    multiple. The int8 flavour (activation and weight types) is the first target's: a
    candidate is one quantized file, so a search has one flavour, and a target of another
    flavour measures or estimates that file as it is (its accelerator leaves the Q/DQ to its
    CPU: see :func:`flavour_note`). Measurement and estimation still use each real profile.
    Raises ConfigError for no profiles or no common mode.
    """
    if not profiles:
        raise ConfigError("no target given", hint="pass --target, e.g. --target mobile")
    if len(profiles) == 1:
        return profiles[0]
    first = profiles[0]
    modes = [
        m for m in first.quantization.modes if all(m in p.quantization.modes for p in profiles)
    ]
    if not modes:
        names = ", ".join(p.name for p in profiles)
        raise ConfigError(
            f"targets {names} share no model format (quantization modes)",
            hint="optimize for these targets in separate runs",
        )
    quant = replace(
        first.quantization,
        modes=tuple(modes),
        int8_only=any(p.quantization.int8_only for p in profiles),
        per_channel=all(p.quantization.per_channel for p in profiles),
        contrib_ops=all(runs_contrib_ops(p) for p in profiles),
        ort_quantized=any(quantizes_with_ort(p) for p in profiles),
    )
    multiple = math.lcm(*(p.pruning.channel_multiple for p in profiles))
    return replace(
        first,
        name="+".join(p.name for p in profiles),
        quantization=quant,
        pruning=replace(first.pruning, channel_multiple=multiple),
    )


def runs_contrib_ops(profile: HardwareProfile) -> bool:
    """Whether a candidate for ``profile`` may hold ORT's ``com.microsoft`` contrib ops:
    its runtime runs them and, for a merged profile, every target's does."""
    return RUNTIMES[profile.runtime_name].contrib_ops and profile.quantization.contrib_ops


def flavour_note(profiles: Sequence[HardwareProfile]) -> str | None:
    """A warning when the targets want different int8 flavours (None when they agree): which
    one the search quantizes with (the first target's) and which targets get another."""
    if not profiles:
        return None
    want = _flavour(profiles[0])
    others = [f"{p.name} ({_flavour(p)})" for p in profiles[1:] if _flavour(p) != want]
    if not others:
        return None
    return (
        f"int8 candidates are quantized for {profiles[0].name} ({want}), the first --target; "
        f"{', '.join(others)} want another flavour, so their int8 estimates run the Q/DQ off "
        "their accelerator (optimize for them in a separate run, or name the one that matters "
        "first)"
    )


def _flavour(p: HardwareProfile) -> str:
    q = p.quantization
    sym = " symmetric" if q.activation_symmetric else ""
    return f"{q.activation_type}{sym} activations, {q.weight_type} weights"


def quantizes_with_ort(profile: HardwareProfile) -> bool:
    """Whether some target of ``profile`` ships the ONNX candidate's ORT quantization, so the
    search draws ORT's quantizer options (calibration method, per-channel, first/last and
    sensitive nodes in float): not when every target's runtime quantizes with its own tool
    (LiteRT's ai-edge-quantizer: min-max calibration, the profile's granularity, every op
    int8), where those draws would change the ONNX file only."""
    merged = profile.quantization.ort_quantized
    return not RUNTIMES[profile.runtime_name].own_quantizer if merged is None else merged
