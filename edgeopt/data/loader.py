"""Training batches of a streamed source through ``torch.utils.data.DataLoader``, decoded by
worker processes while the model trains.

The batches are edgeopt's own: ``BatchLoader.epoch(batches)`` takes the seeded index lists
``fit`` draws (the loader's ``batch_sampler``) and yields each one's images in that order,
so the batches, and every result, are the same whatever the number of workers (0: decoded
in this process). Workers are forked (their parent may hold CUDA, which they never touch),
run one torch thread each, and stay alive between epochs and between the fine-tunes of one
trial child (``loader_for`` keeps one loader per source and split); they die with it (same
process group). The loader draws from a generator of its own, never from torch's global
stream, so a fine-tune's dropout and initialisation draws do not depend on the loader.

A process that has loaded a runtime whose native thread pool does not survive a fork
(``FORK_UNSAFE``: OpenVINO's TBB, JAX under litert-torch, the LiteRT interpreter) decodes in
the main process instead (0 workers: the same batches, only slower): forking it crashed the
parent with a segmentation fault when the forked workers were shut down. edgeopt itself
never loads them into its processes (``edgeopt.runtime_child``); this guards a program that
imported one before calling edgeopt.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch


FORK_UNSAFE = ("openvino", "jax", "litert_torch", "ai_edge_litert.interpreter")
"""Modules that, once imported, make forking this process unsafe (their thread pools;
``ai_edge_litert``'s flatbuffer schema alone, which ``tflite_facts`` reads, is plain Python)."""


def fork_safe() -> bool:
    """True while no ``FORK_UNSAFE`` module is loaded in this process."""
    return not any(name in sys.modules for name in FORK_UNSAFE)


class BatchSource(Protocol):
    """What the loader reads: ``take(split, indices)`` -> ``(x, y)`` numpy arrays (a file
    that cannot be read may be left out of a batch, with its label); ``count(split)``."""

    def take(self, split: str, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]: ...

    def count(self, split: str) -> int: ...


def auto_workers(cpus: int, devices: Sequence[str]) -> int:
    """``--data-workers auto``: one worker when every trial trains on the CPU and there are
    two or more usable cores, else 0. On the CPU the training step itself uses the cores
    (``--threads``): one process decoding the next batch meanwhile hides the decode time
    without taking more than a core from training; with one core it would only contend.
    With a GPU, 0 (decode in the trial child) keeps the plain path until a GPU measurement
    says how many workers pay (``--data-workers N`` sets any count)."""
    return 1 if cpus >= 2 and all(d == "cpu" for d in devices) else 0


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class _Plan:
    """The ``batch_sampler``: the index lists of the epoch being read."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Split:
    """One split of a source as a map-style Dataset that reads a whole batch at once."""

    def __init__(self, source: BatchSource, split: str) -> None:
        # weak: the loader (and its workers) live no longer than the source (``loader_for``);
        # a forked worker has its own copy of the source, alive as it was at the fork
        self.source, self.split = weakref.proxy(source), split

    def __len__(self) -> int:
        return self.source.count(self.split)

    def __getitems__(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.source.take(self.split, indices)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.source.take(self.split, [index])


def _tensors(batch: tuple[np.ndarray, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    x, y = batch
    return torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(y)


def _one_thread(_worker: int) -> None:
    import torch

    torch.set_num_threads(1)  # the trial child's threads train; a worker only decodes


class BatchLoader:
    """A DataLoader over ``split`` of ``source`` with ``workers`` worker processes, reading
    the index lists ``epoch`` is given. ``pin``: page-locked batches (for a CUDA device)."""

    def __init__(self, source: BatchSource, split: str, workers: int, pin: bool = False) -> None:
        import torch
        from torch.utils.data import DataLoader

        if workers < 0:
            raise ValueError(f"loader workers must be >= 0, not {workers}")
        if not fork_safe():
            workers = 0  # decoded here: the same batches (module doc)
        self.workers = workers
        self._plan = _Plan()
        many: dict[str, Any] = (
            {
                "worker_init_fn": _one_thread,
                "persistent_workers": True,
                "multiprocessing_context": "fork",
                "prefetch_factor": 2,
            }
            if workers
            else {}
        )
        self.loader = DataLoader(
            _Split(source, split),  # type: ignore[arg-type]
            batch_sampler=self._plan,
            num_workers=workers,
            collate_fn=_tensors,
            pin_memory=pin,
            generator=torch.Generator().manual_seed(0),  # not torch's global stream
            **many,
        )

    def epoch(self, batches: Sequence[torch.Tensor | Sequence[int]]) -> Iterator[Any]:
        """``(x, y)`` tensors of each of ``batches`` (index lists), in order."""
        self._plan.batches = [b.tolist() if hasattr(b, "tolist") else list(b) for b in batches]
        return iter(self.loader)


_LOADERS: weakref.WeakKeyDictionary[Any, dict[tuple[str, int, bool], BatchLoader]] = (
    weakref.WeakKeyDictionary()
)


def loader_for(source: BatchSource, split: str, workers: int, pin: bool = False) -> BatchLoader:
    """The loader of ``source``'s ``split``, made once per source: its workers persist for
    as long as the source (a trial child opens its data once) and stop when it is freed."""
    mine = _LOADERS.setdefault(source, {})
    key = (split, workers, pin)
    if key not in mine:
        mine[key] = BatchLoader(source, split, workers, pin)
    return mine[key]
