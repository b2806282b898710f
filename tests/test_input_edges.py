"""Hardening, round 3 (issue 22 probes D3, D5, D8, D9, D11, D15-D20): files that are not what
their name says, numbers past what a machine can do, and paths that are not plain files. Each
ends in one clear error (exit 2) before any work is written. Real files, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from edgeopt.cli import main

EDGEOPT = [sys.executable, "-c", "from edgeopt.cli import main; main()"]


def _run(*args: object, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def _one_line_error(result: Result) -> str:
    """The ``Error:`` line of a clean exit 2 (no traceback)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from an empty project folder (its .git stops check's config search there)."""
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- D8: a .pt2 that is not a torch.export archive ------------------------------------------


def _not_pt2(model_files: dict, t: Path) -> dict[str, Path]:
    """A truncated download, random bytes, an ONNX file and a torch.save bundle, named .pt2."""
    import numpy as np

    files = {
        "truncated": model_files["pt2"].read_bytes()[: model_files["pt2"].stat().st_size // 2],
        "random": np.random.default_rng(0).bytes(5000),
        "onnx": model_files["onnx"].read_bytes(),
        "bundle": model_files["bundle"].read_bytes(),
    }
    out = {}
    for name, blob in files.items():
        out[name] = t / f"{name}.pt2"
        out[name].write_bytes(blob)
    return out


@pytest.mark.parametrize("kind", ["truncated", "random", "onnx", "bundle"])
def test_pt2_that_is_not_an_archive_is_a_usage_error(
    kind: str, model_files: dict, in_tmp: Path
) -> None:
    path = _not_pt2(model_files, in_tmp)[kind]
    check = _run("check", path, "--target", "mobile", "--max-size-mb", "2")
    assert "not a torch.export .pt2" in _one_line_error(check)
    assert "W1" not in check.output  # no torch warning-traceback before the error
    bench = _run("bench", path, "--target", "mobile")
    assert "not a torch.export .pt2" in _one_line_error(bench)
    if kind == "bundle":
        assert "rename it to .pt" in bench.output


def test_optimize_refuses_a_broken_pt2_before_writing_a_run(
    model_files: dict, tiny_data: Path, in_tmp: Path
) -> None:
    path = _not_pt2(model_files, in_tmp)["truncated"]
    out = in_tmp / "run"
    result = _run(
        "optimize", path, "--data", tiny_data, "--target", "mobile", "--trials", 1,
        "--threads", 1, "--out", out,
    )  # fmt: skip
    assert "not a torch.export .pt2" in _one_line_error(result)
    assert not (out / "baseline").exists()


# --- D11: a seed the samplers cannot take ---------------------------------------------------


@pytest.mark.parametrize("seed", [-1, 2**33])
def test_out_of_range_seed_is_refused_before_the_run_directory_exists(
    seed: int, model_files: dict, tiny_data: Path, in_tmp: Path
) -> None:
    out = in_tmp / "run"
    result = _run(
        "optimize", model_files["bundle"], "--data", tiny_data, "--target", "mobile",
        "--trials", 1, "--threads", 1, "--seed", seed, "--out", out,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--seed" in result.output and "4294967295" in result.output
    assert not out.exists()  # so the corrected --seed 0 starts a fresh run there


def test_run_config_refuses_an_out_of_range_seed() -> None:
    from edgeopt.config import RunConfig
    from edgeopt.errors import ConfigError
    from edgeopt.loading import ModelSpec

    with pytest.raises(ConfigError, match="--seed must be in 0..4294967295"):
        RunConfig(model=ModelSpec("m.pt"), targets=("cpu",), seed=-1)


# --- D19: a zero duration -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0s", "0h0m"])
def test_zero_timeout_is_refused_before_the_run_directory_exists(
    value: str, model_files: dict, tiny_data: Path, in_tmp: Path
) -> None:
    out = in_tmp / "run"
    result = _run(
        "optimize", model_files["bundle"], "--data", tiny_data, "--target", "mobile",
        "--trials", 1, "--threads", 1, "--timeout", value, "--out", out,
    )  # fmt: skip
    assert "--timeout" in _one_line_error(result)
    assert not out.exists()


# --- D15: a timing budget too large for the timer -------------------------------------------


@pytest.mark.parametrize("command", ["bench", "check"])
@pytest.mark.parametrize("budget", ["1e9", "1e308"])
def test_huge_time_budget_is_a_usage_error(
    command: str, budget: str, model_files: dict, in_tmp: Path
) -> None:
    extra = ["--max-size-mb", "2"] if command == "check" else []
    result = _run(command, model_files["onnx"], "--time-budget", budget, *extra)
    assert "--time-budget must be at most 3600 seconds" in _one_line_error(result)


# --- D18: more threads than the machine can use ---------------------------------------------


def test_bench_refuses_a_thread_count_far_over_the_cpus(model_files: dict, in_tmp: Path) -> None:
    import os

    limit = 4 * (os.cpu_count() or 1)
    result = _run("bench", model_files["onnx"], "--threads", f"1,{limit + 1}", "--time-budget", 1)
    assert f"--threads {limit + 1} is more than {limit} threads" in _one_line_error(result)
    assert "more than" in _one_line_error(_run("bench", model_files["onnx"], "--threads", 100000))


# --- D16: an input limit raised past anything allocatable ------------------------------------


def _relu_onnx(path: Path, dims: list[int]) -> Path:
    """A one-Relu ONNX graph whose input declares ``dims``."""
    import onnx
    from onnx import TensorProto
    from onnx import helper as oh

    graph = oh.make_graph(
        [oh.make_node("Relu", ["x"], ["y"])],
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("command", ["bench", "check"])
def test_input_limit_setting_is_capped_at_what_can_be_allocated(command: str, in_tmp: Path) -> None:
    bomb = _relu_onnx(in_tmp / "bomb.onnx", [1, 1, 1_000_000, 1_000_000])
    extra = ["--max-size-mb", "2"] if command == "check" else []
    env = {"EDGEOPT_MAX_INPUT_ELEMENTS": "1000000000000"}  # what the limit's hint once said
    result = _run(command, bomb, "--target", "mobile", *extra, env=env)
    assert "EDGEOPT_MAX_INPUT_ELEMENTS must be a positive whole number of values per sample, " \
        "at most 268,435,456" in _one_line_error(result)  # fmt: skip
    plain = _run(command, bomb, "--target", "mobile", *extra)
    assert "declares an input of 1x1000000x1000000" in _one_line_error(plain)
    assert "EDGEOPT_MAX_INPUT_ELEMENTS=1000000000000" not in plain.output  # would not help
    assert "the most EDGEOPT_MAX_INPUT_ELEMENTS=268435456 allows" in plain.output


# --- D17: --data that is not a regular file -------------------------------------------------


def _edgeopt(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, killed after 60 s (a hang fails the test)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*EDGEOPT, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_data_fifo_is_refused_without_blocking(model_files: dict, in_tmp: Path) -> None:
    fifo = in_tmp / "data.npz"
    os.mkfifo(fifo)
    for command in (
        ["check", model_files["onnx"], "--data", fifo, "--target", "mobile", "--min-accuracy", 0.1],
        ["bench", model_files["onnx"], "--data", fifo, "--target", "mobile"],
    ):
        result = _edgeopt(*command, cwd=in_tmp)
        assert result.returncode == 2, result.stderr
        assert "data.npz is a named pipe (FIFO), not a regular file" in result.stderr
        assert "Traceback" not in result.stderr


def test_data_device_or_folder_from_the_config_is_refused(model_files: dict, in_tmp: Path) -> None:
    (in_tmp / "data").mkdir()
    # a folder is read as an image folder (#24): an empty one has no classes
    for data, error in (
        ("/dev/zero", "is a device or other special file, not a regular file"),
        ("data", "data has no class folders"),
    ):
        (in_tmp / "pyproject.toml").write_text(
            f'[tool.edgeopt]\ntarget = "mobile"\nmin_accuracy = 0.1\ndata = "{data}"\n'
        )
        result = _run("check", model_files["onnx"])
        assert error in _one_line_error(result)


def _npz_declaring(path: Path, declared: int) -> Path:
    """A small valid npz whose zip directory declares ``declared`` bytes per member, spread
    over as many 4 GiB members as needed (the shape of a compressed file of zeros)."""
    import zipfile

    import numpy as np

    x = np.zeros((2, 1, 16, 16), np.float32)
    per, members = 0xFFFF_0000, -(-declared // 0xFFFF_0000)
    np.savez(path, **{f"x_{i}": x for i in range(members)})
    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        offset = zf.start_dir
    while (offset := blob.find(b"PK\x01\x02", offset)) >= 0:
        blob[offset + 24 : offset + 28] = per.to_bytes(4, "little")  # uncompressed size
        offset += 4
    path.write_bytes(bytes(blob))
    return path


def test_data_that_unpacks_past_memory_is_refused_before_reading(
    model_files: dict, in_tmp: Path
) -> None:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    bomb = _npz_declaring(in_tmp / "bomb.npz", memory + 1)
    result = _run("check", model_files["onnx"], "--data", bomb, "--min-accuracy", 0.1)
    assert "GiB of arrays, more than this machine's" in _one_line_error(result)


# --- D20: a path that is not UTF-8 ----------------------------------------------------------


BAD_BYTE = os.fsdecode(b"\xff")  # a Latin-1 byte in a UTF-8 file system: a surrogate in str


@pytest.mark.parametrize("where", ["model", "out"])
def test_non_utf8_path_is_refused_before_anything_is_written(
    where: str, model_files: dict, tiny_data: Path, in_tmp: Path
) -> None:
    folder = in_tmp / f"bad{BAD_BYTE}enc"
    folder.mkdir()
    model = model_files["bundle"]
    if where == "model":
        model = folder / "m.pt"
        model.write_bytes(model_files["bundle"].read_bytes())
    out = folder / "run" if where == "out" else in_tmp / "run"
    result = _run(
        "optimize", model, "--data", tiny_data, "--target", "mobile", "--trials", 1,
        "--threads", 1, "--out", out,
    )  # fmt: skip
    assert "bad\\xffenc" in _one_line_error(result)
    assert "is not valid UTF-8" in result.output
    assert not out.exists()


# --- D9: a zoo builder asked, by a small file, for a huge model -----------------------------


_PEAK_RSS = """
import resource, sys
from edgeopt.cli import main
try:
    main(sys.argv[1:])
finally:
    print("peak MiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)
"""


def test_bundle_kwargs_cannot_make_edgeopt_build_far_more_than_its_weights(in_tmp: Path) -> None:
    import torch

    # 1.6 KB on disk; width 1200 builds 194 million parameters (780 MB) on the CPU; the
    # same file with width 4 is the control: what refusing any mismatched bundle costs here
    peaks = {}
    for width in (4, 1200):
        torch.save(
            {
                "edgeopt_bundle": 1,
                "arch": "edgeopt.zoo:plain_cnn",
                "arch_kwargs": f'{{"in_channels": 1, "num_classes": 10, "width": {width}}}',
                "input_shape": [1, 16, 16],
                "state_dict": {"w": torch.zeros(1)},
            },
            in_tmp / f"bomb{width}.pt",
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, "bench", f"bomb{width}.pt"],
            cwd=in_tmp, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        peaks[width] = int(result.stderr.split("peak MiB")[1])
    assert peaks[1200] < peaks[4] + 150, f"{peaks} MiB to refuse a 1.6 KB file"
    assert result.returncode == 2, result.stderr
    assert "do not fit architecture edgeopt.zoo:plain_cnn" in result.stderr
    assert "the file holds 1 weight values, the architecture 194,506,815" in result.stderr


def test_meta_check_leaves_a_fitting_bundle_and_a_real_mismatch_alone(
    model_files: dict, in_tmp: Path
) -> None:
    assert _run("bench", model_files["bundle"], "--target", "mobile").exit_code == 0
    wrong = _run(
        "bench", model_files["bundle"], "--target", "mobile", "--arch-kwargs", '{"width": 8}'
    )
    assert "size mismatch for 0.weight: the file holds [4, 1, 3, 3]" in _one_line_error(wrong)


# --- D5: an ONNX model with its weights in an external data file ----------------------------


def _external_data_onnx(model_files: dict, folder: Path) -> Path:
    import onnx

    folder.mkdir()
    path = folder / "model_ext.onnx"
    onnx.save_model(
        onnx.load(model_files["onnx"]),
        path,
        save_as_external_data=True,
        location="model_ext.bin",
        size_threshold=0,
    )
    assert (folder / "model_ext.bin").stat().st_size > path.stat().st_size
    return path


def test_external_data_onnx_loads_from_any_folder_and_counts_its_weights(
    model_files: dict, in_tmp: Path
) -> None:
    import json

    path = _external_data_onnx(model_files, in_tmp / "ext")
    result = _run("bench", path.relative_to(in_tmp), "--json", "--time-budget", 1)
    assert result.exit_code == 0, result.output
    size = json.loads(result.stdout)["results"][0]["size_mb"]["value"]
    whole = model_files["onnx"].stat().st_size / 2**20
    assert abs(size - whole) < 0.2 * whole, (size, whole)  # the .bin is counted


def test_optimize_runs_an_external_data_onnx_from_another_folder(
    model_files: dict, tiny_data: Path, in_tmp: Path
) -> None:
    path = _external_data_onnx(model_files, in_tmp / "ext")
    out = in_tmp / "run"
    result = _run(
        "optimize", path.relative_to(in_tmp), "--data", tiny_data, "--target", "mobile",
        "--trials", 2, "--threads", 1, "--no-report", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for n in (0, 1):  # the unchanged model and int8: both read the weights
        assert f"trial {n} complete" in result.output, result.output
        assert sorted(p.name for p in (out / "trials" / str(n)).glob("*.onnx")) == ["model.onnx"]
    # no external-data file beside the baseline: it was saved whole (sample.npy is the one
    # input workers time with)
    baseline_files = sorted(p.name for p in (out / "baseline").iterdir())
    assert baseline_files == ["baseline.json", "model.onnx", "sample.npy"]


# --- D3: a profile file that changed between a run and its resume ---------------------------


def _profile_copy(path: Path, name: str) -> Path:
    """The shipped mobile profile as the user's own file, named ``name`` (no aliases)."""
    from edgeopt.profiles import load_profile

    text = load_profile("mobile").source_path.read_text()  # type: ignore[union-attr]
    text = text.replace('name = "mobile-sd8gen2"', f'name = "{name}"')
    path.write_text(text.replace('aliases = ["mobile"]', "aliases = []"))
    return path


def _optimize(model: Path, data: Path, target: str, out: Path, trials: int) -> Result:
    return _run(
        "optimize", model, "--data", data, "--target", target, "--trials", trials,
        "--threads", 1, "--no-report", "--out", out,
    )  # fmt: skip


def test_resume_with_a_changed_profile_file_is_refused(
    model_files: dict, tiny_data: Path, in_tmp: Path
) -> None:
    board = _profile_copy(in_tmp / "myboard.toml", "myboard")
    out = in_tmp / "run"
    first = _optimize(model_files["bundle"], tiny_data, str(board), out, 1)
    assert first.exit_code == 0, first.output
    same = _optimize(model_files["bundle"], tiny_data, str(board), out, 2)  # unchanged: resumes
    assert same.exit_code == 0, same.output
    run_json = (out / "run.json").read_bytes()
    slow = "invoke_overhead_us = { v = 400.0,"
    board.write_text(board.read_text().replace("invoke_overhead_us = { v = 100.0,", slow))
    changed = _optimize(model_files["bundle"], tiny_data, str(board), out, 3)
    error = _one_line_error(changed)
    assert "profile myboard is not the file this run started with" in error
    assert "another --out" in changed.output
    assert (out / "run.json").read_bytes() == run_json


def test_a_file_naming_itself_as_the_shipped_profile_does_not_resume_its_run(
    model_files: dict, tiny_data: Path, in_tmp: Path
) -> None:
    out = in_tmp / "run"
    first = _optimize(model_files["bundle"], tiny_data, "mobile", out, 1)
    assert first.exit_code == 0, first.output
    clash = _profile_copy(in_tmp / "clash.toml", "mobile-sd8gen2")
    clash.write_text(clash.read_text().replace("v = 100.0,", "v = 900.0,"))
    result = _optimize(model_files["bundle"], tiny_data, str(clash), out, 2)
    assert "profile mobile-sd8gen2 is not the file" in _one_line_error(result)
