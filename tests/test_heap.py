"""Freed heap memory goes back to the system when asked: a real process (its own, so its
heap is clean) that frees 200 MB of small blocks kept below a live one, then calls
``release_free_memory`` (the search's set-up does after its probes)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = """
import numpy as np, psutil
from edgeopt.heap import release_free_memory

def rss():
    return psutil.Process().memory_info().rss
blocks = [np.ones(512) for _ in range(50_000)]  # 4 KiB each, from the heap
pin = np.ones(512)  # above them: the heap cannot shrink from its top by itself
before = rss()
del blocks
freed = rss()
assert release_free_memory()
print(before - freed, before - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_memory_returns_to_the_system() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True
    )
    kept_after_free, returned = (int(v) for v in done.stdout.split())
    # the allocator kept most of the 200 MB after the free, and handed it back when asked
    assert kept_after_free < 100 << 20, kept_after_free
    assert returned > 150 << 20, returned
