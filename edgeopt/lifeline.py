"""Child processes that never outlive their parent, and leave stopping to it.

A search's worker processes, each worker's trial child and every timing child run in
sessions of their own (a Ctrl-C in the terminal reaches only the search, which decides what
to stop), so nothing would end them when their parent is killed (``kill -9``, the OOM
killer): they would compute on as orphans. Each calls :func:`die_with_parent` first thing;
on Linux the kernel then sends it SIGKILL when its parent ends. Each also calls
:func:`ignore_stop_signals`: a service manager signals every process of a group at once,
and a child that died of that SIGTERM would turn a trial that its parent lets finish into a
failure. Standard library only (the timing child imports it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when ``parent_pid``, its parent, ends (Linux;
    elsewhere only the check below), and end now if that already happened.

    The parent is the thread that started this process: start children from a thread
    that outlives them (the main thread)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl in this libc: the check below still runs
            pass
    # the parent may have died before prctl: then no signal comes, and this process has
    # been handed to init (or a subreaper)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


def ignore_stop_signals() -> None:
    """Ignore SIGINT, SIGTERM and SIGHUP: the parent finishes or kills this process."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


@contextlib.contextmanager
def stop_signals_ignored_by_children() -> Iterator[None]:
    """Start processes in this block with SIGINT, SIGTERM and SIGHUP ignored from their first
    instruction (a spawned Python keeps an inherited SIG_IGN): a Ctrl-C in the terminal,
    which reaches the whole process group, then cannot interrupt a child while it is still
    unpickling its arguments (a traceback on the terminal) before it could call
    :func:`ignore_stop_signals`. This process's own handlers are back on leaving the block;
    outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in signums}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
