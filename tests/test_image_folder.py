"""Image folders as a data source: tiny real PNG/JPEG folders written here with Pillow (from the
dev extra: never skipped), both layouts, the seeded stratified split, every way a folder cannot
be a data set (ConfigError, exit 2), unreadable files skipped and named, and decoding on demand.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeopt.data import images
from edgeopt.data.folder import FolderSource
from edgeopt.data.folder_scan import BadImage, SplitRatio
from edgeopt.data.preprocess import Channels, Preprocess
from edgeopt.errors import ConfigError

GRAY = Preprocess((8, 8), None, (0.0,), (1.0,), Channels.GRAY, scale=1.0)
"""x = the raw pixel value, so a test can read back which file it got."""


def _write(root: Path, layout: dict[str, int], *, suffix: str = ".png", rgb: bool = False) -> None:
    """``layout``: "class" or "split/class" -> image count. Image k of class c (its index in
    sorted class order) is a flat 12 x 10 picture of value 10 * c + k."""
    names = sorted({k.split("/")[-1] for k in layout})
    for key, n in layout.items():
        folder = root / key
        folder.mkdir(parents=True, exist_ok=True)
        c = names.index(key.split("/")[-1])
        for k in range(n):
            value = np.full((10, 12), 10 * c + k, np.uint8)
            pixels = np.dstack([value] * 3) if rgb else value
            Image.fromarray(pixels).save(folder / f"{k:02d}{suffix}", quality=95)


def _value_label(x: np.ndarray) -> np.ndarray:
    return (np.round(x.reshape(len(x), -1).mean(axis=1)) // 10).astype(np.int64)


class CountingReader:
    """The default reader (a file's uint8 view), counting the files it decodes (a fake
    passed in)."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def __call__(self, path: Path, recipe: Preprocess) -> np.ndarray:
        self.paths.append(path)
        return images.read_view(path, recipe)


def test_split_layout_classes_counts_and_labels(tmp_path: Path) -> None:
    _write(tmp_path, {"train/cat": 3, "train/dog": 2, "val/cat": 1, "val/dog": 2})
    _write(tmp_path, {"test/cat": 1, "test/dog": 1})
    (tmp_path / "train/cat/notes.txt").write_text("not an image")
    (tmp_path / "train/dog/.DS_Store").write_bytes(b"\0")
    _write(tmp_path / "train", {".ipynb_checkpoints": 1})  # hidden: not a class
    src = FolderSource(tmp_path, GRAY)
    assert src.class_names == ("cat", "dog") and src.num_classes == 2
    assert src.splits == ("train", "val", "test")
    assert [src.count(s) for s in src.splits] == [5, 3, 2]
    assert src.labels("train").tolist() == [0, 0, 0, 1, 1]
    assert src.labels("val").tolist() == [0, 1, 1]
    assert src.files("val") == ["val/cat/00.png", "val/dog/00.png", "val/dog/01.png"]
    assert src.input_shape == (1, 8, 8) and src.max_label() == ("train", 1)
    d = src.describe()
    assert d["layout"] == "splits" and d["split"] is None and d["ignored_files"] == 2
    assert d["class_counts"] == {"train": [3, 2], "val": [1, 2], "test": [1, 1]}
    assert d["bad_images"] == {"count": 0, "first": []}
    assert d["recipe"] == GRAY.to_dict() and len(d["fingerprint"]) == 64
    x, y = next(src.batches("val", batch=8))
    assert x.shape == (3, 1, 8, 8) and x.dtype == np.float32
    assert x.reshape(3, -1).mean(axis=1).tolist() == [0.0, 10.0, 11.0]
    assert y.tolist() == [0, 1, 1]


def test_rgb_jpeg_folder(tmp_path: Path) -> None:
    _write(tmp_path, {"train/a": 2, "train/b": 2, "val/a": 1, "val/b": 1}, suffix=".JPG", rgb=True)
    src = FolderSource(tmp_path, Preprocess.default_for((3, 8, 8)))
    x, y = src.subset("train", 4, seed=0)
    assert x.shape == (4, 3, 8, 8) and sorted(y.tolist()) == [0, 0, 1, 1]


def test_ratio_split_is_exact_stratified_stable_and_recorded(tmp_path: Path) -> None:
    _write(tmp_path, {"a": 10, "b": 23, "c": 7})
    src = FolderSource(tmp_path, GRAY)
    # per class val = test = max(1, floor(n * 0.1 + 0.5)), train the rest
    assert src.describe()["class_counts"] == {
        "train": [8, 19, 5],
        "val": [1, 2, 1],
        "test": [1, 2, 1],
    }
    assert src.describe()["split"] == {"train": 0.8, "val": 0.1, "test": 0.1, "seed": 0}
    assert src.describe()["layout"] == "ratio"
    every = sorted(f for s in src.splits for f in src.files(s))
    assert every == sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    again = FolderSource(tmp_path, GRAY)
    assert all(again.files(s) == src.files(s) for s in src.splits)
    assert again.fingerprint() == src.fingerprint()
    other = FolderSource(tmp_path, GRAY, SplitRatio(seed=1))
    assert other.describe()["class_counts"] == src.describe()["class_counts"]
    assert other.files("val") != src.files("val")
    assert other.describe()["split"]["seed"] == 1
    assert other.fingerprint() != src.fingerprint()
    no_test = FolderSource(tmp_path, GRAY, SplitRatio(val=0.2, test=0.0))
    assert no_test.splits == ("train", "val")
    assert no_test.describe()["class_counts"] == {"train": [8, 18, 6], "val": [2, 5, 1]}
    assert SplitRatio.from_dict(no_test.describe()["split"]) == SplitRatio(0.2, 0.0, 0)


def test_fingerprint_follows_the_bytes(tmp_path: Path) -> None:
    _write(tmp_path, {"train/a": 2, "train/b": 2, "val/a": 1, "val/b": 1})
    before = FolderSource(tmp_path, GRAY)
    assert before.fingerprint_basis == "names, sizes and bytes of all 6 files"
    fingerprint = before.fingerprint()
    f = tmp_path / "val/b/00.png"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF  # same size, same name: only the bytes differ
    f.write_bytes(bytes(data))
    assert FolderSource(tmp_path, GRAY).fingerprint() != fingerprint


def test_subset_is_seeded_of_fixed_size_and_equals_its_batches(tmp_path: Path) -> None:
    _write(tmp_path, {"train/a": 6, "train/b": 6, "val/a": 2, "val/b": 2})
    src = FolderSource(tmp_path, GRAY)
    x, y = src.subset("train", 5, seed=3)
    assert x.shape == (5, 1, 8, 8) and y.shape == (5,) and y.dtype == np.int64
    assert np.array_equal(_value_label(x), y)  # each image came with its own label
    x2, y2 = src.subset("train", 5, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x3, _ = src.subset("train", 5, seed=4)
    assert not np.array_equal(x, x3)
    parts = list(src.batches("train", n=5, seed=3, batch=2))
    assert [len(p[1]) for p in parts] == [2, 2, 1]
    assert np.array_equal(np.concatenate([p[0] for p in parts]), x)
    assert src.subset("val", 100, seed=0)[0].shape == (4, 1, 8, 8)  # n past the split: all


def test_batches_decode_lazily(tmp_path: Path) -> None:
    _write(tmp_path, {"train/a": 7, "train/b": 6, "val/a": 1, "val/b": 1})
    reader = CountingReader()
    src = FolderSource(tmp_path, GRAY, reader=reader)
    assert reader.paths == []  # opening reads headers only
    it = src.batches("train", batch=4)
    assert isinstance(it, Iterator) and reader.paths == []
    x, y = next(it)
    assert len(reader.paths) == 4 and x.shape == (4, 1, 8, 8)
    rest = list(it)
    assert len(reader.paths) == 13
    ys = np.concatenate([y] + [b[1] for b in rest])
    assert ys.tolist() == src.labels("train").tolist()
    assert [len(b[1]) for b in rest] == [4, 4, 1]


def test_one_corrupt_of_40_is_skipped_and_named(tmp_path: Path) -> None:
    _write(tmp_path, {"a": 20, "b": 20})
    (tmp_path / "b/07.png").write_bytes(b"this is no image" * 10)
    src = FolderSource(tmp_path, GRAY)
    assert src.bad_images == [BadImage("b/07.png", "not a JPEG or PNG image")]
    assert sum(src.count(s) for s in src.splits) == 39
    assert all("b/07.png" not in src.files(s) for s in src.splits)
    assert src.describe()["bad_images"] == {
        "count": 1,
        "first": ["b/07.png (not a JPEG or PNG image)"],
    }
    assert src.describe()["class_counts"]["train"] == [16, 15]


def test_truncated_file_found_when_decoded_is_skipped_and_the_size_holds(tmp_path: Path) -> None:
    _write(tmp_path, {"train/a": 4, "train/b": 4, "val/a": 1, "val/b": 1}, suffix=".jpg")
    bad = tmp_path / "train/b/02.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(bad, quality=90)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # the header survives
    src = FolderSource(tmp_path, GRAY)
    assert src.count("train") == 8 and src.bad_images == []
    x, y = src.subset("train", 7, seed=0)
    assert x.shape == (7, 1, 8, 8) and np.array_equal(_value_label(x), y)
    (found,) = src.bad_images
    assert found.relpath == "train/b/02.jpg" and "truncated" in found.reason
    assert sum(len(b[1]) for b in src.batches("train", batch=3)) == 7


def _many_corrupt(root: Path) -> None:
    _write(root, {"a": 5, "b": 5})
    for k in (1, 2, 3):
        (root / f"a/{k:02d}.png").write_bytes(b"garbage")


def _layout(layout: dict[str, int]) -> Callable[[Path], None]:
    return lambda root: _write(root, layout)


def _val_without_classes(root: Path) -> None:
    _write(root, {"train/a": 2, "train/b": 2})
    (root / "val").mkdir()


def _empty_class(root: Path) -> None:
    _write(root, {"train/a": 2, "train/b": 2, "val/a": 1, "val/b": 1})
    shutil.rmtree(root / "val/b")
    (root / "val/b").mkdir()
    (root / "val/b/readme.txt").write_text("no images here")


def _class_all_unreadable(root: Path) -> None:
    _write(root, {"train/a": 20, "train/b": 20, "val/a": 20, "val/b": 1})
    (root / "val/b/00.png").write_bytes(b"garbage")


def _just_a_file(root: Path) -> None:
    (root / "x.png").write_bytes(b"")


CASES: list[tuple[str, Callable[[Path], None], str, dict]] = [
    ("no class folders", _just_a_file, "has no class folders", {}),
    ("empty split", _val_without_classes, "the val split", {}),
    ("empty class", _empty_class, "class folder(s) b in", {}),
    (
        "class missing from val",
        _layout({"train/a": 2, "train/b": 2, "train/c": 1, "val/a": 1, "val/b": 1}),
        "the val split of",
        {},
    ),
    (
        "class only in val",
        _layout({"train/a": 2, "val/a": 1, "val/z": 1}),
        "has z that train/ lacks",
        {},
    ),
    ("no val", _layout({"train/a": 2, "train/b": 2}), "has train/ but not both", {}),
    (
        "other folder",
        _layout({"train/a": 1, "val/a": 1, "extra/a": 1}),
        "and also extra/",
        {},
    ),
    (
        "ratio on a split folder",
        _layout({"train/a": 1, "val/a": 1}),
        "already split into train, val",
        {"split": SplitRatio()},
    ),
    ("too few to split", _layout({"a": 5, "b": 2}), "class b has 2 readable image(s)", {}),
    ("3 of 10 unreadable", _many_corrupt, "3 of 10 images in", {}),
    ("class all unreadable", _class_all_unreadable, "hold no readable images", {}),
]


@pytest.mark.parametrize(
    ("setup", "message", "kwargs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_folders_that_cannot_be_data_sets(
    tmp_path: Path, setup: Callable[[Path], None], message: str, kwargs: dict
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    setup(root)
    reader = CountingReader()
    with pytest.raises(ConfigError) as e:
        FolderSource(root, GRAY, reader=reader, **kwargs)
    assert message in e.value.message and e.value.exit_code == 2 and e.value.hint
    assert reader.paths == []  # refused before any pixel was decoded
    if setup is _many_corrupt:
        assert "a/01.png (not a JPEG or PNG image)" in e.value.message
        assert "over the 5% allowed" in e.value.message


def test_not_a_folder_and_bad_ratios(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        FolderSource(tmp_path / "missing", GRAY)
    for val, test in [(0.0, 0.1), (0.5, 0.5), (-0.1, 0.1), (0.1, 1.2)]:
        with pytest.raises(ConfigError, match="is not a split"):
            SplitRatio(val, test)
    with pytest.raises(ConfigError, match="train 0.5 is not 1 - val - test"):
        SplitRatio.from_dict({"train": 0.5, "val": 0.1, "test": 0.1, "seed": 0})
