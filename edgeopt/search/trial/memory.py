"""How a trial child ran out of memory or died: its resident memory (the watchdog for CUDA
children, which cannot run under RLIMIT_AS) and why it ended without answering."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import psutil

from edgeopt.search.trial.protocol import FailureKind

# how running out of address space under RLIMIT_AS shows up in Python, torch and the loader
_OOM_SIGNS = (
    "memoryerror",
    "out of memory",
    "cannot allocate memory",
    "failed to map segment",
    "bad_alloc",
    "defaultcpuallocator: can't allocate",
)


RSS_POLL_S = 0.5
"""How often the memory watchdog reads a child's resident memory."""


def tree_rss_gib(pid: int) -> float:
    """Resident memory of process ``pid`` and all its children, in GiB (0 once it is gone).
    Forked children share pages with their parent, so this can only over-count."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**30


def kernel_oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed since boot (``oom_kill`` in
    /proc/vmstat, cgroup OOM kills included); None where that is not readable."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def death_reason(
    trial_dir: Path, code: int | None, memory_gb: float, by_kernel: bool | None
) -> tuple[str, FailureKind]:
    """Why a child ended without answering, from its exit code, the trial log's tail and
    whether the kernel's OOM killer acted meanwhile (``by_kernel``; None: unknown)."""
    tail = (trial_dir / "trial.log").read_text(errors="replace").strip().splitlines()[-3:]
    text = " ".join(tail)
    if any(sign in text.lower() for sign in _OOM_SIGNS):
        return (
            f"exceeded the memory cap of {memory_gb:g} GiB (--trial-memory-gb)",
            FailureKind.MEMORY,
        )
    if code == -signal.SIGKILL and by_kernel is False:
        # not the memory cap (that fails allocations), not the OOM killer: someone killed it,
        # which says nothing about the config, so later trials may draw it again
        return (
            "the trial process was killed from outside (SIGKILL; the kernel's OOM killer did "
            "not act)",
            FailureKind.ERROR,
        )
    if code == -signal.SIGKILL and by_kernel:
        return (
            "the trial process was killed by the kernel's OOM killer: the machine ran out of "
            "memory (lower --trial-memory-gb or --workers)",
            FailureKind.MEMORY,
        )
    if code == -signal.SIGKILL:
        return (
            "the trial process was killed (SIGKILL): out of memory under the memory cap of "
            f"{memory_gb:g} GiB (--trial-memory-gb), or killed from outside",
            FailureKind.MEMORY,
        )
    return f"worker exited with code {code}: {tail[-1] if tail else 'no output'}", FailureKind.ERROR
