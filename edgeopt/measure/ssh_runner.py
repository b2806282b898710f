"""The SSH runner: the timing child, run on a device through ``edgeopt.measure.ssh``.

The device needs a POSIX shell, a python with onnxruntime and numpy (``[runner] python``),
and nothing of edgeopt. What happens there (``[runner] workdir``, default ``/tmp/edgeopt``):

- one session folder ``s-HOST-PID-TOKEN`` per runner: ``code/`` holds the timing child and
  the three modules it imports (``edgeopt/measure/{child,session,timing,power}.py`` with
  empty package files, copied when the session starts, which also reports the machine);
  ``m/HASH/NAME.onnx`` one model per content hash, copied once (the oldest are removed
  beyond ``KEEP_MODELS``); ``in/HASH.npy`` the inputs;
- ``close()`` removes the session folder; one untouched for a week (a killed run) is
  removed by the next session that starts;
- each call is bounded: a local timeout, and the child's own deadline on the device.

After a lost connection the runner starts over on the next call (a rebooted device has lost
its ``/tmp``): the files are copied again, and the search's next trial measures normally.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import shlex
import socket
import statistics
import tarfile
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgeopt.errors import EdgeoptError
from edgeopt.measure import runtime
from edgeopt.measure.runner_base import CALIBRATION_TIMING, DeviceError, Runner
from edgeopt.measure.ssh import OpenSsh, RemoteFailure, quote_path
from edgeopt.profiles import SshSpec

KEEP_MODELS = 4  # the reference, the candidate, and a spare or two
CHILD_FILES = ("child.py", "session.py", "timing.py", "power.py")
MB = 2**20

# Runs on the device: extract the child, clean stale sessions, and report the machine (or
# the module the python lacks). Arguments: WORKDIR SESSION_NAME [OLD_SESSION_DIR ...] (left
# by this runner before a lost connection); the child's tar on stdin.
_BOOT = r"""
import io, json, os, platform, shutil, sys, tarfile, time
work = os.path.expanduser(sys.argv[1]); sess = os.path.join(work, sys.argv[2])
missing = []
for name in ("onnxruntime", "numpy"):
    try:
        __import__(name)
    except ImportError:
        missing.append(name)
if missing:
    print(json.dumps({"missing": ", ".join(missing), "python": sys.executable}))
    sys.exit(0)
import onnxruntime
os.makedirs(sess, exist_ok=True)
for old in sys.argv[3:]:
    shutil.rmtree(old, ignore_errors=True)
for n in os.listdir(work):
    p = os.path.join(work, n)
    if n.startswith("s-") and p != sess and time.time() - os.path.getmtime(p) > 7 * 86400:
        shutil.rmtree(p, ignore_errors=True)
kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read())).extractall(
    os.path.join(sess, "code"), **kw)
sys.path.insert(0, os.path.join(sess, "code"))
from edgeopt.measure.power import find_power_source
cpu = platform.machine()
info = open("/proc/cpuinfo").read().splitlines() if os.path.exists("/proc/cpuinfo") else []
for k in ("model name", "Model", "Hardware"):
    cpu = next((ln.split(":", 1)[1].strip() for ln in info if ln.split(":")[0].strip() == k), cpu)
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
print(json.dumps({"session": sess, "python": sys.executable, "ort": onnxruntime.__version__,
    "providers": onnxruntime.get_available_providers(), "cpu": cpu, "cores": os.cpu_count(),
    "system": platform.system(), "mem_bytes": mem, "power": find_power_source()}))
"""

# Unpacks a tar from stdin into SESSION after removing the listed older entries.
_PUT = r"""
import io, os, shutil, sys, tarfile
for old in sys.argv[2:]:
    shutil.rmtree(os.path.join(sys.argv[1], old), ignore_errors=True)
kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read())).extractall(sys.argv[1], **kw)
"""


def _session_name() -> str:
    host = re.sub(r"[^A-Za-z0-9-]", "", socket.gethostname())[:20] or "host"
    return f"s-{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(MB), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _model_files(path: Path) -> list[Path]:
    """The ONNX file and its external-data file, when there is one."""
    data = path.with_name(path.name + ".data")
    return [path, data] if data.exists() else [path]


def _child_tar() -> bytes:
    """The timing child and its three modules as a package tree, with empty package files."""
    here = Path(__file__).resolve().parent
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        members = [("edgeopt/__init__.py", b""), ("edgeopt/measure/__init__.py", b"")]
        members += [(f"edgeopt/measure/{n}", (here / n).read_bytes()) for n in CHILD_FILES]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _json_line(out: bytes) -> dict[str, Any]:
    """The last line of ``out`` that is a JSON object (a login shell may print before it)."""
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith("{"):
            try:
                return dict(json.loads(line))
            except json.JSONDecodeError:
                continue
    raise EdgeoptError(f"unreadable reply from the device: {out[-200:]!r}")


class SshRunner(Runner):
    """Measures on the device a ``[runner] kind = "ssh"`` table names (see the module doc)."""

    def __init__(self, spec: SshSpec) -> None:
        self.spec = spec
        self.device = spec.device
        self.providers = tuple(spec.providers)
        self.base_timeout_s = spec.timeout_s
        self._ssh = OpenSsh(spec)
        self._facts: dict[str, Any] | None = None
        self._models: OrderedDict[str, str] = OrderedDict()  # hash -> session-relative path
        self._inputs: set[str] = set()
        self._stale: list[str] = []  # session folders to remove once the device answers

    # ------------------------------------------------------------------ session
    def _start(self) -> dict[str, Any]:
        """Connect, copy the child and learn the machine, once per session."""
        if self._facts is not None:
            return self._facts
        py = quote_path(self.spec.python)
        cmd = f"{py} -c {shlex.quote(_BOOT)} {shlex.quote(self.spec.workdir)} {_session_name()}"
        cmd += "".join(f" {shlex.quote(old)}" for old in self._stale)
        try:
            facts = _json_line(
                self._ssh.run(cmd, stdin=_child_tar(), timeout_s=self.spec.timeout_s)
            )
        except RemoteFailure as exc:
            if exc.code in (126, 127):
                raise DeviceError(
                    f"{self.device}: cannot run python {self.spec.python!r} ({exc.message})",
                    hint="set [runner] python to the device's interpreter that has onnxruntime "
                    "and numpy",
                ) from None
            raise DeviceError(
                f"{self.device}: starting the session failed: {exc.message}"
            ) from None
        if "missing" in facts:
            raise DeviceError(
                f"{self.device}: python {facts['python']} has no {facts['missing']}",
                hint="install what is missing there (python -m pip install onnxruntime numpy), "
                "or set [runner] python to an interpreter that has it",
            )
        missing = [p for p in self.spec.providers if p not in facts["providers"]]
        if missing:
            self._stale.append(str(facts["session"]))  # removed at close
            raise DeviceError(
                f"{self.device}: onnxruntime {facts['ort']} there has no {', '.join(missing)} "
                f"(available: {', '.join(facts['providers'])})",
                hint="install an onnxruntime build with it on the device (onnxruntime-gpu, "
                "JetPack's wheel), or remove it from [runner] providers",
            )
        self._facts, self._stale = facts, []
        return facts

    def _forget(self) -> None:
        """After a lost connection: start a new session (and copy again) next time."""
        if self._facts is not None:
            self._stale.append(str(self._facts["session"]))
        self._facts = None
        self._models.clear()
        self._inputs.clear()

    def _call(self, command: str, stdin: bytes | IO[bytes], timeout_s: float) -> bytes:
        try:
            return self._ssh.run(command, stdin=stdin, timeout_s=timeout_s)
        except DeviceError:
            self._forget()
            raise

    def check(self) -> None:
        """Connect and verify python, onnxruntime and the providers on the device."""
        self._start()

    def describe(self) -> str:
        f = self._start()
        return (
            f"{self.device}: {f['cpu']}, {f['cores']} logical cores, {f['system']}, "
            f"onnxruntime {f['ort']} ({', '.join(self.spec.providers)})"
        )

    @property
    def mem_bytes(self) -> float:
        """The device's physical memory in bytes (0 when it did not say)."""
        return float(self._start().get("mem_bytes") or 0)

    # ------------------------------------------------------------------ files
    def _put(
        self, paths: Sequence[str | Path], arrays: Sequence[np.ndarray]
    ) -> tuple[list[str], list[str]]:
        """The device paths of ``paths`` and of ``arrays`` (saved as .npy), copying only what
        the device does not hold yet (by content hash), in one call."""
        sess = str(self._start()["session"])
        models, hashes, new = [], [], []
        for p in map(Path, paths):
            files = _model_files(p)
            h = _digest(files)
            hashes.append(h)
            models.append(f"{sess}/m/{h}/{p.name}")
            if h not in self._models and h not in {n for n, _ in new}:
                new.append((h, files))
        inputs, blobs = [], {}
        for a in arrays:
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(a))
            h = hashlib.sha256(buf.getvalue()).hexdigest()[:16]
            inputs.append(f"{sess}/in/{h}.npy")
            if h not in self._inputs:
                blobs[h] = buf.getvalue()
        if new or blobs:
            spare = [h for h in self._models if h not in hashes]
            evict = spare[: max(0, len(self._models) + len(new) - KEEP_MODELS)]
            self._send(sess, new, blobs, evict)
            for h in evict:
                del self._models[h]
            self._inputs.update(blobs)
        for h, files in new:
            self._models[h] = files[0].name
        for h in hashes:
            self._models.move_to_end(h)
        return models, inputs

    def _send(
        self,
        sess: str,
        models: list[tuple[str, list[Path]]],
        blobs: dict[str, bytes],
        evict: list[str],
    ) -> None:
        """One tar of ``models`` and ``blobs`` unpacked in the session, ``evict`` removed."""
        size = 0
        with tempfile.TemporaryFile() as tar_file:
            with tarfile.open(fileobj=tar_file, mode="w") as tar:
                for h, files in models:
                    for f in files:
                        tar.add(f, arcname=f"m/{h}/{f.name}")
                        size += f.stat().st_size
                for h, data in blobs.items():
                    info = tarfile.TarInfo(f"in/{h}.npy")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            tar_file.seek(0)
            cmd = f"{quote_path(self.spec.python)} -c {shlex.quote(_PUT)} {shlex.quote(sess)}"
            cmd += "".join(f" m/{h}" for h in evict)
            try:
                self._call(cmd, tar_file, self.spec.timeout_s + 2 * size / MB)
            except RemoteFailure as exc:
                self._forget()
                raise EdgeoptError(f"copying to {self.device} failed: {exc.message}") from None

    def _child(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Run the timing child on the device with ``request``; its reply."""
        sess = shlex.quote(str(self._start()["session"]))
        request = {**request, "providers": list(self.spec.providers), "deadline_s": timeout_s}
        py = quote_path(self.spec.python)
        cmd = f"touch {sess} && cd {sess}/code && {py} -m edgeopt.measure.child"
        try:
            out = self._call(cmd, json.dumps(request).encode(), timeout_s + 10)
        except RemoteFailure as exc:
            if exc.message.startswith("TimeoutError: deadline"):
                raise DeviceError(
                    f"measurement on {self.device} timed out after {timeout_s:.0f}s",
                    hint="is the device overloaded? raise [runner] timeout_s for slow devices",
                ) from None
            raise EdgeoptError(f"measurement on {self.device} failed: {exc.message}") from None
        return _json_line(out)

    def _stage(
        self, paths: Sequence[str | Path], arrays: Sequence[np.ndarray]
    ) -> contextlib.nullcontext[tuple[list[str], list[str]]]:
        return contextlib.nullcontext(self._put(paths, arrays))

    def _power_source(self) -> dict[str, Any] | None:
        return self._start().get("power") or None

    # ------------------------------------------------------------------ measurements
    def time_models(
        self, models: Sequence[tuple[str | Path, np.ndarray]], *, threads: int, rounds: int
    ) -> list[float]:
        """Calibration timing on the device: each model on its own input, ``rounds`` rounds."""
        paths, inputs = self._put([p for p, _ in models], [x for _, x in models])
        request = runtime.latency_request(
            paths,
            inputs,
            threads=threads,
            min_rounds=rounds,
            max_rounds=rounds,
            time_budget_s=None,
            **CALIBRATION_TIMING,
        )
        timeout = self.spec.timeout_s + 2.0 * len(models) * rounds
        reply = self._child(request, timeout)
        return [statistics.median(r) for r in reply["round_medians_ms"]]

    def close(self) -> None:
        """Remove this runner's session folders on the device and stop the connection."""
        sessions = [*self._stale, *([str(self._facts["session"])] if self._facts else [])]
        if sessions and self._ssh.connected:
            with contextlib.suppress(EdgeoptError, RemoteFailure):
                rm = "rm -rf " + " ".join(shlex.quote(d) for d in sessions)
                self._ssh.run(rm, stdin=b"", timeout_s=30)
        self._facts, self._stale = None, []
        self._models.clear()
        self._inputs.clear()
        self._ssh.close()
