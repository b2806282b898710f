"""Trial files that every machine of a study can read, through Optuna's artifact API.

With ``--artifacts DIR`` (a folder every machine mounts, e.g. over NFS) each trial's files
(``model.onnx``, ``trial.log``, ``request.json``, ``result.json``, ``error.txt``) are uploaded
with ``optuna.artifacts.upload_artifact`` into a ``FileSystemArtifactStore`` before the trial
is told; Optuna records each file's artifact id in the trial. ``--artifacts s3://BUCKET``
uses ``Boto3ArtifactStore`` instead (``pip install boto3``; credentials as boto3 finds them).
Without ``--artifacts`` the files stay in the run directory that built them (one machine).

Readers take a trial's ONNX file from the local run directory when it is there, else download
it from the store and check it against the SHA-256 recorded at upload.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError

# what a trial folder may hold, uploaded in this order (the model first: readers need it)
TRIAL_FILES = (
    "model.onnx",
    "model.preprocess.json",  # an image-folder run's recipe, beside the model (data.metadata)
    "trial.log",
    "request.json",
    "result.json",
    "error.txt",
)
ARTIFACTS_ATTR_PREFIX = "artifacts:"  # optuna.artifacts' key prefix in a trial's system attributes


def open_store(spec: str, *, write: bool = True) -> Any:
    """The artifact store ``spec`` names: ``s3://BUCKET`` or a folder (created and checked
    writable for a worker, ``write``; only required to exist for a reader).

    Raises ConfigError when it cannot be used (boto3 missing, a folder not writable)."""
    if spec.startswith("s3://"):
        bucket = spec[len("s3://") :].strip("/")
        if not bucket or "/" in bucket:
            raise ConfigError(
                f"--artifacts {spec} must name a bucket only", hint="e.g. s3://my-edgeopt-runs"
            )
        try:
            from optuna.artifacts import Boto3ArtifactStore

            return Boto3ArtifactStore(bucket)
        except ImportError as exc:
            raise ConfigError(
                f"--artifacts {spec} needs boto3 ({exc})", hint="pip install boto3"
            ) from exc
    from optuna.artifacts import FileSystemArtifactStore

    path = Path(spec).expanduser()
    if not write:
        if not path.is_dir():
            raise ConfigError(
                f"the artifact folder {path} does not exist on this machine",
                hint="pass --artifacts with the path where this machine mounts the shared folder",
            )
        return FileSystemArtifactStore(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".edgeopt-probe-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot write to the artifact folder {path}: {exc.strerror or exc}",
            hint="--artifacts must be a folder every machine of the study can read and write",
        ) from exc
    return FileSystemArtifactStore(path)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path, recorded: str | None, what: str, hint: str | None = None) -> None:
    """ConfigError naming both hashes when ``path``'s bytes are not the ones the study
    recorded (``recorded``; nothing to check when it recorded none)."""
    if not recorded:
        return
    actual = sha256_of(path)
    if actual != recorded:
        raise ConfigError(
            f"{what} is not the file the study recorded: its SHA-256 is {actual}, the study "
            f"recorded {recorded}",
            hint=hint
            or "a trial file was replaced or edited after the search; re-run the search for "
            "this trial, or export another",
        )


def upload_trial_files(store: Any, trial: Any, trial_dir: Path) -> dict[str, str]:
    """Upload the files present in ``trial_dir`` as artifacts of the running ``trial``;
    returns ``{file name: artifact id}``. Call before the trial is told."""
    from optuna.artifacts import upload_artifact

    ids = {}
    for name in TRIAL_FILES:
        path = trial_dir / name
        if path.is_file():
            ids[name] = upload_artifact(
                artifact_store=store, file_path=str(path), study_or_trial=trial
            )
    return ids


def trial_artifacts(system_attrs: Mapping[str, Any]) -> dict[str, str]:
    """``{file name: artifact id}`` of a trial, from its system attributes."""
    out = {}
    for key, value in system_attrs.items():
        if key.startswith(ARTIFACTS_ATTR_PREFIX):
            meta = json.loads(value) if isinstance(value, str) else value
            out[str(meta["filename"])] = str(meta["artifact_id"])
    return out


_ARTIFACT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""What Optuna's artifact ids look like (uuid4 strings): no separator, no leading dot."""


def fetch(store: Any, artifact_id: str, dest: Path, sha256: str | None, what: str) -> Path:
    """Download one artifact to ``dest`` (replaced atomically); ConfigError when the store
    lacks it or its bytes do not match ``sha256``."""
    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    if not _ARTIFACT_ID.fullmatch(str(artifact_id)):  # the study is data: no path in it
        raise ConfigError(
            f"{what}: the study records an invalid artifact id {str(artifact_id)[:80]!r}",
            hint="the study was edited or is not from edgeopt; re-run the trial",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    try:
        download_artifact(artifact_store=store, file_path=str(tmp), artifact_id=artifact_id)
        check_sha256(
            tmp,
            sha256,
            f"{what} in the artifact store",
            hint="the artifact folder was edited or is still being written; re-run the trial",
        )
        os.replace(tmp, dest)
    except (ArtifactNotFound, FileNotFoundError) as exc:
        raise ConfigError(
            f"{what} (artifact {artifact_id}) is not in the artifact store",
            hint="pass the --artifacts folder the workers uploaded to",
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest
