"""Preprocessing carried in the model file (ONNX metadata, ``X.preprocess.json``) and applied
by ``bench --data DIR`` / ``check --data DIR``: a tiny real PNG folder and a tiny real ONNX
model made here, accuracies compared with a hand computation (PIL + numpy + ORT)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from edgeopt.cli import main
from edgeopt.data.metadata import (
    METADATA_KEY,
    read_recipe,
    sidecar_path,
    stamp,
    write_sidecar,
)
from edgeopt.data.preprocess import Channels, Preprocess
from edgeopt.errors import ConfigError
from edgeopt.onnx_export import export_onnx

SHAPE = (3, 16, 16)
CLASSES = ("ant", "bee", "cat")
RECIPE = Preprocess((16, 16), 20, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3), Channels.BGR)
"""Not the default for 3x16x16 (resize 18, ImageNet mean/std, rgb): scoring with it shows
the metadata was read."""


@pytest.fixture(scope="module")
def rgb_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logit c = the mean of input channel c: which class wins depends on the channel order
    and the mean/std the inputs were normalized with."""
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    return export_onnx(model, SHAPE, tmp_path_factory.mktemp("m") / "model.onnx")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/val/test of three classes of noisy RGB PNGs of varied sizes; class k's images
    are bright in RGB channel 2 - k, i.e. BGR channel k: the model gets them right read as
    BGR (``RECIPE``), and only class 1 of them read as RGB (the default)."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", 2), ("test", 5)):
        for label, c in enumerate(CLASSES):
            (root / split / c).mkdir(parents=True)
            for k in range(n):
                h, w = 17 + 3 * k, 30 - 2 * k
                pixels = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
                pixels[..., 2 - label] += np.uint8(150 - 20 * k)
                Image.fromarray(pixels).save(root / split / c / f"{k}.png")
    return root


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder (its .git stops check's config file search there)."""
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _stamped(rgb_onnx: Path, tmp_path: Path, recipe: Preprocess = RECIPE) -> Path:
    model = Path(shutil.copy(rgb_onnx, tmp_path / "stamped.onnx"))
    assert stamp(model, recipe)
    return model


def _by_hand(path: Path, r: Preprocess) -> np.ndarray:
    """torchvision's Resize(int) + CenterCrop + ToTensor + Normalize, written out."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if r.resize is not None:
        if w <= h:
            w, h = r.resize, int(r.resize * h / w)
        else:
            w, h = int(r.resize * w / h), r.resize
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    ch, cw = r.crop
    top, left = int(round((h - ch) / 2)), int(round((w - cw) / 2))
    x = np.asarray(img.crop((left, top, left + cw, top + ch)), dtype=np.float32)
    if r.channels is Channels.BGR:
        x = x[..., ::-1]
    x = (x / 255.0 - np.asarray(r.mean, np.float32)) / np.asarray(r.std, np.float32)
    return x.transpose(2, 0, 1)


def _hand_accuracy(model: Path, folder: Path, recipe: Preprocess) -> float:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    hits = []
    for label, c in enumerate(CLASSES):
        for f in sorted((folder / "test" / c).iterdir()):
            x = _by_hand(f, recipe)[None].astype(np.float32)
            hits.append(int(sess.run(None, {name: x})[0].argmax()) == label)
    assert len(hits) == 15
    return sum(hits) / len(hits)


def test_the_folder_tells_the_recipes_apart(rgb_onnx: Path, folder: Path) -> None:
    assert _hand_accuracy(rgb_onnx, folder, RECIPE) == 1.0
    assert _hand_accuracy(rgb_onnx, folder, Preprocess.default_for(SHAPE)) == pytest.approx(1 / 3)


def _check(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, ["check", *args, "--target", "mobile", "--min-accuracy", "0"])
    return res.exit_code, res.stdout, res.stderr


def _accuracy(verdict_json: str) -> float:
    (row,) = [r for r in json.loads(verdict_json)["results"] if r["name"] == "min_accuracy"]
    assert row["detail"] == "on the test split"
    return float(row["value"])


def test_stamp_and_read_keep_other_metadata(rgb_onnx: Path, tmp_path: Path) -> None:
    model = Path(shutil.copy(rgb_onnx, tmp_path / "m.onnx"))
    proto = onnx.load(str(model))
    proto.metadata_props.add(key="author", value="someone")
    onnx.save(proto, str(model))
    assert read_recipe(model) is None
    assert stamp(model, RECIPE)
    assert read_recipe(model) == RECIPE
    props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert props["author"] == "someone" and set(props) == {"author", METADATA_KEY}
    assert json.loads(props[METADATA_KEY])["formula"] == RECIPE.formula()
    before = model.read_bytes()
    assert not stamp(model, RECIPE) and model.read_bytes() == before  # the same recipe again
    other = Preprocess.default_for(SHAPE)
    assert stamp(model, other) and read_recipe(model) == other
    keys = [p.key for p in onnx.load(str(model)).metadata_props]
    assert keys.count(METADATA_KEY) == 1 and "author" in keys
    # the stamp changes no output
    x = np.random.default_rng(0).standard_normal((2, *SHAPE)).astype(np.float32)
    outs = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        for p in (rgb_onnx, model)
    ]
    assert np.array_equal(outs[0], outs[1])


def test_sidecar_is_named_after_the_model(tmp_path: Path) -> None:
    path = write_sidecar(tmp_path / "release" / "net.v2.onnx", RECIPE)
    assert path == tmp_path / "release" / "net.v2.preprocess.json"
    assert path == sidecar_path(tmp_path / "release" / "net.v2.onnx")
    assert Preprocess.from_dict(json.loads(path.read_text())) == RECIPE


def test_a_stamp_that_is_no_recipe_is_a_config_error(rgb_onnx: Path, tmp_path: Path) -> None:
    model = Path(shutil.copy(rgb_onnx, tmp_path / "m.onnx"))
    proto = onnx.load(str(model))
    proto.metadata_props.add(key=METADATA_KEY, value='{"crop": [16, 16]}')
    onnx.save(proto, str(model))
    with pytest.raises(ConfigError, match="is not a recipe: preprocess record: missing"):
        read_recipe(model)


def test_check_scores_the_folder_with_the_carried_recipe(
    rgb_onnx: Path, folder: Path, in_tmp: Path
) -> None:
    model = _stamped(rgb_onnx, in_tmp)
    code, out, err = _check(str(model), "--data", str(folder), "--json")
    assert code == 0, err
    assert _accuracy(out) == _hand_accuracy(model, folder, RECIPE)
    assert f"preprocess: {RECIPE.describe()} (from the preprocessing metadata of" in err
    # the same flags as the metadata are no contradiction
    code, out2, err = _check(str(model), "--data", str(folder), "--json", "--resize", "20")
    assert code == 0, err
    assert _accuracy(out2) == _accuracy(out)


def test_flags_that_contradict_the_carried_recipe_exit_2(
    rgb_onnx: Path, folder: Path, in_tmp: Path
) -> None:
    model = _stamped(rgb_onnx, in_tmp)
    code, out, err = _check(str(model), "--data", str(folder), "--mean", "0.1,0.1,0.1")
    assert code == 2 and out == ""
    first = err.splitlines()[0]
    assert "--mean 0.1,0.1,0.1 contradicts" in first and "mean 0.5,0.4,0.3" in first
    assert str(model) in first
    code, _, err = _check(str(model), "--data", str(folder), "--channel-order", "rgb")
    assert code == 2 and "--channel-order rgb contradicts" in err and "channels bgr" in err


def test_an_unstamped_model_uses_the_default_and_says_so(
    rgb_onnx: Path, folder: Path, in_tmp: Path
) -> None:
    code, out, err = _check(str(rgb_onnx), "--data", str(folder), "--json")
    assert code == 0, err
    default = Preprocess.default_for(SHAPE)
    assert _accuracy(out) == _hand_accuracy(rgb_onnx, folder, default)
    assert "preprocess: resize 18, center crop 16, mean/std imagenet, rgb (default" in err
    assert "carries no preprocessing metadata" in err
    # flags set the recipe of an unstamped model
    flags = ["--resize", "20", "--mean", "0.5,0.4,0.3", "--std", "0.25,0.2,0.3"]
    flags += ["--channel-order", "bgr"]
    code, out, err = _check(str(rgb_onnx), "--data", str(folder), "--json", *flags)
    assert code == 0, err
    assert "(from the flags)" in err
    assert _accuracy(out) == _hand_accuracy(rgb_onnx, folder, RECIPE)
    # a crop that does not fit the model names both
    code, _, err = _check(str(rgb_onnx), "--data", str(folder), "--crop", "24")
    assert code == 2 and "takes 16x16 inputs but the preprocessing crops 24x24" in err


def test_bench_reports_the_folder_accuracy(rgb_onnx: Path, folder: Path, tmp_path: Path) -> None:
    model = _stamped(rgb_onnx, tmp_path)
    args = ["bench", str(model), "--target", "mobile", "--data", str(folder), "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["accuracy_split"] == "test" and report["accuracy_samples"] == 15
    (row,) = report["results"]
    assert row["accuracy"]["value"] == _hand_accuracy(model, folder, RECIPE)
    # --vs a model carrying another recipe: refused, naming both
    second = Path(shutil.copy(rgb_onnx, tmp_path / "second.onnx"))
    stamp(second, Preprocess.default_for(SHAPE))
    res = CliRunner().invoke(main, [*args, "--vs", str(second)])
    assert res.exit_code == 2 and "carry different preprocessing" in res.stderr


def test_recipe_flags_need_an_image_folder(
    model_files: dict[str, Path], tiny_data: Path, in_tmp: Path
) -> None:
    code, _, err = _check(str(model_files["onnx"]), "--data", str(tiny_data), "--crop", "16")
    assert code == 2 and "--crop 16" in err and "no image folder" in err
