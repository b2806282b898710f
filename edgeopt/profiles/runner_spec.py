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

A profile is data: every value here is a closed-set name, a number, or a string passed as
one argument (never through a local shell), so a profile cannot make edgeopt run code on
this machine; ``host`` and ``user`` are checked so that they cannot pose as ssh options.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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
from edgeopt.profiles.schema import ORT_PROVIDERS, RUNNER_KINDS, RunnerSpec

RUNNER_KEYS = (
    "kind",
    "host",
    "user",
    "port",
    "identity_file",
    "known_hosts",
    "python",
    "workdir",
    "providers",
    "threads",
    "timeout_s",
)
SSH_ONLY = ("host", "user", "port", "identity_file", "known_hosts", "python", "workdir")
_HOST = re.compile(r"^[A-Za-z0-9_.:%\[\]][A-Za-z0-9_.:%\[\]-]*$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]*$")


def _matching(pattern: re.Pattern[str]) -> Any:
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


def read_runner(top: Reader, folder: Path | None) -> RunnerSpec:
    """The validated ``[runner]`` table; relative local paths resolve against ``folder``."""
    r = top.table("runner", RUNNER_KEYS)
    kind = r.get("kind", one_of(RUNNER_KINDS), f"one of {', '.join(RUNNER_KINDS)}")
    if kind != "ssh":
        for key in SSH_ONLY:
            if r.has(key):
                raise ConfigError(
                    f'{r.file}: {r.key_path(key)}: only for kind = "ssh" (this runner is "{kind}")'
                )
    providers = _read_providers(r)
    threads = r.get("threads", pos_int, "a positive integer", default=None)
    timeout_s = r.get("timeout_s", pos, f"{POS_NUM} (seconds)", default=120.0)
    spec = _spec(r, kind, providers, threads, timeout_s, folder)
    # runner values are settings, not hardware numbers that need a source
    for key in [k for k in top.prov if k.startswith("runner.")]:
        del top.prov[key]
    return spec


def _spec(
    r: Reader,
    kind: str,
    providers: tuple[str, ...],
    threads: int | None,
    timeout_s: float,
    folder: Path | None,
) -> RunnerSpec:
    if kind != "ssh":
        return RunnerSpec(kind=kind, providers=providers, threads=threads, timeout_s=timeout_s)
    return RunnerSpec(
        kind=kind,
        providers=providers,
        threads=threads,
        timeout_s=timeout_s,
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
