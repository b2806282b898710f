"""Which runtime's file ``edgeopt export`` writes (``--format``), and the files that makes:
``onnx`` the trial's ONNX file as today; ``ort`` and ``openvino`` that file converted on the
spot (``edgeopt.export.convert``), written beside the ONNX file it came from (a ``.ort`` is
estimated from it, and the sidecar's digest names it), or, for a run whose target runs that
runtime, the very file the search converted, timed and scored (``stored_artifact``). ``tflite``
only copies the file the search made for a LiteRT target (LiteRT converts the torch model,
which a run does not keep): refused for a trial that recorded none (``require_stored``)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.export.convert import Artifact, artifact_paths
from edgeopt.profiles import HardwareProfile
from edgeopt.profiles.runtime_spec import FORMATS, RUNTIMES, Runtime, runtime_of_file
from edgeopt.rundir import RunDir
from edgeopt.search.study.artifacts import sha256_of
from edgeopt.search.trial.runtimes import recorded

FORMAT_CHOICES: tuple[str, ...] = (
    "auto",
    *(k.format for k in RUNTIMES.values() if k.convertible),
)
"""``--format`` values: ``auto`` (the run's first target's format) and every format edgeopt
converts to here."""


def export_runtime(
    fmt: str | None, out: Path, profiles: Sequence[HardwareProfile] | None
) -> Runtime:
    """The runtime whose file ``export`` writes at ``out``: ``fmt`` (``auto``: the first of
    ``profiles``' runtime), or without ``fmt`` the one ``out``'s suffix names. ConfigError
    for a format edgeopt cannot write here or an ``out`` whose suffix is another format's."""
    if fmt is None:
        runtime = runtime_of_file(out)
        if runtime is None or not RUNTIMES[runtime].convertible:
            raise ConfigError(
                f"--out {out}: name an .onnx, .ort, .xml or .tflite file",
                hint="e.g. --out release/model.onnx, or give --format",
            )
        return runtime
    if fmt == "auto":
        assert profiles, "--format auto needs the run's targets"
        runtime = profiles[0].runtime_name
    else:
        runtime = FORMATS[fmt]
    kind = RUNTIMES[runtime]
    if not kind.convertible:
        raise ConfigError(
            f"--format {fmt}: the run's target {profiles[0].name if profiles else ''} runs "
            f"{kind.label}, which edgeopt cannot convert to yet",
            hint="export --format onnx (or ort, openvino)",
        )
    if out.suffix.lower() != kind.suffix:
        how = f"--format {fmt}" + (
            f" ({kind.format}, for {profiles[0].name})" if fmt == "auto" and profiles else ""
        )
        raise ConfigError(
            f"{how} writes a {kind.suffix} file, but --out {out} names a "
            f"{out.suffix or 'file without suffix'}",
            hint=f"--out {out.with_suffix(kind.suffix)}",
        )
    return runtime


def require_stored(
    run: RunDir | None,
    info: Mapping[str, Any],
    runtime: Runtime,
    profile: HardwareProfile | None,
    number: int,
) -> None:
    """ConfigError when ``runtime``'s files are converted from the trial's torch model
    (LiteRT), which a run does not keep, and trial ``number`` has no such file the search
    made, here with the digests the study recorded."""
    kind = RUNTIMES[runtime]
    if not kind.needs_torch or _stored_sources(run, info, runtime, profile) is not None:
        return
    why = "recorded none" if profile else f"searched no {kind.label} target"
    raise ConfigError(
        f"--format {kind.format}: trial {number} has no {kind.suffix} file from the search "
        f"here (its run {why}; {kind.label} files are converted from the torch model, which "
        "a run does not keep)",
        hint="export --format onnx (or ort, openvino), or optimize with a LiteRT --target "
        "(litert-host, edgetpu, mcu)",
    )


def export_files(runtime: Runtime, out: Path) -> list[Path]:
    """The model files ``export`` writes for ``out`` in ``runtime``'s format: the ONNX file,
    then (not for ``ort``) the runtime's files."""
    if runtime == Runtime.ORT:
        return [out]
    return [out.with_suffix(".onnx"), *artifact_paths(runtime, out)]


def convert_profile(
    runtime: Runtime, profiles: Sequence[HardwareProfile]
) -> HardwareProfile | None:
    """The run's first target that runs ``runtime`` (its device decides how to convert, e.g.
    ``arm`` for a phone's ``.ort``), else None."""
    return next((p for p in profiles if p.runtime_name == runtime), None)


def stored_artifact(
    run: RunDir | None,
    info: Mapping[str, Any],
    runtime: Runtime,
    profile: HardwareProfile | None,
    out: Path,
) -> Artifact | None:
    """The file the search converted for ``profile`` (a trial's ``info``), copied to ``out``
    in ``runtime``'s format, when it is in ``run`` with the digests the study recorded; None
    otherwise (then ``export`` converts the ONNX file itself)."""
    sources = _stored_sources(run, info, runtime, profile)
    if sources is None:
        return None
    assert profile is not None
    entry = (recorded({"info": info}) or {})[profile.name]
    paths = artifact_paths(runtime, out)
    for src, dst in zip(sources, paths, strict=True):
        shutil.copyfile(src, dst)
    facts = {**(entry.get("conversion") or {}), "from_search": entry["files"][0]}
    return Artifact(runtime, paths, facts)


def _stored_sources(
    run: RunDir | None,
    info: Mapping[str, Any],
    runtime: Runtime,
    profile: HardwareProfile | None,
) -> list[Path] | None:
    """The files the search converted for ``profile`` in ``runtime`` (a trial's ``info``),
    when they are in ``run`` with the digests the study recorded; else None."""
    entry = (recorded({"info": info}) or {}).get(profile.name) if profile else None
    if run is None or not entry or entry.get("runtime") != runtime.value:
        return None
    try:
        sources = [run.inside(f) for f in entry["files"]]
    except ConfigError:
        return None
    if not all(p.is_file() for p in sources) or [sha256_of(p) for p in sources] != list(
        entry.get("sha256") or []
    ):
        return None
    return sources
