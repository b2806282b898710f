"""An image folder as ``--data``, streamed: ``edgeopt optimize MODEL --data DIR`` end to end
(classes, recipe and fingerprint recorded, class names reported, resume, a changed folder
refused), ``fit`` on a folder equal to ``fit`` on the same images in memory, and memory that
stays bounded whatever the folder's decoded size."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from band_images import CLASSES, band_folder, run_edgeopt
from PIL import Image  # in [dev]: a missing install fails, never skips

from edgeopt import zoo
from edgeopt.data import DataBundle, NpzSource
from edgeopt.data.folder import FolderSource
from edgeopt.data.images import read_view
from edgeopt.data.preprocess import Preprocess
from edgeopt.measure.accuracy import source_task_metric
from edgeopt.onnx_export import export_onnx
from edgeopt.training import TrainConfig, fit


def test_optimize_on_an_image_folder_records_reports_resumes_and_refuses_a_changed_one(
    tmp_path: Path, model_files: dict[str, Path]
) -> None:
    data = band_folder(tmp_path / "shapes", {"train": 12, "val": 4, "test": 4})
    out = tmp_path / "run"
    common = [model_files["bundle_wide"], "--data", data, "--target", "mobile", "--out", out]
    done = run_edgeopt("optimize", *common, "--trials", "3", "--threads", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        "data: 3 classes (circle, square, stripe); train 36, val 12, test 12; preprocess: "
        "resize 18, center crop 16, mean 0.5 std 0.5, gray" in done.stderr
    )
    spec = json.loads((out / "run.json").read_text())["data"]
    assert spec["kind"] == "folder" and spec["path"] == str(data.resolve())
    assert Preprocess.from_dict(spec["recipe"]) == Preprocess.default_for((1, 16, 16))
    assert spec["split"] is None  # already split: no ratio
    assert (
        spec["fingerprint"] == FolderSource(data, Preprocess.default_for((1, 16, 16))).fingerprint()
    )
    facts = json.loads((out / "data.json").read_text())
    assert facts["classes"] == list(CLASSES) and facts["eval_samples"] == 2000
    assert (out / "baseline" / "sample.npy").exists()
    record = json.loads((out / "report" / "report.json").read_text())
    assert record["data_facts"]["classes"] == list(CLASSES)
    md = (out / "report" / "report.md").read_text()
    assert "3 classes (circle, square, stripe)" in md
    import optuna

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out}/study.db")
    done_trials = [t for t in study.get_trials() if t.state.name != "WAITING"]
    assert [t.state.name for t in done_trials] == ["COMPLETE"] * 3, [
        t.user_attrs.get("fail_reason") for t in done_trials
    ]
    # the third trial fine-tuned on the folder (the first two are the unchanged and int8 baselines)
    assert done_trials[2].user_attrs["candidate"]["finetune"]["epochs"] > 0

    again = run_edgeopt("optimize", *common, "--trials", "4", "--threads", "1", "--no-report")
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = optuna.load_study(study_name=None, storage=f"sqlite:///{out}/study.db")
    assert [t.state.name for t in resumed.get_trials()][:4] == ["COMPLETE"] * 4

    Image.fromarray(np.zeros((20, 20), np.uint8)).save(data / "train" / "circle" / "new.png")
    changed = run_edgeopt("optimize", *common, "--trials", "5", "--threads", "1", "--no-report")
    assert changed.returncode == 2, changed.stderr[-3000:]
    assert "the data is not what this run started with" in changed.stderr


def test_fit_on_a_folder_draws_what_fit_on_its_images_in_memory_draws(tmp_path: Path) -> None:
    data = band_folder(tmp_path / "shapes", {"train": 10, "val": 4})
    recipe = Preprocess.default_for((1, 16, 16))
    folder = FolderSource(data, recipe)
    arrays = {
        f"{v}_{s}": a
        for s in ("train", "val")
        for v, a in zip("xy", folder.subset(s, 10**6, None), strict=True)
    }
    npz = NpzSource(tmp_path / "unused.npz", DataBundle(**arrays))
    config = TrainConfig(lr=0.05, epochs=2, batch_size=8, augment=False)
    weights = []
    for source in (npz, folder):
        torch.manual_seed(0)
        model = zoo.plain_cnn(in_channels=1, num_classes=10, width=4)
        result = fit(model, source, config, seed=3)
        weights.append((model.state_dict(), result.history))
    (a, ha), (b, hb) = weights
    assert ha == hb and ha[-1][0] == 2
    assert all(torch.equal(a[k], b[k]) for k in a)


class CountingReader:
    """The default reader (a file's uint8 view), keeping count of the files it decoded
    (passed in, not patched)."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self, path: Path, recipe: Preprocess) -> np.ndarray:
        self.reads += 1
        return read_view(path, recipe)


def test_a_folder_larger_than_the_memory_it_may_use_is_trained_and_scored_in_batches(
    tmp_path: Path,
) -> None:
    # 3 x 400 RGB images: 1200 x 3 x 32 x 32 float32 = 14 MB decoded; the budget is 4 MB
    data = band_folder(tmp_path / "big", {"train": 300, "val": 100}, size=36, rgb=True)
    recipe = Preprocess.default_for((3, 32, 32))
    reader = CountingReader()
    folder = FolderSource(data, recipe, reader=reader)
    decoded_mb = sum(folder.count(s) for s in folder.splits) * 3 * 32 * 32 * 4 / 2**20
    assert decoded_mb > 14
    torch.manual_seed(0)
    model = zoo.plain_cnn(in_channels=3, num_classes=10, width=4)
    onnx = export_onnx(model.eval(), (3, 32, 32), tmp_path / "m.onnx")
    torch.set_num_threads(1)
    tracemalloc.start()
    try:
        fit(model, folder, TrainConfig(epochs=1, batch_size=16), seed=0)
        accuracy = source_task_metric(onnx, folder, "val", "accuracy", threads=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 0.0 <= accuracy <= 1.0
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MB of Python/numpy allocations"
    # decoded: 256 for the noise scale, each training image once, val at epochs 0 and 1,
    # val once more for the ONNX score
    assert reader.reads == 256 + 900 + 3 * 300
