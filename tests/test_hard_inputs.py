"""Hardening, round 2 (issue 22, items 6, 7, 12, 13): inputs too large to allocate, data that
cannot be right, data with only the split a command scores, and what bench says of two models.
Every case runs through the real CLI on real files (ONNX graphs built with onnx.helper)."""

from __future__ import annotations

import contextlib
import json
import shutil
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner, Result
from onnx import TensorProto
from onnx import helper as oh

from edgeopt import zoo
from edgeopt.cli import main
from edgeopt.loading import save_bundle
from edgeopt.onnx_export import export_onnx

SHAPE = (1, 16, 16)
PLAIN = "edgeopt.zoo:plain_cnn"
PLAIN_KWARGS = {"in_channels": 1, "num_classes": 10, "width": 4}
LIMIT = "over the limit of 4,194,304 (16 MiB as float32); nothing was allocated"


def _run(*args: object, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from an empty project folder (its .git stops check's config search there)."""
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@contextlib.contextmanager
def _at_most_mb(limit: float) -> Iterator[None]:
    """Fail when the peak of traced allocations inside exceeds ``limit`` MiB (numpy reports
    every array's buffer to tracemalloc, allocated lazily or not)."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert peak < limit, f"{peak:.0f} MiB allocated"


def _relu_onnx(path: Path, dims: list[Any]) -> Path:
    """An ONNX model ``y = relu(x)`` whose input declares ``dims`` (batch first)."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def _fixed_batch_onnx(path: Path, batch: int) -> Path:
    """A 10-class linear classifier on 1x16x16 inputs exported with a fixed batch."""
    w = np.random.default_rng(0).standard_normal((10, 256)).astype(np.float32)
    nodes = [
        oh.make_node("Flatten", ["x"], ["f"]),
        oh.make_node("Gemm", ["f", "w"], ["y"], transB=1),
    ]
    graph = oh.make_graph(
        nodes,
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *SHAPE])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        initializer=[onnx.numpy_helper.from_array(w, "w")],
    )
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def _split(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *SHAPE)).astype(np.float32)
    return x, (np.arange(n) % 10).astype(np.int64)


def _npz(path: Path, **splits: int | tuple[np.ndarray, np.ndarray]) -> Path:
    """An npz with the named splits (``val=6``: 6 random samples; or ``(x, y)``)."""
    arrays: dict[str, np.ndarray] = {}
    for i, (name, spec) in enumerate(splits.items()):
        x, y = _split(spec, seed=i) if isinstance(spec, int) else spec
        arrays[f"x_{name}"], arrays[f"y_{name}"] = x, y
    np.savez(path, **arrays)
    return path


def _assert_one_error(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: "), result.stderr
    assert message in result.stderr.splitlines()[0], result.stderr
    assert len(result.stderr.splitlines()) <= 2  # Error: + Hint:
    assert "Traceback" not in result.output


# --- item 6: a declared input too large to allocate ----------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["bench", "huge.onnx"],
        ["bench", "huge.onnx", "--target", "mobile"],
        ["check", "huge.onnx", "--target", "mobile", "--max-size-mb", "2"],
        ["optimize", "huge.onnx", "--target", "mobile", "--out", "run"],
    ],
    ids=["bench", "bench-mobile", "check", "optimize"],
)
def test_a_huge_onnx_input_is_exit_2_before_any_allocation(
    in_tmp: Path, command: list[str]
) -> None:
    _relu_onnx(in_tmp / "huge.onnx", [1, 1, 1_000_000, 1_000_000])
    with _at_most_mb(64):
        result = _run(*command)
    _assert_one_error(
        result,
        "huge.onnx declares an input of 1x1000000x1000000 = "
        f"1,000,000,000,000 values per sample, {LIMIT}",
    )
    assert "EDGEOPT_MAX_INPUT_ELEMENTS=" in result.stderr  # the hint says how to raise it
    assert not (in_tmp / "run").exists()


def test_a_bomb_that_would_fit_is_not_allocated_either(in_tmp: Path) -> None:
    # 8192x8192 floats: 256 MiB, which this machine could allocate (and ORT then fill)
    _relu_onnx(in_tmp / "big.onnx", [1, 1, 8192, 8192])
    with _at_most_mb(64):
        result = _run("bench", "big.onnx", "--target", "mobile")
    _assert_one_error(result, "declares an input of 1x8192x8192 = 67,108,864 values per sample")


def test_input_shape_flag_and_a_bundles_recorded_shape_are_bounded(
    in_tmp: Path, model_files: dict
) -> None:
    torch.manual_seed(0)
    bomb = save_bundle(
        zoo.plain_cnn(**PLAIN_KWARGS),
        in_tmp / "bomb.pt",
        arch=PLAIN,
        arch_kwargs=PLAIN_KWARGS,
        input_shape=(1, 1_000_000, 1_000_000),
    )
    script = model_files["torchscript"]
    for command, where in [
        (["bench", bomb], f"bundle {bomb} declares an input of 1x1000000x1000000"),
        (["check", bomb, "--target", "mobile", "--max-size-mb", "2"], f"bundle {bomb}"),
        (["optimize", bomb, "--target", "mobile", "--out", "run"], f"bundle {bomb}"),
        (["bench", script, "--input-shape", "1,1000000,1000000"], f"model {script} declares"),
        (
            ["optimize", model_files["bundle"], "--input-shape", "3,4096,4096", "--out", "run"],
            f"model {model_files['bundle']} declares an input of 3x4096x4096 = 50,331,648",
        ),
    ]:
        with _at_most_mb(64):
            result = _run(*command)
        _assert_one_error(result, where)
        assert LIMIT in result.stderr
    assert not (in_tmp / "run").exists()


def test_export_rebuild_bounds_the_shape_a_run_recorded(in_tmp: Path, model_files: dict) -> None:
    args = ["optimize", model_files["onnx"], "--target", "mobile", "--trials", "1"]
    done = _run(*args, "--out", "run", "--no-report")
    assert done.exit_code in (0, 1), done.output
    run_json = in_tmp / "run" / "run.json"
    config = json.loads(run_json.read_text())
    config["model"]["input_shape"] = [1, 1_000_000, 1_000_000]  # a run directory is data
    run_json.write_text(json.dumps(config))
    with _at_most_mb(64):
        result = _run("export", "run", "--trial", "0", "--out", "x.onnx", "--rebuild")
    _assert_one_error(result, "declares an input of 1x1000000x1000000")


def test_the_limit_is_configurable_and_a_bad_setting_is_exit_2(
    in_tmp: Path, model_files: dict
) -> None:
    onnx_path = model_files["onnx"]  # 1x16x16: 256 values per sample
    low = _run("bench", onnx_path, "--target", "mobile", env={"EDGEOPT_MAX_INPUT_ELEMENTS": "255"})
    _assert_one_error(low, "declares an input of 1x16x16 = 256 values per sample, over the limit")
    assert "EDGEOPT_MAX_INPUT_ELEMENTS=256 edgeopt" in low.stderr
    ok = _run("bench", onnx_path, "--target", "mobile", env={"EDGEOPT_MAX_INPUT_ELEMENTS": "256"})
    assert ok.exit_code == 0, ok.output
    bad = _run("bench", onnx_path, "--target", "mobile", env={"EDGEOPT_MAX_INPUT_ELEMENTS": "lots"})
    _assert_one_error(
        bad, "EDGEOPT_MAX_INPUT_ELEMENTS must be a positive whole number of values per sample"
    )


# --- item 7: data that cannot be right -----------------------------------------------------


def test_integer_images_are_refused_with_how_to_convert(in_tmp: Path, model_files: dict) -> None:
    x, y = _split(12)
    pixels = (x * 40 + 128).clip(0, 255).astype(np.uint8)
    data = _npz(in_tmp / "pixels.npz", train=(pixels, y), val=(pixels, y))
    for command in (
        ["optimize", model_files["bundle"], "--data", data, "--target", "mobile", "--out", "run"],
        ["bench", model_files["bundle"], "--data", data, "--target", "mobile"],
        [
            "check",
            model_files["onnx"],
            "--data",
            data,
            "--min-accuracy",
            "0.5",
            "--target",
            "mobile",
        ],
    ):
        result = _run(*command)
        _assert_one_error(result, "x_train holds uint8 values; edgeopt feeds inputs to the model")
        assert "Hint: convert and normalise them as the model was trained" in result.stderr
    assert not (in_tmp / "run").exists()


def test_garbage_and_foreign_zips_are_not_a_valid_npz(in_tmp: Path, model_files: dict) -> None:
    garbage = in_tmp / "garbage.npz"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    foreign = in_tmp / "foreign.npz"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("readme.txt", "not arrays")
    for path, message in [
        (garbage, f"data file {garbage.name} is not a valid .npz (not a zip archive)"),
        (foreign, f"data file {foreign.name} is not a valid .npz: member 'readme.txt' is not"),
    ]:
        result = _run("bench", model_files["bundle"], "--data", path.name, "--target", "mobile")
        _assert_one_error(result, message)
        assert "pickle" not in result.stderr


def test_a_one_sample_split_warns_with_its_interval(in_tmp: Path, model_files: dict) -> None:
    data = _npz(in_tmp / "one.npz", val=1)
    result = _run("bench", model_files["onnx"], "--data", data.name, "--target", "mobile")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1, result.stderr
    # one sample: 0 or 1 right, and the 95 % Wilson interval says nearly nothing
    assert warning[0].startswith(
        "warning: the val split has only 1 sample (fewer than 100): an accuracy of "
    )
    assert "(95% Wilson interval), too wide to tell models apart" in warning[0]
    assert "[0.000, 0.793]" in warning[0] or "[0.207, 1.000]" in warning[0]
    enough = _npz(in_tmp / "enough.npz", val=100)
    quiet = _run("bench", model_files["onnx"], "--data", enough.name, "--target", "mobile")
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr


def test_optimize_on_one_sample_splits_warns_before_the_search(
    in_tmp: Path, model_files: dict
) -> None:
    data = _npz(in_tmp / "one.npz", train=1, val=1)
    args = ["optimize", model_files["onnx"], "--data", data, "--target", "mobile"]
    result = _run(*args, "--trials", "1", "--out", "run", "--no-report")
    assert result.exit_code in (0, 1), result.output
    lines = result.stderr.splitlines()
    warned = [i for i, line in enumerate(lines) if line.startswith("warning: ")]
    assert [lines[i].split(":")[1] for i in warned] == [
        " the train split has only 1 sample (fewer than 100)",
        " the val split has only 1 sample (fewer than 100)",
    ], result.stderr
    assert "lies anywhere in [" in lines[warned[1]]
    first_trial = next(i for i, line in enumerate(lines) if line.startswith("[1/1] "))
    assert warned[-1] < first_trial  # said before the search, not after


# --- item 12: two models in bench ----------------------------------------------------------


@pytest.fixture
def two_models_named_alike(in_tmp: Path) -> tuple[str, str]:
    """``old/model.onnx`` and a wider ``new/model.onnx``: one file name, two models."""
    for folder, width in (("old", 4), ("new", 16)):
        torch.manual_seed(0)
        model = zoo.plain_cnn(in_channels=1, num_classes=10, width=width).eval()
        export_onnx(model, SHAPE, in_tmp / folder / "model.onnx")
    return "old/model.onnx", "new/model.onnx"


def test_bench_vs_names_both_models_and_no_none_thread_count(
    two_models_named_alike: tuple[str, str],
) -> None:
    a, b = two_models_named_alike
    result = _run("bench", a, "--vs", b, "--target", "mcu")
    assert result.exit_code == 0, result.output
    assert "None" not in result.stdout
    rows = [line.split()[0] for line in result.stdout.splitlines() if line.endswith("estimated")]
    assert rows == [a, b]
    (line,) = [ln for ln in result.stdout.splitlines() if " than " in ln]
    assert line.startswith(f"{a} is ") and f"x faster than {b}, estimated on mcu" in line


# --- item 13: check and bench score whatever split the file holds --------------------------


def test_check_scores_a_file_with_only_the_val_split(in_tmp: Path, model_files: dict) -> None:
    data = _npz(in_tmp / "val.npz", val=120)
    args = ["check", model_files["onnx"], "--data", "val.npz", "--target", "mobile"]
    result = _run(*args, "--min-accuracy", "0.0", "--json")
    assert result.exit_code == 0, result.output
    (budget,) = json.loads(result.stdout)["results"]
    assert budget["detail"] == "on the val split"
    assert "warning" not in result.stderr
    # the README's own example: data = "data/val.npz" in [tool.edgeopt]
    (in_tmp / "data").mkdir()
    shutil.copy(data, in_tmp / "data" / "val.npz")
    (in_tmp / "pyproject.toml").write_text(
        '[tool.edgeopt]\ntarget = "mobile"\ndata = "data/val.npz"\nmin_accuracy = 0.0\n'
    )
    table = _run("check", model_files["onnx"])
    assert table.exit_code == 0, table.output
    assert "(on the val split)" in table.stdout


def test_the_scored_split_is_test_then_val_then_train(in_tmp: Path, model_files: dict) -> None:
    onnx_path = model_files["onnx"]
    for name, splits, scored in [
        ("all.npz", {"train": 100, "val": 100, "test": 100}, "test"),
        ("trainval.npz", {"train": 100, "val": 100}, "val"),
        ("train.npz", {"train": 100}, "train"),
    ]:
        _npz(in_tmp / name, **splits)
        result = _run("bench", onnx_path, "--data", name, "--target", "mobile", "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert (report["accuracy_split"], report["accuracy_samples"]) == (scored, 100)
        said = "note: scored on the train split (the data file has no test or val split)"
        assert (said in result.stderr) == (scored == "train")


def test_optimize_still_needs_train_and_val(in_tmp: Path, model_files: dict) -> None:
    _npz(in_tmp / "val.npz", val=20)
    result = _run("optimize", model_files["bundle"], "--data", "val.npz", "--out", "run")
    _assert_one_error(result, "lacks arrays x_train, y_train (has x_val, y_val)")
    assert not (in_tmp / "run").exists()


# --- further bad inputs --------------------------------------------------------------------


def test_an_onnx_with_a_fixed_batch_is_exit_2_not_a_failed_budget(in_tmp: Path) -> None:
    # measured latency runs one sample and scoring runs batches: a fixed batch of 64 fits
    # neither, and check's exit 1 would read in CI as a failed budget
    _fixed_batch_onnx(in_tmp / "b64.onnx", 64)
    message = "ONNX model b64.onnx takes a fixed batch of 64 samples"
    _assert_one_error(_run("bench", "b64.onnx"), message)
    _assert_one_error(_run("check", "b64.onnx", "--max-size-mb", "2"), message)
    _npz(in_tmp / "d.npz", val=20)
    _assert_one_error(_run("bench", "b64.onnx", "--target", "mobile", "--data", "d.npz"), message)
    # a fixed batch of 1 is what many exporters write: it scores in batches of one
    _fixed_batch_onnx(in_tmp / "b1.onnx", 1)
    ok = _run("bench", "b1.onnx", "--target", "mobile", "--data", "d.npz")
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
@pytest.mark.parametrize("command", ["bench", "check"])
def test_a_time_budget_that_is_no_duration_is_exit_2(
    in_tmp: Path, model_files: dict, command: str, value: str
) -> None:
    budgets = ["--max-size-mb", "2"] if command == "check" else []
    result = _run(command, model_files["onnx"], *budgets, "--time-budget", value)
    _assert_one_error(result, f"--time-budget must be a positive number of seconds, got {value}")


def test_a_single_npy_array_is_not_an_npz(in_tmp: Path, model_files: dict) -> None:
    np.save(in_tmp / "x.npy", _split(6)[0])
    result = _run("bench", model_files["bundle"], "--data", "x.npy", "--target", "mobile")
    _assert_one_error(result, "data file x.npy is a single .npy array, not an .npz")


def test_object_arrays_say_so_instead_of_pointing_at_allow_pickle(
    in_tmp: Path, model_files: dict
) -> None:
    x, y = _split(6)
    np.savez(in_tmp / "obj.npz", x_train=x, y_train=y, x_val=x, y_val=np.array(list(y), object))
    result = _run("bench", model_files["bundle"], "--data", "obj.npz", "--target", "mobile")
    _assert_one_error(
        result, "y_val holds Python objects (dtype object), which edgeopt does not unpickle"
    )
    assert "allow_pickle" not in result.stderr


def test_a_symbolic_non_batch_dim_is_named(in_tmp: Path) -> None:
    _relu_onnx(in_tmp / "sym.onnx", ["n", "channels", 16, 16])
    result = _run("bench", "sym.onnx", "--target", "mobile")
    _assert_one_error(result, "ONNX model sym.onnx has a dynamic input shape (channels, 16, 16)")
    assert "Hint: pass --input-shape with one sample's shape" in result.stderr


def test_inputs_without_sample_dimensions_are_refused_at_load(
    in_tmp: Path, model_files: dict
) -> None:
    x, y = _split(6)
    _npz(in_tmp / "flat.npz", train=(x[:, 0, 0, 0], y), val=(x[:, 0, 0, 0], y))
    result = _run("bench", model_files["bundle"], "--data", "flat.npz", "--target", "mobile")
    _assert_one_error(result, "x_train has shape (6,): no sample dimensions")


def test_a_tampered_baseline_record_cannot_ask_for_a_huge_input(tmp_path: Path) -> None:
    from edgeopt.errors import ConfigError
    from edgeopt.rundir import Baseline

    record = Baseline(
        salt="s",
        input_shape=SHAPE,
        onnx_input=True,
        host="h",
        accuracy_kind="accuracy",
        val_accuracy=0.5,
        test_accuracy=0.5,
    ).to_dict()
    assert Baseline.from_dict(record).input_shape == SHAPE
    record["input_shape"] = [3, 100_000, 100_000]
    with pytest.raises(ConfigError, match="the run's baseline record declares an input of"):
        Baseline.from_dict(record)
