"""Tiny image folders for tests (Pillow is in [dev]: a missing install fails, never skips) and
the edgeopt command run in a subprocess as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("circle", "square", "stripe")
REPO = Path(__file__).resolve().parents[1]


def band_folder(
    root: Path,
    counts: dict[str, int],
    size: int = 20,
    rgb: bool = False,
    classes: tuple[str, ...] = CLASSES,
) -> Path:
    """``root/<split>/<class>/k.png`` with ``counts[split]`` images per class: class c is a
    bright band at rows 5c+2..5c+7 over seeded noise (learnable, and the same every call)."""
    rng = np.random.default_rng(0)
    for split, n in counts.items():
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                px = rng.integers(0, 60, (size, size), dtype=np.uint8)
                px[5 * c + 2 : 5 * c + 7, :] = 220
                img = np.dstack([px] * 3) if rgb else px
                Image.fromarray(img).save(folder / f"{k:03d}.png")
    return root


def run_edgeopt(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``edgeopt ARGS`` in a subprocess (from ``cwd``), one OpenMP thread, output captured."""
    return subprocess.run(
        [sys.executable, "-c", "from edgeopt.cli import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
