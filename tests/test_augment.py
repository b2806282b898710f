"""An image folder's training augmentation (issue 24 item 2): random resized crop and
horizontal flip, chosen by ``--augment`` / ``augment`` in ``[data]``, recorded in ``run.json``
and reused on resume, applied to fine-tuning batches only: never to scoring, calibration or
the evaluation subsets, and never part of the preprocessing the exported models carry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from band_images import band_folder, run_edgeopt
from torch import nn

from edgeopt.data import DataKind, DataSpec, eval_batches
from edgeopt.data.augmentation import Augmentation
from edgeopt.data.folder import FolderSource
from edgeopt.data.preprocess import Preprocess
from edgeopt.data.recipe_choice import RecipeFlags, table_flags
from edgeopt.data_facts import FolderFacts
from edgeopt.errors import ConfigError
from edgeopt.report.summary import recipe_note
from edgeopt.training import TrainConfig, fit
from edgeopt.training.augment import CROP_AREA, CROP_RATIO, augment_images
from edgeopt.training.stream import Streamed

RECIPE = Preprocess.default_for((1, 16, 16))


class Recorder(nn.Module):
    """A small real classifier that keeps a copy of every input it is given, training and
    evaluating apart."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)
        self.seen: dict[bool, list[torch.Tensor]] = {True: [], False: []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen[self.training].append(x.detach().clone())
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def _fit_inputs(folder: FolderSource, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The (training, evaluation) inputs a one-epoch ``fit`` on ``folder`` fed its model."""
    torch.manual_seed(0)
    model = Recorder()
    fit(model, folder, TrainConfig(lr=0.01, epochs=1, batch_size=8), seed=seed)
    return torch.cat(model.seen[True]), torch.cat(model.seen[False])


def _nearest_residual(inputs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per input, the mean squared difference to the closest of ``images``."""
    d = ((inputs[:, None] - images[None]) ** 2).flatten(2).mean(2)
    return d.min(1).values


def _gradient(h: int, w: int, along: int) -> torch.Tensor:
    """One (1, 1, h, w) image whose value is the column (``along=3``) or row index."""
    idx = torch.arange(w if along == 3 else h, dtype=torch.float32)
    img = idx[None, :].expand(h, w) if along == 3 else idx[:, None].expand(h, w)
    return img[None, None].clone()


def test_crop_flip_changes_training_batches_but_never_scoring_batches(tmp_path: Path) -> None:
    data = band_folder(tmp_path / "shapes", {"train": 8, "val": 4})
    folder = FolderSource(data, RECIPE, augment="crop,flip")
    plain = FolderSource(data, RECIPE, augment="none")
    clean = torch.from_numpy(folder.subset("train", 10**6, None)[0])
    noise_var = (0.1 * Streamed(folder).input_std(0)) ** 2
    trained, evaluated = _fit_inputs(folder)
    assert trained.shape[1:] == clean.shape[1:]
    far = _nearest_residual(trained, clean) > 4 * noise_var
    assert far.float().mean() >= 0.8  # cropped and/or flipped, not just noisy
    # "none": every training input is an image of the folder plus the noise, nothing else
    plain_trained, plain_evaluated = _fit_inputs(plain)
    residual = _nearest_residual(plain_trained, clean)
    assert float(residual.max()) < 1.5 * noise_var and float(residual.min()) > 0.5 * noise_var
    # validation inside fit: the fixed scoring subset as scoring reads it, unaugmented
    scored = torch.cat([torch.from_numpy(x) for x, _ in eval_batches(folder, "val")])
    n = len(scored)
    assert torch.equal(evaluated[:n], scored) and torch.equal(evaluated[-n:], scored)
    assert torch.equal(plain_evaluated, evaluated)
    # calibration, Taylor, parity and scoring read the source: the setting changes nothing
    for split in ("train", "val"):
        a, b = folder.subset(split, 5, seed=1), plain.subset(split, 5, seed=1)
        assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
        for (xa, ya), (xb, yb) in zip(folder.batches(split), plain.batches(split), strict=True):
            assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
        assert np.array_equal(folder.take(split, [2, 0])[0], plain.take(split, [2, 0])[0])


def test_the_same_seed_draws_the_same_augmentation() -> None:
    x = torch.randn(6, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    how = Augmentation.parse("crop,flip")

    def draw(seed: int) -> torch.Tensor:
        return augment_images(x, torch.Generator().manual_seed(seed), 0.1, how)

    assert torch.equal(draw(0), draw(0))
    assert not torch.allclose(draw(0), draw(1))
    assert draw(0).shape == x.shape


def test_none_leaves_the_inputs_as_the_loader_gives_them() -> None:
    x = torch.randn(5, 1, 9, 9, generator=torch.Generator().manual_seed(2))
    out = augment_images(x, torch.Generator().manual_seed(0), 0.0, Augmentation.parse("none"))
    assert torch.equal(out, x)
    cropped = augment_images(x, torch.Generator().manual_seed(0), 0.0, Augmentation.parse("crop"))
    assert cropped.shape == x.shape and not torch.allclose(cropped, x)
    # bilinear resampling inside the image: every value between the image's extremes
    lo, hi = x.flatten(1).min(1).values, x.flatten(1).max(1).values
    flat = cropped.flatten(1)
    assert bool((flat >= lo[:, None] - 1e-5).all() and (flat <= hi[:, None] + 1e-5).all())


def test_flip_alone_gives_the_mirror_of_an_asymmetric_image() -> None:
    img = _gradient(7, 9, along=3) ** 2  # no left-right symmetry
    x = img.expand(16, 1, 7, 9).clone()
    out = augment_images(x, torch.Generator().manual_seed(0), 0.0, Augmentation.parse("flip"))
    mirrored = torch.tensor([torch.equal(o, img[0].flip(2)) for o in out])
    kept = torch.tensor([torch.equal(o, img[0]) for o in out])
    assert bool((mirrored | kept).all()) and 0 < int(mirrored.sum()) < 16


@pytest.mark.parametrize("along", [3, 2])
def test_a_random_resized_crop_zooms_into_a_window_of_the_allowed_size(along: int) -> None:
    """A gradient image resampled from a window w x h of it is again a gradient, of slope
    w/W (h/H); the window's area and aspect ratio lie in the drawn ranges, and a flip (of the
    columns only) reverses the slope's sign."""
    h = w = 32
    x = _gradient(h, w, along).expand(64, 1, h, w).clone()
    gen = torch.Generator().manual_seed(0)
    out = augment_images(x, gen, 0.0, Augmentation.parse("crop,flip"))
    diffs = out.diff(dim=along)[:, 0, 2:-2, 2:-2] if along == 3 else out.diff(dim=2)[:, 0, 1:-2]
    slope = diffs.flatten(1).mean(1)
    assert bool((diffs.flatten(1).std(1) < 1e-3).all())  # a straight ramp: one window
    lo = (CROP_AREA[0] * CROP_RATIO[0]) ** 0.5  # the narrowest window a box may have
    assert bool((slope.abs() >= lo - 1e-4).all() and (slope.abs() <= 1 + 1e-4).all())
    assert float(slope.abs().min()) < 0.9  # zoomed in, not just shifted
    if along == 3:
        assert bool((slope < 0).any() and (slope > 0).any())  # flipped and not
    else:
        assert bool((slope > 0).all())  # the flip is horizontal only


def test_the_setting_is_data_checked_and_read_like_the_other_data_keys(tmp_path: Path) -> None:
    assert str(Augmentation.parse(" Flip , CROP ")) == "crop,flip"
    assert str(Augmentation.parse("none")) == "none"
    with pytest.raises(ConfigError) as typo:
        Augmentation.parse("crpo")
    assert "did you mean 'crop'" in str(typo.value.hint)
    with pytest.raises(ConfigError):
        FolderSource(band_folder(tmp_path / "d", {"train": 2, "val": 2}), RECIPE, augment="zoom")
    table = table_flags({"augment": "flip", "crop": 16}, "[data] in /p/edgeopt.toml")
    assert table.augmentation() == Augmentation(crop=False, flip=True)
    assert RecipeFlags(augment="crop").over(table).augmentation() == Augmentation(flip=False)
    with pytest.raises(ConfigError, match=r"augment in \[data\] in /p/edgeopt.toml 'fl1p'"):
        table_flags({"augment": "fl1p"}, "[data] in /p/edgeopt.toml").augmentation()
    # a run.json written before the setting: a folder reads as the default; an npz has none
    old = {"kind": "folder", "path": "/d", "recipe": RECIPE.to_dict(), "fingerprint": "f"}
    assert DataSpec.from_dict(old).augmentation == Augmentation()
    assert DataSpec.from_dict(old).to_dict()["augment"] == "crop,flip"
    assert DataSpec.from_dict({**old, "augment": "flip"}).to_dict()["augment"] == "flip"
    assert "augment" not in DataSpec.npz("/d.npz").to_dict()
    with pytest.raises(ConfigError):
        DataSpec(DataKind.NPZ, "/d.npz", augment="crop")


def test_optimize_records_augment_reuses_it_on_resume_and_keeps_it_out_of_the_model(
    tmp_path: Path, model_files: dict[str, Path]
) -> None:
    data = band_folder(tmp_path / "shapes", {"train": 8, "val": 4})
    out = tmp_path / "run"
    common = [model_files["bundle_wide"], "--data", data, "--target", "mobile", "--out", out]
    bad = run_edgeopt("optimize", *common, "--augment", "crpo")
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert "--augment 'crpo' is not one of" in bad.stderr and "did you mean 'crop'" in bad.stderr
    assert not out.exists()  # refused before any work
    project = tmp_path / "project"
    project.mkdir()
    (project / "edgeopt.toml").write_text('[data]\naugment = "flop"\n')
    table = run_edgeopt("optimize", *common, cwd=project)  # the table's key, as --augment
    assert table.returncode == 2, table.stderr[-2000:]
    assert f"augment in [data] in {project / 'edgeopt.toml'} 'flop'" in table.stderr
    npz = run_edgeopt("optimize", model_files["bundle_wide"], "--augment", "crop", cwd=tmp_path)
    assert npz.returncode == 2 and "--augment crop" in npz.stderr

    args = [*common, "--trials", "1", "--threads", "1", "--no-report"]
    done = run_edgeopt("optimize", *args, "--augment", "crop")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["data"]["augment"] == "crop"
    assert json.loads((out / "data.json").read_text())["augment"] == "crop"
    # what the app repeats carries no augmentation: it is training only
    model = onnx.load(str(out / "baseline" / "model.onnx"))
    carried = {p.key: p.value for p in model.metadata_props}
    assert carried and all("augment" not in v for v in carried.values())
    for sidecar in out.rglob("*.preprocess.json"):
        assert "augment" not in sidecar.read_text()

    again = run_edgeopt("optimize", *args)  # no --augment: the recorded one
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["data"]["augment"] == "crop"
    facts = FolderFacts.from_dict(json.loads((out / "data.json").read_text()))
    assert facts.recipe is not None
    note = recipe_note(facts.recipe, facts.augment)  # the report's
    assert "augments its training batches (random resized crop, then noise)" in note
    other = run_edgeopt("optimize", *args, "--augment", "flip")
    assert other.returncode == 2, other.stderr[-2000:]
    assert "--augment flip differs from the augmentation the run" in other.stderr
