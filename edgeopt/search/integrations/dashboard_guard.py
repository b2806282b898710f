"""The gate in front of optuna-dashboard: only this server's own address, read-only by default.

optuna-dashboard has no login and its write routes (delete or create a study, notes, user
attributes, telling a trial, preferential feedback, artifact uploads, a schema upgrade) are
plain HTTP requests. A page in the user's browser can send them to 127.0.0.1 (a form posts
cross-origin without asking), and by DNS rebinding a page on the attacker's own name can
even read the answers. So every request must name this server in its ``Host`` header (what a
rebound name cannot do), only GET and HEAD pass unless writes were asked for, and a write must
come from a page of this server (``Origin``), which a form or script on another site cannot
forge.

Plain WSGI, no optuna: it wraps whatever application it is given.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

READ_METHODS = frozenset({"GET", "HEAD"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_DRAIN_MAX = 1 << 20  # a refused request's body read (up to 1 MiB) so its answer arrives


def is_loopback(host: str) -> bool:
    """Whether ``--host`` keeps the server to this machine (127.0.0.0/8, ::1, localhost)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def split_host(value: str) -> tuple[str, int] | None:
    """``Host`` header -> (lower-case name, port; 80 when it names none), None if malformed.
    IPv6 addresses come without their brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        name, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else ""
    else:
        name, _, port_text = value.partition(":")
        if ":" in port_text:
            return None
    if not name:
        return None
    if not port_text:
        return name, 80
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return name, int(port_text)


@dataclass(frozen=True)
class Guard:
    """WSGI middleware around ``app`` for a server bound to ``host``:``port``.

    ``Host`` must name this server: localhost, 127.0.0.1, ::1 or ``host`` itself, with
    ``port``; after a wildcard bind (0.0.0.0) also any IP address and this machine's names
    (an IP address cannot be rebound to another site). Anything else: 403. Methods other
    than GET/HEAD: 405 unless ``writes``; with ``writes``, 403 unless ``Origin`` is this
    server (as the ``Host`` header names it)."""

    app: WSGIApp
    host: str
    port: int
    writes: bool = False

    @functools.cached_property
    def names(self) -> frozenset[str]:
        """The host names a request may use (IP addresses too, after a wildcard bind); once,
        as getfqdn may ask DNS."""
        given = self.host.strip("[]").lower()
        names = set(LOOPBACK_NAMES) | {given}
        if given in WILDCARDS:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        return frozenset(names - WILDCARDS)

    def host_ok(self, header: str | None) -> bool:
        """Whether a request's ``Host`` header names this server."""
        parsed = split_host(header) if header else None
        if parsed is None or parsed[1] != self.port:
            return False
        name = parsed[0]
        if name in self.names:
            return True
        return self.host.strip("[]").lower() in WILDCARDS and _is_ip(name)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        host = environ.get("HTTP_HOST")
        if not self.host_ok(host):
            return _refuse(
                environ,
                start_response,
                "403 Forbidden",
                f"Host {host!r} is not this dashboard's address; open it as "
                f"http://127.0.0.1:{self.port}/ (or the --host it was started with)",
            )
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method in READ_METHODS:
            return self.app(environ, start_response)
        if not self.writes:
            return _refuse(
                environ,
                start_response,
                "405 Method Not Allowed",
                "this dashboard is read-only; restart it with --allow-writes to edit the study",
                [("Allow", "GET, HEAD")],
            )
        if not _same_origin(environ.get("HTTP_ORIGIN"), str(host)):
            return _refuse(
                environ,
                start_response,
                "403 Forbidden",
                "a change to the study must come from this dashboard's own page "
                f"(Origin {environ.get('HTTP_ORIGIN')!r} is not http://{host})",
            )
        return self.app(environ, start_response)


def _same_origin(origin: str | None, host: str) -> bool:
    """Whether ``Origin`` is ``http://`` + the (already checked) ``Host``. A browser sends
    Origin with every non-GET request; a write without one is refused as well."""
    if not origin:
        return False
    try:
        parts = urlsplit(origin.strip())
        if parts.scheme.lower() != "http" or parts.path or parts.query or parts.username:
            return False
        name, port = (parts.hostname or "").lower(), parts.port or 80
    except ValueError:
        return False
    return (name, port) == split_host(host)


def _refuse(
    environ: dict[str, Any],
    start_response: Callable[..., Any],
    status: str,
    reason: str,
    headers: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    _drain(environ)
    body = (reason + "\n").encode()
    start_response(
        status,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *(headers or []),
        ],
    )
    return [body]


def _drain(environ: dict[str, Any]) -> None:
    """Read a refused request's body: closing with it unread resets the connection, and the
    client would see that instead of the answer."""
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), _DRAIN_MAX)
    except ValueError:
        return
    stream = environ.get("wsgi.input")
    while length > 0 and stream is not None:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            break
        length -= len(chunk)
