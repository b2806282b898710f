"""Work that loads OpenVINO, LiteRT or a converter (litert-torch's JAX, ai-edge-quantizer,
onnxruntime's ORT-format tool) runs in a child process, never in edgeopt's own.

Those libraries bring native thread pools (OpenVINO's TBB, JAX, LiteRT's XNNPACK) that did
not survive next to edgeopt's own work in one process: a Ctrl-C during the final pass, the
first LiteRT interpreter after OpenVINO, ORT's format tool after it and forked DataLoader
workers each crashed the process with a segmentation fault. So every conversion and every
scoring in such a runtime is a call into a :class:`RuntimeChild`: one process started with
the *spawn* method (a fresh interpreter, nothing inherited but the environment) by the
standard library's ``ProcessPoolExecutor`` (one worker), reused for a batch of work (one
candidate's conversions and scores, a final pass) and given back plain data (paths, numpy
arrays, floats) or the exception it raised.

The child ignores the stop signals (a Ctrl-C in the terminal reaches the whole process
group; this process decides, and kills the child when it stops), dies with this process
(``edgeopt.lifeline``) and runs its libraries on ``threads`` threads. A child that dies
(a segmentation fault, the OOM killer) is a :class:`ChildDied` naming the signal, an
error of that call, not a crash of edgeopt. Standard library only.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextvars import ContextVar
from typing import Any, TypeVar

from edgeopt.lifeline import die_with_parent, ignore_stop_signals, stop_signals_ignored_by_children

T = TypeVar("T")

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""Environment variables that set the libraries' default thread counts in the child."""


class ChildDied(RuntimeError):
    """The runtime child ended without an answer: ``exitcode`` is its exit status (a negative
    number: killed by that signal, e.g. -11 for SIGSEGV, -9 for SIGKILL by the OOM killer)."""

    def __init__(self, what: str, exitcode: int | None) -> None:
        super().__init__(f"{what}: the runtime's process died ({describe_exit(exitcode)})")
        self.what = what
        self.exitcode = exitcode

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what, self.exitcode))


def describe_exit(code: int | None) -> str:
    """``killed by SIGSEGV`` for a negative exit status, ``exit code N`` otherwise."""
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _start_child(parent_pid: int, threads: int) -> None:
    """The child's first code: die with the parent, leave stopping to it, set threads."""
    die_with_parent(parent_pid)
    ignore_stop_signals()
    for name in THREAD_VARIABLES:
        os.environ[name] = str(max(threads, 1))


class RuntimeChild:
    """One spawned process that runs ``call``s in turn (started at the first one), with
    ``threads`` threads for its libraries; ``close`` (or leaving the ``with`` block) ends
    it (kills it on a KeyboardInterrupt). The process that makes it must outlive it on the
    same thread (the child dies when the thread that started it ends:
    ``edgeopt.lifeline.die_with_parent``)."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._pool: ProcessPoolExecutor | None = None
        self._procs: list[multiprocessing.process.BaseProcess] = []

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` run in the child (``fn`` a module-level function, the
        arguments picklable); its exception re-raised here; ChildDied if the process died.
        Any other way out (a KeyboardInterrupt here) kills the child first."""
        what = getattr(fn, "__qualname__", repr(fn))
        try:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_child,
                    initargs=(os.getpid(), self.threads),
                )
            with stop_signals_ignored_by_children():  # the worker starts in submit
                future = self._pool.submit(fn, *args, **kwargs)
            self._procs = list(self._pool._processes.values())  # for the exit status
            return future.result()
        except BrokenProcessPool:
            procs = self._procs
            self.close(kill=True)
            codes = [p.exitcode for p in procs]
            raise ChildDied(what, next((c for c in codes if c), None)) from None
        except BaseException as exc:
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: stop it
                self.close(kill=True)
            raise

    def close(self, *, kill: bool = False) -> None:
        """End the child (if started) and wait for it: it exits between calls (its
        libraries clean up after themselves), or with ``kill`` it is killed at once."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:  # ProcessPoolExecutor has no public kill before Python 3.14 (kill_workers)
            for p in list(pool._processes.values()):
                with contextlib.suppress(OSError, AttributeError):
                    p.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> RuntimeChild:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.close(kill=kind is not None and not issubclass(kind, Exception))


_SHARED: ContextVar[RuntimeChild | None] = ContextVar("edgeopt_runtime_child", default=None)


@contextlib.contextmanager
def shared_runtime_child(threads: int = 1) -> Iterator[RuntimeChild]:
    """A :class:`RuntimeChild` that ``in_runtime_child`` calls in this block share (one
    start for a batch of work); an enclosing block's child is reused."""
    outer = _SHARED.get()
    if outer is not None:
        yield outer
        return
    with RuntimeChild(threads) as child:
        token = _SHARED.set(child)
        try:
            yield child
        finally:
            _SHARED.reset(token)


def in_runtime_child(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``RuntimeChild.call`` on the shared child of an enclosing ``shared_runtime_child``
    block, else on a child of its own for this one call."""
    shared = _SHARED.get()
    if shared is not None:
        return shared.call(fn, *args, **kwargs)
    with RuntimeChild() as child:
        return child.call(fn, *args, **kwargs)
