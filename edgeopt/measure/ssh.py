"""Commands on a device over SSH: the system's OpenSSH client, one ControlMaster connection.

Why the system ``ssh`` and no Python SSH library: no new dependency; the user's
``~/.ssh/config`` (Host aliases, ProxyJump, agents, certificates) and known_hosts apply as
they do in a terminal; and with ControlMaster every call after the first rides one
authenticated connection (no new handshake). paramiko or asyncssh would re-implement all of
that and still need the user's config parsed by hand. Calls use ``BatchMode`` (never a
password prompt that would hang), ``ConnectTimeout``, keep-alives that notice a vanished
device within ~15 s, and a local timeout each.

Failures become :class:`edgeopt.measure.runner_base.DeviceError` with a hint: unreachable host,
refused key, unknown or changed host key, a lost connection, no answer in time;
a command that ran and failed raises :class:`RemoteFailure`.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from edgeopt.measure.runner_base import DeviceError
from edgeopt.profiles import SshSpec

CONNECT_TIMEOUT_S = 10

_UNREACHABLE = (
    "connection refused",
    "no route to host",
    "timed out",
    "could not resolve",
    "network is unreachable",
    "connection closed",
    "connection reset",
    "broken pipe",
)


def quote_path(path: str) -> str:
    """``path`` quoted for the device's POSIX shell, ``~/`` left to expand."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def last_line(stderr: bytes) -> str:
    """The last meaningful line of ssh's or a command's stderr."""
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Warning: Permanently added", "debug"))]
    return lines[-1] if lines else "no message"


class OpenSsh:
    """Runs commands on one host through a ControlMaster connection of the system ssh."""

    def __init__(self, spec: SshSpec) -> None:
        self.spec = spec
        self.device = spec.device
        self._dir: str | None = None
        self._master = False

    def _args(self, *extra: str) -> list[str]:
        s = self.spec
        assert self._dir is not None
        args = [
            "ssh",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",
            "-o", "LogLevel=ERROR",
            "-o", f"ControlPath={self._dir}/cm-%C",
        ]  # fmt: skip
        if s.port:
            args += ["-p", str(s.port)]
        if s.user:
            args += ["-l", s.user]
        if s.identity_file:
            args += ["-i", str(s.identity_file), "-o", "IdentitiesOnly=yes"]
        if s.known_hosts:
            args += ["-o", f'UserKnownHostsFile="{s.known_hosts}"']
            args += ["-o", "StrictHostKeyChecking=yes"]
        return [*args, *extra]

    def connect(self) -> None:
        """Start the master connection (a background ssh, alive up to 10 idle minutes)
        unless one is up."""
        if self._dir is not None and self._alive():
            self._master = True
            return
        s = self.spec
        if s.identity_file is not None and not s.identity_file.is_file():
            raise DeviceError(
                f"{self.device}: identity_file {s.identity_file} does not exist",
                hint="fix [runner] identity_file (a relative path is read from the profile's "
                "folder)",
            )
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="eo-ssh-", dir="/tmp")  # short socket paths
        for stale in Path(self._dir).glob("cm-*"):
            stale.unlink()  # a killed master's socket would turn the new one into a plain ssh
        log = Path(self._dir) / "master.log"
        cmd = self._args("-o", "ControlMaster=yes", "-o", "ControlPersist=600", "-N", "-f")
        with open(log, "wb") as err:
            try:
                proc = subprocess.run(
                    [*cmd, "--", str(s.host)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    timeout=CONNECT_TIMEOUT_S + 20,
                )
            except subprocess.TimeoutExpired:
                raise DeviceError(
                    f"cannot reach {self.device}: no answer in {CONNECT_TIMEOUT_S + 20}s",
                    hint=self._try_hint(),
                ) from None
        if proc.returncode != 0:
            raise self._connect_error(last_line(log.read_bytes()))
        self._master = True

    @property
    def connected(self) -> bool:
        """Whether the master connection is up (no new connection is tried)."""
        return self._alive()

    def _alive(self) -> bool:
        """Whether the master answers on its socket."""
        if self._dir is None or not any(Path(self._dir).glob("cm-*")):
            return False
        cmd = [*self._args("-O", "check"), "--", str(self.spec.host)]
        try:
            return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _try_hint(self) -> str:
        s = self.spec
        parts = ["ssh"]
        if s.port:
            parts += ["-p", str(s.port)]
        if s.identity_file:
            parts += ["-i", str(s.identity_file)]
        parts.append(f"{s.user}@{s.host}" if s.user else str(s.host))
        return f"is the device on and sshd running? try: {' '.join(parts)} true"

    def _connect_error(self, msg: str) -> DeviceError:
        low = msg.lower()
        if "permission denied" in low or "too many authentication failures" in low:
            key = self.spec.identity_file or "your default keys"
            return DeviceError(
                f"{self.device} refused the key {key} ({msg})",
                hint="check [runner] identity_file and user, and that the key's .pub is in the "
                "device's ~/.ssh/authorized_keys",
            )
        if "host key verification failed" in low or "host identification has changed" in low:
            return DeviceError(
                f"{self.device}: host key not known or changed ({msg})",
                hint="connect once with ssh to accept the device's key, or list it in the file "
                "[runner] known_hosts names",
            )
        if "unprotected private key" in low or "bad permissions" in low:
            return DeviceError(
                f"{self.device}: ssh ignores the key {self.spec.identity_file}: others can read it",
                hint=f"chmod 600 {self.spec.identity_file}",
            )
        if any(m in low for m in _UNREACHABLE):
            return DeviceError(f"cannot reach {self.device}: {msg}", hint=self._try_hint())
        return DeviceError(f"cannot connect to {self.device}: {msg}", hint=self._try_hint())

    def run(self, command: str, *, stdin: bytes | int, timeout_s: float) -> bytes:
        """Run ``command`` in the device's shell; its stdout. Raises DeviceError when the
        connection fails or the call outlives ``timeout_s``; ``RemoteFailure`` on a nonzero exit."""
        self.connect()
        cmd = [*self._args("-o", "ControlMaster=no"), "--", str(self.spec.host), command]
        kwargs: dict[str, Any] = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin}
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, **kwargs)
        except subprocess.TimeoutExpired:
            self._master = False
            raise DeviceError(
                f"{self.device} did not answer within {timeout_s:.0f}s (measurement timed out)",
                hint="is the device overloaded or rebooting? raise [runner] timeout_s for slow "
                "devices",
            ) from None
        if proc.returncode == 255:
            self._master = False
            msg = last_line(proc.stderr)
            raise DeviceError(f"lost the connection to {self.device}: {msg}", hint=self._try_hint())
        if proc.returncode != 0:
            raise RemoteFailure(proc.returncode, last_line(proc.stderr))
        return proc.stdout

    def close(self) -> None:
        """Stop the master connection and remove the local socket folder."""
        if self._dir is None:
            return
        if any(Path(self._dir).glob("cm-*")):
            subprocess.run(
                [*self._args("-O", "exit"), "--", str(self.spec.host)],
                capture_output=True,
                timeout=10,
                check=False,
            )
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir, self._master = None, False


class RemoteFailure(Exception):
    """A remote command exited nonzero (not an ssh failure): its exit code and last line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message
