"""models/build_real.py's bert_text path, for real in a subprocess at a tiny width for one
epoch: it writes the text task, trains, prints the bag-of-words baseline and the gate, and saves
a bundle that edgeopt loads with its two int64 inputs and runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from edgeopt.inputs import InputRole
from edgeopt.loading import ModelFormat, load_model, model_output_shape

SCRIPT = Path(__file__).resolve().parents[1] / "models" / "build_real.py"


def test_bert_text_trains_tiny_and_saves_a_two_input_bundle(tmp_path: Path) -> None:
    args = ["--models", "bert_text", "--width", "0.125", "--epochs", "1", "--threads", "1"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    gate = re.fullmatch(
        r"  gate \(test >= 95% and >= bag-of-words (0\.\d+) \+ 15 pt\): NOT met", lines[-2]
    )
    assert gate is not None, lines[-2]
    assert 0.6 < float(gate.group(1)) <= 0.75  # logistic regression on counts, on 8,000
    assert lines[-1].startswith("bert_text x0.125 (0.03 M params): 1 epochs, val ")
    assert lines[-1].endswith(f"-> {tmp_path / 'bert_text.pt'}")
    assert not (tmp_path / "digits32.npz").exists()  # the image data only for image models

    with np.load(tmp_path / "text4.npz") as npz:
        assert {k: npz[k].shape for k in npz.files} == {
            f"{kind}_{split}{field}": (n, 32) if kind == "x" else (n,)
            for split, n in (("train", 8000), ("val", 1000), ("test", 1000))
            for kind, field in (("x", ".input_ids"), ("x", ".attention_mask"), ("y", ""))
        }
        ids, mask = npz["x_test.input_ids"][:5], npz["x_test.attention_mask"][:5]

    loaded = load_model(tmp_path / "bert_text.pt")
    assert loaded.format is ModelFormat.BUNDLE and loaded.input_shape == (32,)
    specs = loaded.inputs.specs
    assert [(s.name, s.shape, s.dtype, s.role) for s in specs] == [
        ("input_ids", (32,), "int64", InputRole.TOKEN_IDS),
        ("attention_mask", (32,), "int64", InputRole.MASK),
    ]
    assert specs[0].vocab_size == 1024 and model_output_shape(loaded) == (1, 4)
    with torch.no_grad():
        logits = loaded.module(torch.from_numpy(ids), torch.from_numpy(mask))
    assert logits.shape == (5, 4) and torch.isfinite(logits).all()
