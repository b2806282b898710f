"""models/build_digits_folder.py: the rendered digits image folder (issue 24's benchmark data),
built for real in a subprocess with tiny counts: layout, splits that share no source digit,
the same bytes for the same seed whatever the worker count, and JPEGs Pillow decodes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "models" / "build_digits_folder.py"
COUNTS = {"train": 20, "val": 10, "test": 10}
SIZE = 64


def _build(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [f"--{k}={v}" for k, v in COUNTS.items()]
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--size", str(SIZE), *args, *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.jpg")}


def test_layout_splits_determinism_and_decoding(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for out, workers in ((one, "1"), (two, "2")):
        done = _build(out, "--workers", workers, "--seed", "3")
        assert done.returncode == 0, done.stderr
        assert f"wrote 40 images (train 20, val 10, test 10) at {SIZE}x{SIZE}" in done.stdout

    files = _files(one)
    assert files == _files(two)  # same seed: same bytes, with 1 worker or 2
    for split, n in COUNTS.items():
        assert sorted(p.name for p in (one / split).iterdir()) == [str(c) for c in range(10)]
        for c in range(10):  # classes balanced
            assert len(list((one / split / str(c)).glob("*.jpg"))) == n // 10

    manifest = json.loads((one / "manifest.json").read_text())
    assert set(manifest["files"]) == set(files)
    assert (manifest["seed"], manifest["size"], manifest["counts"]) == (3, SIZE, COUNTS)
    labels = load_digits().target
    split_of: dict[int, str] = {}
    for split, sources in manifest["source_digits"].items():
        for i in sources:
            assert split_of.setdefault(i, split) == split  # no source digit in two splits
    assert sorted(split_of) == list(range(len(labels)))  # 60/20/20 of all 1,797
    sizes = {s: len(v) for s, v in manifest["source_digits"].items()}
    assert abs(sizes["train"] - 0.6 * len(labels)) <= 10, sizes
    assert abs(sizes["val"] - 0.2 * len(labels)) <= 10, sizes
    for rel, src in manifest["files"].items():
        split, label, _ = rel.split("/")
        assert split_of[src] == split and str(labels[src]) == label
    used = {s: {src for r, src in manifest["files"].items() if r.startswith(s)} for s in COUNTS}
    assert not (used["train"] & used["val"] or used["train"] & used["test"])
    assert not used["val"] & used["test"]

    for rel in files:
        with Image.open(one / rel) as im:
            im.load()  # decodes the whole file
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (SIZE, SIZE))
            assert np.asarray(im).std() > 5  # a picture, not a blank


def test_other_seed_other_images_and_rebuild_in_place(tmp_path: Path) -> None:
    out = tmp_path / "d"
    assert _build(out, "--workers", "1").returncode == 0
    first = _files(out)
    done = _build(out, "--workers", "1", "--seed", "1")  # replaces its own earlier build
    assert done.returncode == 0, done.stderr
    second = _files(out)
    assert set(second) == set(first) and all(second[k] != first[k] for k in first)
    bigger = tmp_path / "bigger"
    assert _build(bigger, "--workers", "1", "--train=30").returncode == 0
    more = _files(bigger)  # the first 20 training renders are the 20-image build's
    assert len(more) == len(first) + 10 and all(more[k] == first[k] for k in first)


def test_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    done = _build(tmp_path, "--workers", "1")
    assert done.returncode != 0
    assert "not empty" in done.stderr and "--out" in done.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_committed_contact_sheet_is_small() -> None:
    sheet = REPO / "models" / "digits_folder.png"
    assert sheet.stat().st_size < 200_000
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.size[0] > 2 * im.size[1]  # 10 columns, 2 rows
