"""The input shape of a model file that records none is taken from ``--data``'s x_train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeopt.cli import main
from edgeopt.loading import ModelFormat, load_model

ARCH = ["--arch", "edgeopt.zoo:plain_cnn"]
ARCH += ["--arch-kwargs", '{"in_channels": 1, "num_classes": 10, "width": 4}']


def _bench(*args: str) -> object:
    return CliRunner().invoke(main, ["bench", *args, "--target", "mobile", "--json"])


def test_bench_takes_a_state_dicts_input_shape_from_data_and_says_so(
    model_files: dict[str, Path], tiny_data: Path
) -> None:
    res = _bench(str(model_files["state_dict"]), *ARCH, "--data", str(tiny_data))
    assert res.exit_code == 0, res.output
    assert "input shape 1,16,16 taken from --data" in res.stderr
    report = json.loads(res.stdout)
    assert report["results"][0]["accuracy"] is not None  # it ran on the data


def test_bench_refuses_an_input_shape_that_contradicts_the_data(
    model_files: dict[str, Path], tiny_data: Path
) -> None:
    res = _bench(
        str(model_files["state_dict"]), *ARCH, "--data", str(tiny_data), "--input-shape", "1,8,8"
    )
    assert res.exit_code == 2, res.output
    assert res.stderr.splitlines() == [
        "Error: --input-shape 1,8,8 contradicts --data, whose samples have shape 1,16,16",
        "Hint: leave --input-shape out (it is taken from --data), or pass data shaped like "
        "the model's input",
    ]


def test_bench_with_a_matching_input_shape_does_not_mention_the_data(
    model_files: dict[str, Path], tiny_data: Path
) -> None:
    res = _bench(
        str(model_files["state_dict"]), *ARCH, "--data", str(tiny_data), "--input-shape", "1,16,16"
    )
    assert res.exit_code == 0, res.output
    assert "taken from --data" not in res.stderr


def test_bench_without_data_or_shape_still_asks_for_the_shape(
    model_files: dict[str, Path],
) -> None:
    res = _bench(str(model_files["state_dict"]), *ARCH)
    assert res.exit_code == 2
    assert "does not record its input shape" in res.stderr
    assert "Hint: pass --input-shape" in res.stderr


@pytest.mark.parametrize(
    ("name", "fmt", "extra"),
    [
        ("torchscript", ModelFormat.TORCHSCRIPT, {}),
        ("pickle", ModelFormat.PICKLE, {"trust_pickle": True}),
        ("bundle", ModelFormat.BUNDLE, {}),
    ],
)
def test_only_a_format_without_a_recorded_shape_takes_the_datas(
    model_files: dict[str, Path], name: str, fmt: ModelFormat, extra: dict
) -> None:
    loaded = load_model(model_files[name], data_shape=(1, 16, 16), **extra)
    assert loaded.format == fmt and loaded.input_shape == (1, 16, 16)
    assert loaded.shape_from_data == (fmt != ModelFormat.BUNDLE)


def test_a_bundles_recorded_shape_wins_over_the_datas(model_files: dict[str, Path]) -> None:
    # the data's shape fills a gap only; a bundle's own shape then meets the usual check
    loaded = load_model(model_files["bundle"], data_shape=(1, 8, 8))
    assert loaded.input_shape == (1, 16, 16) and not loaded.shape_from_data


def test_optimize_records_the_shape_it_took_from_data(
    model_files: dict[str, Path], tiny_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = [str(model_files["state_dict"]), *ARCH, "--data", str(tiny_data), "--target", "mobile"]
    args += ["--trials", "1", "--out", str(out), "--no-report"]
    res = CliRunner().invoke(main, ["optimize", *args])
    assert res.exit_code in (0, 1), res.output  # 1: the one trial (the original) may miss
    assert "input shape 1,16,16 taken from --data" in res.stderr
    # not a terminal: the one trial's progress is one line, with the front and the best
    progress = [line for line in res.stderr.splitlines() if line.startswith("[1/1] ")]
    assert len(progress) == 1 and " | front 1 | pick: " in progress[0]
    # run.json records it, so workers and a resume load the state_dict without the data
    assert json.loads((out / "run.json").read_text())["model"]["input_shape"] == [1, 16, 16]
