"""How a long command stops when it is asked to: Ctrl-C (SIGINT), a service manager, a CI
runner, ``timeout`` or Kubernetes (SIGTERM), or a closed terminal (SIGHUP).

Inside a ``finishing`` block (a search running its trials, the report being written) the
first stop signal asks the work in hand to finish and the command to end there; SIGTERM and
SIGHUP give it a grace period (``EDGEOPT_STOP_GRACE_S``, 20 s by default: whoever sent them
follows up with SIGKILL) after which it is aborted as by a second signal. A second signal
aborts it at once: inside an ``abortable`` block it raises :class:`Interrupted`; elsewhere
the work sees ``requested`` and ends at its next step. Outside a ``finishing`` block (setting
up, the final re-measure) a stop signal raises :class:`Interrupted` at once. The command
then exits with 128 + the first signal's number (130, 143, 129), as shells report it.

Child processes leave stopping to their parent (``edgeopt.lifeline``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from edgeopt.errors import ConfigError

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_ENV = "EDGEOPT_STOP_GRACE_S"
DEFAULT_GRACE_S = 20.0
SAME_REQUEST_S = 1.0
"""A SIGTERM or SIGHUP this soon after the same signal is the same request: a service
manager signals every process of its group at once, and the search's main process forwards
the signal to its workers too. (Two Ctrl-C are always two.)"""

OnSignal = Callable[[int, bool], None]
_current: Stopper | None = None


def current() -> Stopper | None:
    """The Stopper installed in this process now (the CLI installs one per command)."""
    return _current


class Interrupted(KeyboardInterrupt):
    """A stop signal cut work short. ``signum``: the first stop signal the command received
    (it sets the exit code); ``reason``: what happened, for a trial's fail reason."""

    def __init__(self, signum: int, reason: str) -> None:
        super().__init__(reason)
        self.signum = signum
        self.reason = reason

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_label(signum: int) -> str:
    """``Ctrl-C`` for SIGINT, else the signal's name (``SIGTERM``)."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def grace_from_env() -> float:
    """The grace period in seconds (``EDGEOPT_STOP_GRACE_S``); ConfigError when malformed."""
    text = os.environ.get(GRACE_ENV, "").strip()
    if not text:
        return DEFAULT_GRACE_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise ConfigError(
            f"{GRACE_ENV}={text!r} is not a number of seconds",
            hint=f"set it to the seconds a trial may run on after SIGTERM, e.g. {GRACE_ENV}=20",
        )
    return value


class Stopper:
    """The stop signals one process received and what they do now (see the module doc).

    ``install`` takes over SIGINT, SIGTERM, SIGHUP (not where SIGHUP is ignored, as under
    ``nohup``) and, once a grace period starts, SIGALRM (its timer) until ``restore``.
    """

    def __init__(self, grace_s: float | None = None) -> None:
        self.grace_s = grace_from_env() if grace_s is None else grace_s
        self.signum: int | None = None
        """The first stop signal received, None before."""
        self._finishing = False
        self._abortable = False
        self._grace = True
        self._on_signal: OnSignal | None = None
        self._last: tuple[int, float] | None = None
        self._old: dict[int, Any] = {}
        self._outer: Stopper | None = None
        self._ttys: tuple[int, ...] = ()

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived: the work in hand should be the last."""
        return self.signum is not None

    @property
    def exit_code(self) -> int | None:
        """128 + the first stop signal's number; None without one."""
        return None if self.signum is None else 128 + self.signum

    @property
    def label(self) -> str:
        """The first stop signal as a user names it (``Ctrl-C``, ``SIGTERM``); "" before."""
        return "" if self.signum is None else signal_label(self.signum)

    def message(self) -> str:
        """What the first signal does, for the user (call once ``requested``)."""
        assert self.signum is not None
        label = self.label
        if self.signum == signal.SIGINT:
            return f"stopping after the running trial ({label} again to abort)"
        if not self.grace_s:
            return f"{label}: aborting the running trial ({GRACE_ENV}=0)"
        return (
            f"{label}: stopping after the running trial (aborted if it still runs in "
            f"{self.grace_s:g}s, {GRACE_ENV}; {label} again to abort now)"
        )

    # ------------------------------------------------------------------ handlers
    def install(self) -> None:
        """Take over the stop signals; this is then ``current()``. Nothing outside the main
        thread, where Python cannot handle signals."""
        global _current
        if threading.current_thread() is not threading.main_thread():
            return
        self._ttys = tuple(fd for fd in (1, 2) if _isatty(fd))
        for signum in STOP_SIGNALS:
            old = signal.getsignal(signum)
            if signum == signal.SIGHUP and old == signal.SIG_IGN:
                continue  # nohup: the user asked to outlive the terminal
            self._old[signum] = old
            signal.signal(signum, self._handle)
        self._outer, _current = _current, self

    def restore(self) -> None:
        """Give the signals back to the handlers ``install`` found."""
        global _current
        if not self._old:
            return
        if signal.SIGALRM in self._old:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, old in self._old.items():
            signal.signal(signum, signal.SIG_DFL if old is None else old)
        self._old.clear()
        _current = self._outer

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stopper]:
        """``install`` for the block, then ``restore``."""
        self.install()
        try:
            yield self
        finally:
            self.restore()

    @contextlib.contextmanager
    def finishing(self, on_signal: OnSignal | None = None, *, grace: bool = True) -> Iterator[None]:
        """While the block runs, a first stop signal lets the work in hand finish.

        ``on_signal(signum, first)`` is called for each stop signal (in the handler);
        ``grace`` False: no grace timer here (a process that forwards signals to workers
        that keep their own)."""
        self._finishing, self._on_signal, self._grace = True, on_signal, grace
        try:
            yield
        finally:
            if signal.SIGALRM in self._old:
                signal.setitimer(signal.ITIMER_REAL, 0)
            self._finishing, self._on_signal, self._grace = False, None, True

    @contextlib.contextmanager
    def abortable(self) -> Iterator[None]:
        """While the block runs, an abort (a second signal, the grace period over) raises
        :class:`Interrupted` in it."""
        self._abortable = True
        try:
            yield
        finally:
            self._abortable = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        last_signum, last_at = self._last or (None, -SAME_REQUEST_S)
        if signum != signal.SIGINT and signum == last_signum and now - last_at < SAME_REQUEST_S:
            return  # the same request (see SAME_REQUEST_S): not a second one
        self._last = (signum, now)
        if signum == signal.SIGHUP:
            _leave_the_terminal(self._ttys)
        first = self.signum is None
        if first:
            self.signum = signum
        if self._on_signal is not None:
            self._on_signal(signum, first)
        label = signal_label(signum)
        if first and self._finishing:
            if not self._grace or signum == signal.SIGINT:
                return
            if self.grace_s > 0:
                if signal.SIGALRM not in self._old:  # taken only when needed
                    self._old[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._grace_over)
                signal.setitimer(signal.ITIMER_REAL, self.grace_s)
                return
            self._abort(f"aborted by {label} ({GRACE_ENV}=0: no grace period)")
            return
        self._abort(f"aborted by a second {label}" if not first else f"interrupted by {label}")

    def _grace_over(self, signum: int, frame: FrameType | None) -> None:
        if not self._finishing or self.signum is None:
            return  # the timer of a block that ended meanwhile
        self._abort(
            f"aborted: still running {self.grace_s:g}s after {signal_label(self.signum)} "
            f"(the grace period, {GRACE_ENV})"
        )

    def _abort(self, reason: str) -> None:
        if self._finishing and not self._abortable:
            return  # between steps: the work sees ``requested`` and ends there
        assert self.signum is not None
        raise Interrupted(self.signum, reason)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _leave_the_terminal(ttys: tuple[int, ...]) -> None:
    """After SIGHUP the terminal is most likely gone, and every write to it would fail (EIO)
    wherever the process prints next: what it prints to the terminal (``ttys``: stdout and
    stderr where they were one at ``install``; a hung-up terminal is no tty any more) goes
    to /dev/null instead, as under ``nohup``. Output to a file or pipe stays."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in ttys:
            with contextlib.suppress(OSError):
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)
