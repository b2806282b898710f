"""The files a trial was converted into per target, typed for the reports.

The search keeps them in a trial's ``info["target_files"]`` (``edgeopt.search.trial.runtimes``:
``{target: {"runtime", "files", "sha256", "conversion", "agreement", "val_accuracy"}}``, files
relative to the run directory); only targets whose runtime is not ONNX Runtime have one (an
ORT target loads the candidate's ``model.onnx`` itself). Reports read them through
``target_files``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TARGET_FILES = "target_files"
"""Key in a trial's ``info``: the files per target (module doc)."""


@dataclass(frozen=True)
class TargetFile:
    """One target's converted file of a trial: its runtime (``openvino``, ``litert`` ...),
    its files (the one the runtime loads first), and the top-1 agreement with the ONNX
    candidate and the validation score taken through that runtime, when recorded."""

    runtime: str
    files: tuple[str, ...]
    agreement: float | None = None
    val_accuracy: float | None = None

    @property
    def path(self) -> str | None:
        """The file the runtime loads (an OpenVINO ``.xml``, a ``.tflite`` ...)."""
        return self.files[0] if self.files else None


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def target_files(info: Mapping[str, Any]) -> dict[str, TargetFile]:
    """``{target: TargetFile}`` of a trial's ``info`` (empty when nothing was converted)."""
    raw = info.get(TARGET_FILES)
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, TargetFile] = {}
    for target, entry in raw.items():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("runtime"), str):
            continue
        files = entry.get("files")
        out[str(target)] = TargetFile(
            runtime=entry["runtime"],
            files=tuple(str(f) for f in files) if isinstance(files, list | tuple) else (),
            agreement=_number(entry.get("agreement")),
            val_accuracy=_number(entry.get("val_accuracy")),
        )
    return out
