"""Streamed data read through a DataLoader and a bounded on-disk cache (issue 24 item 4):
loader workers change no result, a fine-tune records its time waiting for data, a cached
image is decoded once, the cache never grows past its size, and changed data is a new key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from band_images import band_folder, run_edgeopt
from PIL import Image  # in [dev]: a missing install fails, never skips

from edgeopt import zoo
from edgeopt.data import EVAL_SAMPLES, eval_batches
from edgeopt.data.cache import DataCache, cache_key, view_shape
from edgeopt.data.folder import FolderSource
from edgeopt.data.images import read_view
from edgeopt.data.loader import auto_workers, fork_safe
from edgeopt.data.preprocess import Preprocess
from edgeopt.data.source import EVAL_SEED
from edgeopt.training import TrainConfig, fit

GRAY16 = Preprocess.default_for((1, 16, 16))


class CountingReader:
    """The default reader (a file's uint8 view), counting the files it decodes (passed in)."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self, path: Path, recipe: Preprocess) -> np.ndarray:
        self.reads += 1
        return read_view(path, recipe)


def _cache(source: FolderSource, base: Path, capacity: int) -> DataCache | None:
    counts = {s: source.count(s) for s in source.splits}
    return DataCache.for_source(
        base,
        source.fingerprint(),
        source.recipe,
        counts,
        capacity,
        eval_samples=EVAL_SAMPLES,
        eval_seed=EVAL_SEED,
    )


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_fit_with_two_loader_workers_gives_the_weights_of_none(tmp_path: Path) -> None:
    data = band_folder(tmp_path / "shapes", {"train": 10, "val": 4}, classes=("c0", "c1", "c2"))
    config = TrainConfig(lr=0.05, epochs=2, batch_size=8)  # augmented: the gen draws too
    runs = []
    for workers in (0, 2):
        folder = FolderSource(data, GRAY16, loader_workers=workers)
        torch.manual_seed(0)
        model = zoo.plain_cnn(in_channels=1, num_classes=3, width=4)
        result = fit(model, folder, config, seed=3)
        runs.append((model.state_dict(), result))
        del folder  # its loader's worker processes stop with it
    (a, ra), (b, rb) = runs
    assert ra.history == rb.history and ra.epochs_run == 2
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ra.data_wait_s > 0 and rb.data_wait_s > 0  # both read a folder
    assert ra.data_wait_s < ra.seconds and rb.data_wait_s < rb.seconds


def test_a_second_scoring_pass_decodes_nothing(tmp_path: Path) -> None:
    data = band_folder(tmp_path / "shapes", {"train": 4, "val": 5}, classes=("c0", "c1", "c2"))
    reader = CountingReader()
    folder = FolderSource(data, GRAY16, reader=reader)
    folder.cache = _cache(folder, tmp_path / "run" / "cache" / "data", 1 << 20)
    first = list(eval_batches(folder, "val", batch=4))
    assert reader.reads == 15
    second = list(eval_batches(folder, "val", batch=4))
    assert reader.reads == 15  # every view came from the cache
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    # and the cached inputs are the decoded ones, bit for bit
    plain = FolderSource(data, GRAY16)
    for (x1, _), (x0, _) in zip(first, eval_batches(plain, "val", batch=4), strict=True):
        assert np.array_equal(x1, x0)


def test_the_cache_never_grows_past_its_size(tmp_path: Path) -> None:
    data = band_folder(
        tmp_path / "shapes", {"train": 6, "val": 3, "test": 3}, classes=("c0", "c1", "c2")
    )
    base = tmp_path / "run" / "cache" / "data"
    record = int(np.prod(view_shape(GRAY16)))  # 256 bytes: one 16x16 gray view
    probe = _cache(FolderSource(data, GRAY16), tmp_path / "probe", 1 << 20)
    assert probe is not None
    meta = (probe.directory / "meta.json").stat().st_size
    capacity = meta + 16 + 3 * (record + 1)  # the metadata and three records with their flags
    reader = CountingReader()
    folder = FolderSource(data, GRAY16, reader=reader)
    folder.cache = _cache(folder, base, capacity)
    assert folder.cache is not None and len(folder.cache.slots) == 3
    # the slots go to the val scoring subset first (3 images): val is read once, then never
    for _ in range(2):
        for split in ("val", "test", "train"):
            list(folder.batches(split, batch=4))
        folder.take("train", list(range(18)))
        assert _dir_bytes(base) <= capacity
    # the three cached val images are decoded in the first round only
    assert reader.reads == (9 + 9 + 18 + 18) + (6 + 9 + 18 + 18)
    assert {s for s, _ in folder.cache.slots} == {"val"}
    assert _cache(folder, tmp_path / "off", 0) is None  # 0: no cache, nothing written
    assert not (tmp_path / "off").exists()


def test_a_changed_file_is_a_new_key_and_the_old_one_goes(tmp_path: Path) -> None:
    data = band_folder(tmp_path / "shapes", {"train": 3, "val": 3}, classes=("c0", "c1", "c2"))
    base = tmp_path / "cache"
    before = FolderSource(data, GRAY16)
    old = _cache(before, base, 1 << 20)
    assert old is not None and old.directory.name == cache_key(before.fingerprint(), GRAY16)
    list(before.batches("val"))
    # another mean/std shares the views (normalised after the cache); another crop does not
    other_norm = Preprocess((16, 16), 18, (0.1,), (0.2,), channels=GRAY16.channels)
    assert cache_key(before.fingerprint(), other_norm) == old.directory.name
    other_crop = Preprocess.default_for((1, 12, 12))
    assert cache_key(before.fingerprint(), other_crop) != old.directory.name

    px = np.full((20, 20), 7, np.uint8)
    Image.fromarray(px).save(data / "val" / "c1" / "001.png")  # same name, other bytes
    after = FolderSource(data, GRAY16)
    assert after.fingerprint() != before.fingerprint()
    new = _cache(after, base, 1 << 20)
    assert new is not None and new.directory.name != old.directory.name
    assert [p.name for p in base.iterdir()] == [new.directory.name]  # the stale key removed
    x_new = next(after.batches("val", batch=9))[0]
    assert np.array_equal(x_new, next(FolderSource(data, GRAY16).batches("val", batch=9))[0])


def test_auto_data_workers() -> None:
    assert auto_workers(2, ("cpu",)) == 1
    assert auto_workers(16, ("cpu", "cpu")) == 1
    assert auto_workers(1, ("cpu",)) == 0
    assert auto_workers(16, ("cuda:0",)) == 0


def test_a_folder_run_records_its_data_wait_and_keeps_its_cache_small(
    tmp_path: Path, model_files: dict[str, Path]
) -> None:
    data = band_folder(
        tmp_path / "shapes", {"train": 12, "val": 4, "test": 4}, classes=("c0", "c1", "c2")
    )
    out = tmp_path / "run"
    common = [model_files["bundle_wide"], "--data", data, "--target", "mobile", "--out", out]
    bad = run_edgeopt("optimize", *common, "--data-workers", "two", "--trials", "1")
    assert bad.returncode == 2 and "--data-workers must be auto or a count" in bad.stderr
    assert not out.exists()  # refused before any work
    cap_gb = 4000 / 2**30  # a few 16x16 gray views
    done = run_edgeopt(
        "optimize",
        *common, "--trials", "3", "--threads", "1", "--data-workers", "2",
        "--data-cache-gb", cap_gb, "--no-report",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["data_workers"] == 2
    import optuna

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out}/study.db")
    trials = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    tuned = [
        t.user_attrs["info"]["finetune.train_result"]
        for t in trials
        if t.user_attrs["info"].get("finetune.train_result", {}).get("epochs_run")
    ]
    assert tuned, [t.user_attrs.get("fail_reason") for t in study.get_trials()]
    assert all(0 <= r["data_wait_s"] <= r["seconds"] for r in tuned)
    cache = out / "cache" / "data"
    assert cache.is_dir() and _dir_bytes(cache) <= 4000


def test_a_process_holding_openvino_decodes_without_forking(tmp_path: Path) -> None:
    # forking a process whose OpenVINO (TBB) threads run crashed pytest with a segmentation
    # fault when the forked workers were shut down: such a process decodes in itself
    code = (
        "import sys, openvino\n"
        "from edgeopt.data.loader import BatchLoader, fork_safe\n"
        "class S:\n"
        "    def take(self, split, idx): return [[0.0]] * len(idx), [0] * len(idx)\n"
        "    def count(self, split): return 4\n"
        "print(fork_safe(), BatchLoader(S(), 'train', 2).workers)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "0"]
    assert fork_safe() == ("openvino" not in sys.modules)
