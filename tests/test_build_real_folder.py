"""models/build_real.py's ``--folder`` path with ``--init``, for real in a subprocess: the
ImageNet-layout MobileNetV2 starts from a CIFAR-layout bundle (the image-folder benchmark's
recipe), takes every tensor the layouts share, says which it left as built, and trains."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from band_images import band_folder

from edgeopt import zoo
from edgeopt.loading import load_model, save_bundle

SCRIPT = Path(__file__).resolve().parents[1] / "models" / "build_real.py"


def test_init_from_the_cifar_layout_copies_all_but_the_last_conv(tmp_path: Path) -> None:
    folder = band_folder(tmp_path / "data", {"train": 4, "val": 2, "test": 2}, size=32, rgb=True)
    kwargs = {"in_channels": 3, "num_classes": 3, "width_mult": 0.25}
    torch.manual_seed(1)
    cifar = zoo.mobilenetv2_cifar(**kwargs)
    init = save_bundle(
        cifar,
        tmp_path / "cifar.pt",
        arch="edgeopt.zoo:mobilenetv2_cifar",
        arch_kwargs=kwargs,
        input_shape=(3, 32, 32),
    )
    args = ["--folder", folder, "--models", "mobilenetv2_imagenet", "--width", "0.25"]
    args += ["--size", "32", "--epochs", "1", "--threads", "1", "--init", init]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    said = re.search(r"init from .*: (\d+) of (\d+) tensors; left as built: (\[.*\])", done.stdout)
    assert said is not None, done.stdout
    # the 1x1 conv to 1280 is scaled by width in the CIFAR layout only: it and what reads it
    assert said.group(3) == str(
        [
            "classifier.weight",
            "features.20.weight",
            "features.21.bias",
            "features.21.running_mean",
            "features.21.running_var",
            "features.21.weight",
        ]
    )
    assert int(said.group(2)) - int(said.group(1)) == 6
    trained = load_model(tmp_path / "out" / "mobilenetv2_imagenet_32.pt").module
    # the stem came from the bundle (one epoch moves it, but not back to a fresh init)
    stem = trained.state_dict()["features.0.weight"]
    fresh = zoo.mobilenetv2_imagenet(**kwargs).state_dict()["features.0.weight"]
    given = cifar.state_dict()["features.0.weight"]
    assert (stem - given).norm() < (stem - fresh).norm()
