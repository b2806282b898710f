"""Build an image-folder data set of rendered digits: real JPEGs at real resolution.

Source: scikit-learn's handwritten digits (1,797 8x8 images that ship inside the scikit-learn
package; nothing is downloaded). They are split 60/20/20 per class under ``--seed`` BEFORE
rendering, so no source digit appears in two splits. Each split is then rendered
``--train``/``--val``/``--test`` times (several renders per source digit, each with its own
draws, classes balanced): a ``--size`` x ``--size`` RGB image whose background is a random
crop (scale, position, flip) of scikit-learn's bundled ``china.jpg``/``flower.jpg`` or a
random two-colour gradient with noise; the digit upscaled (bilinear) to 70-180 px (at 224),
rotated up to 15 degrees, placed anywhere, in a random colour whose luminance differs from
the background under it by at least 0.35; saved as JPEG of quality 80-95.

Layout (torchvision's ImageFolder): ``OUT/{train,val,test}/<0..9>/<n>.jpg``, plus
``OUT/manifest.json`` naming each file's source digit (its index in ``load_digits()``).
Deterministic: the same seed gives the same bytes, whatever ``--workers``, and a bigger
build starts with a smaller one's files (render ``i`` depends only on the seed, split and ``i``).

    python models/build_digits_folder.py                          # models/digits_folder/
    python models/build_digits_folder.py --out /tmp/d --contact-sheet models/digits_folder.png
    python models/build_digits_folder.py --train 50000 --out /tmp/digits50k
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
OUT = HERE / "digits_folder"
SPLITS = ("train", "val", "test")
FRACTIONS = (0.6, 0.2, 0.2)
CLASSES = 10
DIGIT_PX = (70, 180)  # digit side at size 224; scaled with --size
MAX_ANGLE = 15.0
OPAQUE = 10.0  # digit value (of 16) from which the stroke hides the background
MIN_CONTRAST = 0.35  # luminance difference, 0..1
JPEG_QUALITY = (80, 95)
LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # Rec. 709 weights

Job = tuple[int, int, int, str]  # split number, render index, source digit, output path


@dataclass(frozen=True)
class Setup:
    """What every render needs: the 8x8 digits (0..16), the background photos, the image
    side, the seed and the output folder."""

    digits: np.ndarray
    photos: list[np.ndarray]
    size: int
    seed: int
    out: Path


_SETUP: list[Setup] = []  # this process's one Setup (set by _init in each worker)


def split_sources(labels: np.ndarray, seed: int) -> dict[str, list[np.ndarray]]:
    """Per split, per class, the source indices (seeded permutation of each class, cut
    60/20/20): the split happens before any rendering, so the splits share no digit."""
    rng = np.random.default_rng([seed, 0])
    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in range(CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train = round(FRACTIONS[0] * len(idx))
        n_val = round(FRACTIONS[1] * len(idx))
        out["train"].append(idx[:n_train])
        out["val"].append(idx[n_train : n_train + n_val])
        out["test"].append(idx[n_train + n_val :])
    return out


def plan(labels: np.ndarray, counts: dict[str, int], seed: int) -> list[Job]:
    """Every render: render ``i`` of a split draws class ``i % 10`` and cycles through that
    class's sources of the split, so classes are balanced and each source is used
    ``count / sources`` times (give or take one)."""
    sources = split_sources(labels, seed)
    jobs: list[Job] = []
    for s, split in enumerate(SPLITS):
        for i in range(counts[split]):
            c = i % CLASSES
            per_class = sources[split][c]
            src = int(per_class[(i // CLASSES) % len(per_class)])
            jobs.append((s, i, src, f"{split}/{c}/{i:06d}.jpg"))
    return jobs


def _background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    """size x size x 3 float32: a random crop of a bundled photo, or a gradient with noise."""
    if rng.random() < 0.5:
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape[:2]
        side = int(rng.uniform(0.25, 1.0) * min(h, w))
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        img = Image.fromarray(photo[y : y + side, x : x + side])
        img = img.resize((size, size), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(img, dtype=np.float32)
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    cos, sin = math.cos(angle), math.sin(angle)
    t = (ramp[None, :] * cos + ramp[:, None] * sin) / (abs(cos) + abs(sin)) + 0.5
    noise = rng.normal(0.0, rng.uniform(2.0, 12.0), (size, size, 3)).astype(np.float32)
    return c0 + t[..., None] * (c1 - c0) + noise


def render(
    rng: np.random.Generator, digit: np.ndarray, photos: list[np.ndarray], size: int
) -> tuple[Image.Image, int]:
    """One image of an 8x8 ``digit`` (values 0..16) and the JPEG quality to save it at."""
    bg = _background(rng, photos, size)
    angle = rng.uniform(-MAX_ANGLE, MAX_ANGLE)
    side = int(rng.uniform(*DIGIT_PX) * size / 224)
    rad = math.radians(abs(angle))
    side = max(8, min(side, int((size - 2) / (math.cos(rad) + math.sin(rad)))))
    # strokes of 10/16 and more are opaque: the sparse 8x8 values would otherwise leave
    # half-transparent digits that vanish on busy backgrounds
    mask = Image.fromarray(np.round(np.clip(digit / OPAQUE, 0, 1) * 255).astype(np.uint8))
    mask = mask.resize((side, side), Image.Resampling.BILINEAR)
    mask = mask.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    alpha = np.asarray(mask, dtype=np.float32)[:size, :size, None] / 255.0
    mh, mw = alpha.shape[:2]
    y, x = int(rng.integers(size - mh + 1)), int(rng.integers(size - mw + 1))
    region = bg[y : y + mh, x : x + mw]
    under = float((region @ LUMA * alpha[..., 0]).sum() / max(alpha.sum(), 1e-6)) / 255.0
    for _ in range(32):
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        if abs(float(colour @ LUMA) / 255.0 - under) >= MIN_CONTRAST:
            break
    else:  # no random draw was far enough: black or white, whichever is farther
        colour = np.full(3, 0.0 if under > 0.5 else 255.0, dtype=np.float32)
    bg[y : y + mh, x : x + mw] = region * (1.0 - alpha) + colour * alpha
    img = Image.fromarray(np.clip(np.round(bg), 0, 255).astype(np.uint8))
    return img, int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))


def _init(setup: Setup) -> None:
    _SETUP[:] = [setup]


def _work(job: Job) -> None:
    """Render one job with its own generator (seed, split, index): the bytes depend on
    nothing else, so any number of workers in any order write the same files."""
    s, i, src, rel = job
    setup = _SETUP[0]
    rng = np.random.default_rng([setup.seed, 1 + s, i])
    img, quality = render(rng, setup.digits[src], setup.photos, setup.size)
    img.save(setup.out / rel, "JPEG", quality=quality)


def contact_sheet(out: Path, path: Path, per_class: int = 2, thumb: int = 96) -> None:
    """A PNG of the first ``per_class`` training images of each class, one column per class
    (palette-quantized so it stays small enough to commit)."""
    gap = 2
    sheet = Image.new(
        "RGB", (CLASSES * (thumb + gap) + gap, per_class * (thumb + gap) + gap), "white"
    )
    for c in range(CLASSES):
        files = sorted((out / "train" / str(c)).glob("*.jpg"))[:per_class]
        for r, f in enumerate(files):
            with Image.open(f) as im:
                small = im.convert("RGB").resize((thumb, thumb), Image.Resampling.BILINEAR)
            sheet.paste(small, (gap + c * (thumb + gap), gap + r * (thumb + gap)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG
    ).save(path, optimize=True)


def _prepare(out: Path) -> None:
    """Empty ``out`` of an earlier build (one with a manifest); refuse any other content."""
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            sys.exit(
                f"error: {out} is not empty and holds no manifest.json from this script; "
                "give a new or empty --out"
            )
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
        (out / "manifest.json").unlink()
    for split in SPLITS:
        for c in range(CLASSES):
            (out / split / str(c)).mkdir(parents=True, exist_ok=True)


def _du_mb(out: Path) -> float:
    return sum(p.stat().st_blocks * 512 for p in out.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    parser.add_argument("--train", type=int, default=5000, help="training images (5000)")
    parser.add_argument("--val", type=int, default=1000, help="validation images (1000)")
    parser.add_argument("--test", type=int, default=1000, help="test images (1000)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (224)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)), help="processes (all CPUs)"
    )
    parser.add_argument(
        "--contact-sheet", type=Path, default=None, metavar="PNG", help="also write 20 thumbnails"
    )
    args = parser.parse_args()
    counts = {"train": args.train, "val": args.val, "test": args.test}
    if min(counts.values()) < CLASSES or args.size < 32 or args.workers < 1:
        parser.error("each split needs at least 10 images, --size at least 32, --workers >= 1")

    from sklearn.datasets import load_digits, load_sample_images

    t0 = time.perf_counter()
    digits = load_digits()
    photos = [np.ascontiguousarray(p) for p in load_sample_images().images]
    jobs = plan(digits.target, counts, args.seed)
    out = args.out.resolve()
    _prepare(out)
    setup = Setup(digits.images.astype(np.float32), photos, args.size, args.seed, out)
    if args.workers == 1:
        _init(setup)
        for job in jobs:
            _work(job)
    else:
        with Pool(args.workers, initializer=_init, initargs=(setup,)) as pool:
            for _ in pool.imap_unordered(_work, jobs, chunksize=64):
                pass
    manifest = {
        "source": "sklearn.datasets.load_digits",
        "seed": args.seed,
        "size": args.size,
        "counts": counts,
        "classes": [str(c) for c in range(CLASSES)],
        "source_digits": {
            split: sorted(int(i) for a in src for i in a)
            for split, src in split_sources(digits.target, args.seed).items()
        },
        "files": {rel: src for _, _, src, rel in jobs},
    }
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=0) + "\n")
    tmp.replace(out / "manifest.json")  # written last: its presence means a complete build
    seconds = time.perf_counter() - t0
    print(
        f"wrote {len(jobs)} images ({', '.join(f'{k} {v}' for k, v in counts.items())}) at "
        f"{args.size}x{args.size} to {out} in {seconds:.1f} s with {args.workers} "
        f"worker(s), {_du_mb(out):.0f} MB on disk"
    )
    if args.contact_sheet is not None:
        contact_sheet(out, args.contact_sheet)
        print(f"contact sheet: {args.contact_sheet}")


if __name__ == "__main__":
    main()
