"""The ``[runner]`` table: where a measured profile is measured.

::

    [runner]
    kind = "ssh"                     # "ssh" (a device) or "local" (this host)
    host = "192.168.1.20"            # ssh: an address or a Host alias of ~/.ssh/config
    user = "pi"                      # ssh, optional (else ssh's default)
    port = 22                        # ssh, optional
    identity_file = "keys/board"     # ssh, optional; relative to this file's folder
    known_hosts = "keys/known_hosts" # ssh, optional; then the host key must be listed there
    python = "/usr/bin/python3"      # ssh: the device's interpreter with onnxruntime + numpy
    workdir = "/tmp/edgeopt"         # ssh: where edgeopt may write on the device
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]   # default: CPU
    threads = 4                      # optional: intra-op threads there ([profile] threads)
    timeout_s = 120                  # optional: limit on each remote call beyond timing

Each kind is one spec type here (its keys, how they are read) and one entry in
:data:`RUNNER_SPECS`; ``edgeopt.measure.runners.RUNNER_FACTORIES`` maps the same kind to the
runner that measures it. A key of another kind is refused by name.

A profile is data: every value here is a closed-set name, a number, or a string passed as
one argument (never through a local shell), so a profile cannot make edgeopt run code on
this machine; ``host`` and ``user`` are checked so that they cannot pose as ssh options.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from edgeopt.errors import ConfigError
from edgeopt.profiles.reader import (
    POS_NUM,
    Reader,
    did_you_mean,
    nonempty_str,
    one_of,
    pos,
    pos_int,
    str_list,
)
from edgeopt.profiles.schema import ORT_PROVIDERS, RunnerSpec

COMMON_KEYS = ("kind", "providers", "threads", "timeout_s")
"""The keys every kind has (``RunnerSpec``'s fields, and ``kind``)."""
_HOST = re.compile(r"^[A-Za-z0-9_.:%\[\]][A-Za-z0-9_.:%\[\]-]*$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]*$")
Common = dict[str, Any]
"""The common settings, read: ``providers``, ``threads``, ``timeout_s``."""


@dataclass(frozen=True, kw_only=True)
class LocalSpec(RunnerSpec):
    """``kind = "local"``: this host measures, with the providers given (no keys of its own)."""

    kind: ClassVar[str] = "local"
    KEYS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def read(cls, r: Reader, folder: Path | None, common: Common) -> LocalSpec:
        """The spec from ``[runner]`` (its common settings read already)."""
        return cls(**common)


@dataclass(frozen=True, kw_only=True)
class SshSpec(RunnerSpec):
    """``kind = "ssh"``: a device reached over SSH.

    ``identity_file`` and ``known_hosts`` are absolute (relative ones in the file resolve
    against the profile's folder); ``python`` is the device's interpreter with onnxruntime and
    numpy; ``workdir`` the device folder edgeopt writes into (one subfolder per session,
    removed afterwards).
    """

    kind: ClassVar[str] = "ssh"
    KEYS: ClassVar[tuple[str, ...]] = (
        "host",
        "user",
        "port",
        "identity_file",
        "known_hosts",
        "python",
        "workdir",
    )
    host: str
    user: str | None = None
    port: int | None = None
    identity_file: Path | None = None
    known_hosts: Path | None = None
    python: str = "python3"
    workdir: str = "/tmp/edgeopt"

    @property
    def device(self) -> str:
        """``ssh://user@host:port`` (user and port where given)."""
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{self.host}{port}"

    @property
    def remote(self) -> bool:
        return True

    @classmethod
    def read(cls, r: Reader, folder: Path | None, common: Common) -> SshSpec:
        """The spec from ``[runner]`` (its common settings read already); relative local
        paths resolve against ``folder``."""
        return cls(
            **common,
            host=r.get("host", _matching(_HOST), "a host name or address (not starting with '-')"),
            user=r.get("user", _matching(_USER), "a user name", default=None),
            port=r.get("port", _port, "a port number 1-65535", default=None),
            identity_file=_local_path(r, "identity_file", folder),
            known_hosts=_local_path(r, "known_hosts", folder),
            python=r.get(
                "python", _one_line, "the device's python (a path or a name)", default="python3"
            ),
            workdir=r.get(
                "workdir",
                _remote_dir,
                'an absolute folder on the device, or "~/..."',
                default="/tmp/edgeopt",
            ),
        )


class SpecType(Protocol):
    """What a runner kind's spec type (a ``RunnerSpec`` subclass) provides: its ``kind``,
    its own ``KEYS`` (beyond ``COMMON_KEYS``) and ``read``."""

    kind: str
    KEYS: tuple[str, ...]

    def read(self, r: Reader, folder: Path | None, common: Common) -> RunnerSpec: ...


RUNNER_SPECS: dict[str, SpecType] = {
    LocalSpec.kind: LocalSpec,
    SshSpec.kind: SshSpec,
}
"""``[runner] kind`` -> its spec type (tests/test_tables.py checks that
``edgeopt.measure.runners.RUNNER_FACTORIES`` names the same kinds)."""
RUNNER_KINDS = tuple(RUNNER_SPECS)
RUNNER_KEYS = COMMON_KEYS + tuple(k for spec in RUNNER_SPECS.values() for k in spec.KEYS)
"""Every key a ``[runner]`` table may hold (of some kind)."""


def read_runner(top: Reader, folder: Path | None) -> RunnerSpec:
    """The validated ``[runner]`` table; relative local paths resolve against ``folder``."""
    r = top.table("runner", RUNNER_KEYS)
    kind = r.get("kind", one_of(RUNNER_KINDS), f"one of {', '.join(RUNNER_KINDS)}")
    spec_type = RUNNER_SPECS[kind]
    for other, other_type in RUNNER_SPECS.items():
        for key in other_type.KEYS:
            if r.has(key) and key not in spec_type.KEYS:
                raise ConfigError(
                    f'{r.file}: {r.key_path(key)}: only for kind = "{other}" '
                    f'(this runner is "{kind}")'
                )
    common: Common = {
        "providers": _read_providers(r),
        "threads": r.get("threads", pos_int, "a positive integer", default=None),
        "timeout_s": r.get("timeout_s", pos, f"{POS_NUM} (seconds)", default=120.0),
    }
    spec = spec_type.read(r, folder, common)
    # runner values are settings, not hardware numbers that need a source
    for key in [k for k in top.prov if k.startswith("runner.")]:
        del top.prov[key]
    return spec


def _matching(pattern: re.Pattern[str]) -> Callable[[Any], str | None]:
    return lambda x: x if isinstance(x, str) and pattern.match(x) else None


def _port(x: Any) -> int | None:
    v = pos_int(x)
    return v if v is not None and v <= 65535 else None


def _one_line(x: Any) -> str | None:
    v = nonempty_str(x)
    return v if v is not None and not any(c in v for c in "\n\r\0") else None


def _remote_dir(x: Any) -> str | None:
    v = _one_line(x)
    if v is None or v.rstrip("/") in ("", "~") or not (v.startswith("/") or v.startswith("~/")):
        return None
    return v


def _read_providers(r: Reader) -> tuple[str, ...]:
    providers = r.get(
        "providers",
        str_list,
        "a list of ONNX Runtime execution provider names",
        default=("CPUExecutionProvider",),
    )
    if not providers:
        raise ConfigError(f"{r.file}: runner.providers: expected at least one provider")
    for p in providers:
        if p not in ORT_PROVIDERS:
            raise ConfigError(
                f"{r.file}: runner.providers: unknown execution provider '{p}'"
                f"{did_you_mean(p, ORT_PROVIDERS)}",
                hint=f"known providers: {', '.join(ORT_PROVIDERS)}",
            )
    if len(set(providers)) != len(providers):
        raise ConfigError(f"{r.file}: runner.providers: a provider is listed twice")
    return providers


def _local_path(r: Reader, key: str, folder: Path | None) -> Path | None:
    raw = r.get(key, _one_line, "a file path", default=None)
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = (folder or Path.cwd()) / path
    return path
