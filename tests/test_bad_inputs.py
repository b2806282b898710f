"""Hardening: a model file runs no code without an opt-in on the command line, and every bad
input a careful user can bring ends in one clear error (exit 2) before any search work."""

from __future__ import annotations

import datetime
import io
import json
import os
import sys
import zipfile
from collections.abc import Callable
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
from edgeopt.errors import CandidateError, ConfigError
from edgeopt.loading import BUNDLE_KEY, ModelSpec, load_model, save_bundle

SHAPE = (1, 16, 16)
PLAIN = "edgeopt.zoo:plain_cnn"
PLAIN_KWARGS = {"in_channels": 1, "num_classes": 10, "width": 4}


def _run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


# --- files a user may bring, built in code --------------------------------------------------


def _bundle(t: Path, name: str, **fields: Any) -> Path:
    """A bundle-shaped file with the tiny model's weights; ``fields`` replace (None: drop)."""
    torch.manual_seed(0)
    model = zoo.plain_cnn(**PLAIN_KWARGS)
    payload: dict[str, Any] = {
        BUNDLE_KEY: 1,
        "arch": PLAIN,
        "arch_kwargs": json.dumps(PLAIN_KWARGS),
        "input_shape": list(SHAPE),
        "state_dict": model.state_dict(),
    }
    payload.update(fields)
    path = t / name
    torch.save({k: v for k, v in payload.items() if v is not None}, path)
    return path


def _npz(t: Path, name: str = "data.npz", **arrays: Any) -> Path:
    """A valid 10-class dataset shaped like the models' input; ``arrays`` replace (None:
    drop)."""
    x = np.random.default_rng(0).standard_normal((6, *SHAPE)).astype(np.float32)
    y = np.arange(6, dtype=np.int64)
    base: dict[str, Any] = {"x_train": x, "y_train": y, "x_val": x.copy(), "y_val": y.copy()}
    base.update(arrays)
    path = t / name
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


def _with(**changes: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
    """Arrays of the default dataset changed by functions, e.g. ``y_val=lambda y: y + 10``."""
    x = np.random.default_rng(0).standard_normal((6, *SHAPE)).astype(np.float32)
    y = np.arange(6, dtype=np.int64)
    default = {"x_train": x, "y_train": y, "x_val": x.copy(), "y_val": y.copy()}
    return {k: fn(default[k].copy()) for k, fn in changes.items()}


def _nan_at(x: np.ndarray, i: int) -> np.ndarray:
    x[i, 0, 0, 0] = np.nan
    return x


def _onnx(t: Path, name: str, nodes: list[Any], inputs: list[Any], **kw: Any) -> Path:
    """A one-graph ONNX file (opset 17 plus any custom domains the nodes use)."""
    domains = sorted({n.domain for n in nodes if n.domain})
    opsets = [oh.make_opsetid("", 17)] + [oh.make_opsetid(d, 1) for d in domains]
    out = oh.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "k"])
    graph = oh.make_graph(nodes, "g", inputs, [out], initializer=kw.get("init", []))
    path = t / name
    onnx.save(oh.make_model(graph, opset_imports=opsets), path)
    return path


def _x(elem: int = TensorProto.FLOAT, name: str = "x") -> Any:
    return oh.make_tensor_value_info(name, elem, ["n", 4])


def _custom_op_onnx(t: Path) -> Path:
    return _onnx(
        t, "custom.onnx", [oh.make_node("FancyOp", ["x"], ["y"], domain="com.acme")], [_x()]
    )


def _unknown_op_onnx(t: Path) -> Path:
    return _onnx(t, "unknown.onnx", [oh.make_node("NoSuchOp", ["x"], ["y"])], [_x()])


def _failing_run_onnx(t: Path) -> Path:
    shape = oh.make_tensor("s", TensorProto.INT64, [2], [3, 5])
    node = oh.make_node("Reshape", ["x", "s"], ["y"])
    return _onnx(t, "reshape.onnx", [node], [_x()], init=[shape])


def _two_input_onnx(t: Path) -> Path:
    node = oh.make_node("Add", ["x", "x2"], ["y"])
    return _onnx(t, "two.onnx", [node], [_x(), _x(name="x2")])


def _dynamic_onnx(t: Path) -> Path:
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c"])
    return _onnx(t, "dynamic.onnx", [oh.make_node("Relu", ["x"], ["y"])], [x])


def _damaged(src: Path, dst: Path) -> str:
    """Copy ``src`` (a zip) to ``dst`` with one byte flipped in its largest member's data,
    as a bad disk or transfer leaves it; returns that member's name."""
    with zipfile.ZipFile(src) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
    raw = bytearray(src.read_bytes())
    header = info.header_offset
    name_len = int.from_bytes(raw[header + 26 : header + 28], "little")
    extra_len = int.from_bytes(raw[header + 28 : header + 30], "little")
    start = header + 30 + name_len + extra_len
    raw[start + info.compress_size // 2] ^= 0xFF
    dst.write_bytes(bytes(raw))
    return info.filename


def _damaged_bundle(f: dict, t: Path) -> tuple[Path, str]:
    dst = t / "damaged.pt"
    return dst, _damaged(f["bundle"], dst)


def _damaged_pt2(f: dict, t: Path) -> tuple[Path, str]:
    dst = t / "damaged.pt2"
    return dst, _damaged(f["pt2"], dst)


class _Touch:
    """Unpickling this runs ``touch PATH``: what a malicious file would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def _pickling_pt2(f: dict, t: Path, marker: Path | None = None) -> Path:
    """The fixture's ``.pt2`` with its first weight swapped for a pickle that touches
    ``marker``, flagged ``use_pickle`` as torch.export.save flags tensor subclasses."""
    payload = io.BytesIO()
    torch.save(_Touch(marker or t / "pwned"), payload)
    with zipfile.ZipFile(f["pt2"]) as src:
        members = {info.filename: (info, src.read(info.filename)) for info in src.infolist()}
    config_name = next(n for n in members if n.endswith("data/weights/model_weights_config.json"))
    config = json.loads(members[config_name][1])
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    weight_name = config_name.rsplit("/", 1)[0] + "/" + first["path_name"]
    dst = t / "evil.pt2"
    with zipfile.ZipFile(dst, "w") as out:
        for name, (info, data) in members.items():
            if name == config_name:
                data = json.dumps(config).encode()
            elif name == weight_name:
                data = payload.getvalue()
            out.writestr(info, data)
    return dst


def _damaged_npz(t: Path) -> Path:
    dst = t / "damaged.npz"
    _damaged(_npz(t), dst)
    return dst


def _other_shape_bundle(t: Path) -> Path:
    torch.manual_seed(0)
    model = zoo.plain_cnn(**PLAIN_KWARGS)
    return save_bundle(
        model, t / "small.pt", arch=PLAIN, arch_kwargs=PLAIN_KWARGS, input_shape=(1, 8, 8)
    )


def _pickled(t: Path, obj: object) -> Path:
    path = t / "obj.pt"
    torch.save(obj, path)
    return path


# --- every bad input: (args from (model_files, tmp_path), exact text on stderr) -------------

A = Callable[[dict, Path], list[object]]
BAD_INPUTS: list[tuple[str, A, str]] = [
    # a bundle names code: never imported or called without an opt-in (item 1)
    (
        "bundle_names_os_system",
        lambda f, t: ["bench", _bundle(t, "e.pt", arch="os:system")],
        "names architecture 'os:system', which is not one of edgeopt's own (edgeopt.zoo); "
        "building it would import and run that code",
    ),
    (
        "bundle_names_an_attribute_path_through_the_zoo",
        lambda f, t: ["bench", _bundle(t, "e.pt", arch="edgeopt.zoo:nn.Module")],
        "names architecture 'edgeopt.zoo:nn.Module', which is not one of edgeopt's own",
    ),
    (
        "bundle_names_another_package",
        lambda f, t: ["bench", _bundle(t, "e.pt", arch="mypkg.nets:build")],
        "names architecture 'mypkg.nets:build', which is not one of edgeopt's own",
    ),
    (
        "bundle_arch_is_not_a_reference",
        lambda f, t: ["bench", _bundle(t, "e.pt", arch="os.system('x')")],
        "is a corrupt edgeopt bundle: invalid architecture reference \"os.system('x')\"",
    ),
    (
        "bundle_without_weights",
        lambda f, t: ["bench", _bundle(t, "e.pt", state_dict=None)],
        "is a corrupt edgeopt bundle: no state_dict",
    ),
    (
        "bundle_kwargs_not_json",
        lambda f, t: ["bench", _bundle(t, "e.pt", arch_kwargs="{width: 4")],
        "is a corrupt edgeopt bundle: arch_kwargs is not a JSON object",
    ),
    (
        "bundle_bad_input_shape",
        lambda f, t: ["bench", _bundle(t, "e.pt", input_shape=[1, 0, 16])],
        "is a corrupt edgeopt bundle: invalid input_shape [1, 0, 16]",
    ),
    (
        "bundle_from_a_newer_edgeopt",
        lambda f, t: ["bench", _bundle(t, "e.pt", **{BUNDLE_KEY: 2})],
        "is an edgeopt bundle of version 2; this edgeopt reads version 1",
    ),
    # labels the model cannot output (item 3)
    (
        "labels_beyond_the_outputs_optimize",
        lambda f, t: [
            "optimize",
            f["bundle"],
            "--data",
            _npz(t, **_with(y_train=lambda y: y + 10, y_val=lambda y: y + 11)),
            "--out",
            t / "run",
        ],
        "labels in y_val go up to 16, but the model has 10 outputs (classes 0..9)",
    ),
    (
        "labels_beyond_the_outputs_onnx_bench",
        lambda f, t: ["bench", f["onnx"], "--data", _npz(t, **_with(y_train=lambda y: y + 10))],
        "labels in y_train go up to 15, but the model has 10 outputs (classes 0..9)",
    ),
    (
        "negative_labels",
        lambda f, t: ["bench", f["bundle"], "--data", _npz(t, **_with(y_train=lambda y: y - 1))],
        "y_train holds negative labels (lowest -1)",
    ),
    # NaN / inf inputs (item 4)
    (
        "nan_in_x_val",
        lambda f, t: [
            "optimize",
            f["bundle"],
            "--data",
            _npz(t, **_with(x_val=lambda x: _nan_at(x, 2))),
            "--out",
            t / "run",
        ],
        "x_val holds 1 NaN and 0 infinite values (first in sample 2)",
    ),
    (
        "float64_beyond_float32_in_x_train",
        lambda f, t: [
            "bench",
            f["bundle"],
            "--data",
            _npz(t, **_with(x_train=lambda x: np.where(x > 2.0, 1e39, x.astype(np.float64)))),
        ],
        "x_train holds 0 NaN and",
    ),
    # damaged archives (item 5)
    (
        "bundle_with_a_bad_crc",
        lambda f, t: ["bench", _damaged_bundle(f, t)[0]],
        "fails its CRC check",
    ),
    (
        "pt2_with_a_bad_crc",
        lambda f, t: ["bench", _damaged_pt2(f, t)[0]],
        "fails its CRC check",
    ),
    # empty and mismatched splits (item 6)
    (
        "empty_val_split",
        lambda f, t: [
            "optimize",
            f["bundle"],
            "--data",
            _npz(t, x_val=np.zeros((0, *SHAPE), np.float32), y_val=np.zeros(0, np.int64)),
            "--out",
            t / "run",
        ],
        "the val split is empty (x_val has no samples)",
    ),
    (
        "labels_one_short",
        lambda f, t: ["bench", f["bundle"], "--data", _npz(t, y_train=np.arange(5))],
        "x_train has 6 samples but y_train has 5",
    ),
    # ONNX that ONNX Runtime cannot run (item 7)
    (
        "onnx_custom_domain_op_bench",
        lambda f, t: ["bench", _custom_op_onnx(t)],
        "custom.onnx: Fatal error: com.acme:FancyOp(-1) is not a registered function/op",
    ),
    (
        "onnx_custom_domain_op_check_mobile",
        lambda f, t: ["check", _custom_op_onnx(t), "--target", "mobile", "--max-size-mb", "2"],
        "custom.onnx: Fatal error: com.acme:FancyOp(-1) is not a registered function/op",
    ),
    (
        "onnx_custom_domain_op_optimize",
        lambda f, t: ["optimize", _custom_op_onnx(t), "--out", t / "run"],
        "custom.onnx: Fatal error: com.acme:FancyOp(-1) is not a registered function/op",
    ),
    (
        "onnx_unknown_op_type",
        lambda f, t: ["bench", _unknown_op_onnx(t), "--input-shape", "4"],
        "No Op registered for NoSuchOp with domain_version of 17",
    ),
    (
        "onnx_fails_when_run",
        lambda f, t: ["bench", _failing_run_onnx(t), "--input-shape", "4"],
        "reshape.onnx on an input of shape (1, 4): Reshape node: The input tensor cannot be "
        "reshaped to the requested shape. Input shape:{1,4}, requested shape:{3,5}",
    ),
    (
        "onnx_two_inputs",
        lambda f, t: ["bench", _two_input_onnx(t), "--input-shape", "4"],
        "takes 2 inputs; a plain --input-shape does not say which one it is for",
    ),
    (
        "onnx_dynamic_shape_without_input_shape",
        lambda f, t: ["bench", _dynamic_onnx(t)],
        "has a dynamic input shape (c,)",  # the symbolic dimension by its name
    ),
    (
        "onnx_input_shape_disagrees",
        lambda f, t: ["bench", f["onnx"], "--input-shape", "3,16,16"],
        "--input-shape (3, 16, 16) does not match the ONNX graph's input (1, 16, 16)",
    ),
    # --data files a user gets wrong
    (
        "data_wrong_keys",
        lambda f, t: [
            "bench",
            f["bundle"],
            "--data",
            _npz(t, x_train=None, y_train=None, x_val=None, y_val=None, X=np.zeros(2), y=[1]),
        ],
        "has no labelled split: it lacks arrays x_test, y_test (or x_val, y_val, or x_train, "
        "y_train) (has X, y)",
    ),
    (
        "data_with_no_arrays",
        lambda f, t: [
            "bench",
            f["bundle"],
            "--data",
            _npz(t, x_train=None, y_train=None, x_val=None, y_val=None),
        ],
        "has no labelled split: it lacks arrays x_test, y_test (or x_val, y_val, or x_train, "
        "y_train) (has none)",
    ),
    (
        "data_test_inputs_without_labels",
        lambda f, t: [
            "bench",
            f["bundle"],
            "--data",
            _npz(t, x_test=np.zeros((2, *SHAPE), np.float32)),
        ],
        "has only one of x_test/y_test",
    ),
    (
        "data_float_labels",
        lambda f, t: [
            "bench",
            f["bundle"],
            "--data",
            _npz(t, **_with(y_train=lambda y: y.astype(np.float32))),
        ],
        "y_train must hold integer class indices, got float32",
    ),
    (
        "data_one_hot_labels",
        lambda f, t: [
            "bench",
            f["bundle"],
            "--data",
            _npz(t, y_val=np.eye(10, dtype=np.int64)[np.arange(6)]),
        ],
        "y_val must be one class index per sample, got shape (6, 10)",
    ),
    (
        "data_string_inputs",
        lambda f, t: ["bench", f["bundle"], "--data", _npz(t, x_train=np.array(list("abcdef")))],
        "x_train must hold numbers, got <U1",
    ),
    (
        "data_splits_of_different_shapes",
        lambda f, t: [
            "bench",
            f["bundle"],
            "--data",
            _npz(t, x_val=np.zeros((6, 1, 8, 8), np.float32)),
        ],
        "splits have different sample shapes [(1, 8, 8), (1, 16, 16)]",
    ),
    (
        "data_with_a_bad_crc",
        lambda f, t: ["bench", f["bundle"], "--data", _damaged_npz(t)],
        "Bad CRC-32 for file 'x_train.npy'",
    ),
    (
        "data_not_an_npz",
        lambda f, t: ["bench", f["bundle"], "--data", f["garbage"]],
        "is not a valid .npz (not a zip archive)",
    ),
    # architectures and flags
    (
        "arch_module_missing",
        lambda f, t: [
            "bench",
            f["state_dict"],
            "--arch",
            "no_such_module_xyz:net",
            "--input-shape",
            "1,16,16",
        ],
        "cannot import 'no_such_module_xyz' for --arch no_such_module_xyz:net",
    ),
    (
        "arch_attribute_missing",
        lambda f, t: ["bench", f["state_dict"], "--arch", "edgeopt.zoo:nope"],
        "'edgeopt.zoo' has no attribute 'nope' (from --arch edgeopt.zoo:nope)",
    ),
    (
        "arch_not_a_model_builder",
        lambda f, t: [
            "bench",
            f["state_dict"],
            "--arch",
            "collections:OrderedDict",
            "--input-shape",
            "1,16,16",
        ],
        "collections:OrderedDict returned a OrderedDict, not a torch.nn.Module",
    ),
    (
        "arch_kwargs_not_an_object",
        lambda f, t: ["bench", f["state_dict"], "--arch", PLAIN, "--arch-kwargs", "[4]"],
        "--arch-kwargs must be a JSON object",
    ),
    (
        "arch_kwargs_unknown_parameter",
        lambda f, t: [
            "bench",
            f["state_dict"],
            "--arch",
            PLAIN,
            "--arch-kwargs",
            '{"depth": 3}',
        ],
        "cannot build edgeopt.zoo:plain_cnn with kwargs {'depth': 3}",
    ),
    (
        "state_dict_without_input_shape",
        lambda f, t: [
            "bench",
            f["state_dict"],
            "--arch",
            PLAIN,
            "--arch-kwargs",
            json.dumps(PLAIN_KWARGS),
        ],
        "is a state_dict, which does not record its input shape",
    ),
    (
        "torchscript_without_input_shape",
        lambda f, t: ["bench", f["torchscript"]],
        "is a TorchScript archive, which does not record its input shape",
    ),
    (
        "pt2_with_pickled_weights",
        lambda f, t: ["bench", _pickling_pt2(f, t)],
        "evil.pt2 holds pickled objects (0.weight); loading it would run code from the file",
    ),
    (
        "pt2_input_shape_disagrees",
        lambda f, t: ["bench", f["pt2"], "--input-shape", "1,8,8"],
        "--input-shape (1, 8, 8) does not match the program's input (1, 16, 16)",
    ),
    (
        "trusted_pickle_of_a_non_model",
        lambda f, t: [
            "bench",
            _pickled(t, datetime.date(2024, 1, 1)),
            "--trust-pickle",
            "--input-shape",
            "1,16,16",
        ],
        "holds a date, not a torch.nn.Module",
    ),
    (
        "list_of_tensors",
        lambda f, t: ["bench", _pickled(t, [torch.zeros(2)])],
        "holds a list that is neither a bundle nor a state_dict",
    ),
    (
        "vs_model_of_another_shape",
        lambda f, t: ["bench", f["bundle"], "--vs", _other_shape_bundle(t)],
        "--vs model takes input (1, 8, 8), but the first model takes (1, 16, 16)",
    ),
]


@pytest.mark.parametrize(
    ("make_args", "message"),
    [pytest.param(a, m, id=i) for i, a, m in BAD_INPUTS],
)
def test_bad_input_is_one_clear_error_with_exit_2(
    tmp_path: Path,
    model_files: dict,
    monkeypatch: pytest.MonkeyPatch,
    make_args: A,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _run(*make_args(model_files, tmp_path))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stderr.startswith("Error: ")
    assert len(result.stderr.splitlines()) <= 2  # Error: + Hint:, nothing from the libraries
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # refused before the run directory is written


# --- item 1: what a bundle may make edgeopt run ---------------------------------------------


def test_the_reported_exploit_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save(
        {
            "edgeopt_bundle": 1,
            "arch": "os:system",
            "arch_kwargs": '{"command":"touch pwned"}',
            "input_shape": [1, 16, 16],
            "state_dict": {"w": torch.zeros(1)},
        },
        "e.pt",
    )
    check = ["check", "e.pt", "--max-size-mb", "2"]
    for cmd in (["bench", "e.pt"], check, ["optimize", "e.pt", "--out", "run"]):
        result = _run(*cmd)
        assert result.exit_code == 2, result.output
        assert "Hint: if you trust this file and the code it names, pass --trust-arch" in (
            result.stderr
        )
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "run").exists()


def _user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> str:
    """A user's own package with a model builder, importable from ``tmp_path``; it leaves a
    marker file when imported, so a test sees whether edgeopt ran its code."""
    (tmp_path / f"{name}.py").write_text(
        "from pathlib import Path\n"
        "from edgeopt.zoo import plain_cnn\n"
        f"Path({str(tmp_path / 'imported')!r}).touch()\n"
        "def build(**kw):\n"
        "    return plain_cnn(**kw)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return f"{name}:build"


def test_a_bundle_with_the_users_arch_loads_only_with_an_opt_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = _user_package(tmp_path, monkeypatch, "edgeopt_test_usernets")
    path = _bundle(tmp_path, "mine.pt", arch=ref)
    refused = _run("bench", path, "--target", "mobile")
    assert refused.exit_code == 2
    assert f"names architecture {ref!r}, which is not one of edgeopt's own" in refused.stderr
    assert not (tmp_path / "imported").exists()
    for flags in (["--trust-arch"], ["--arch", ref]):
        ok = _run("bench", path, "--target", "mobile", "--json", *flags)
        assert ok.exit_code == 0, ok.output
        assert json.loads(ok.stdout)["results"][0]["latency_p50_ms"]["provenance"] == "estimated"
    assert (tmp_path / "imported").exists()


def test_arch_replaces_the_recorded_one_with_the_recorded_kwargs(tmp_path: Path) -> None:
    path = _bundle(tmp_path, "e.pt", arch="os:system")
    loaded = load_model(path, arch=PLAIN)
    assert loaded.module[0].out_channels == PLAIN_KWARGS["width"]
    # --arch-kwargs override the recorded ones key by key
    with pytest.raises(ConfigError, match="do not fit architecture"):
        load_model(path, arch=PLAIN, arch_kwargs={"width": 8})


def test_example_models_load_without_a_flag() -> None:
    root = Path(__file__).resolve().parent.parent / "models"
    for name in ("plain_cnn", "resnet_small", "mobilenet_small"):
        loaded = load_model(root / f"{name}.pt")
        assert loaded.input_shape == SHAPE


def test_trust_is_not_carried_from_a_file() -> None:
    spec = ModelSpec(path="m.pt", trust_pickle=True, trust_arch=True)
    data = spec.to_dict()
    assert ModelSpec.from_dict(data) == spec  # a parent hands its own child the flags
    read_back = ModelSpec.from_dict(data, with_trust=False)
    assert (read_back.trust_pickle, read_back.trust_arch) == (False, False)
    assert read_back.with_trust(trust_pickle=False, trust_arch=True).trust_arch
    # a run.json written before trust_arch existed still loads
    old = {"path": "m.pt", "arch": None, "arch_kwargs": {}, "input_shape": None}
    assert ModelSpec.from_dict(old) == ModelSpec(path="m.pt", arch_kwargs={})


# --- items 4, 5, 16: labels that lie, damaged files, pickles whose class is missing ---------


def test_a_prune_that_removes_nothing_fails_instead_of_lying(tmp_path: Path) -> None:
    from edgeopt.profiles import load_profile
    from edgeopt.stages import STAGES, PruneConfig, StageContext

    torch.manual_seed(0)
    model = zoo.plain_cnn(**PLAIN_KWARGS).eval()  # groups of 4, 8, 16 channels
    ctx = StageContext(
        workdir=tmp_path, profile=load_profile("cpu"), data=None, teacher=None, input_shape=SHAPE
    )
    with pytest.raises(CandidateError) as e:
        STAGES["prune"].apply(model, PruneConfig(ratio=0.7, round_to=16), ctx)
    assert e.value.stage == "prune"
    assert e.value.reason == (
        "nothing was pruned: ratio 0.70 in multiples of 16 channels kept 100.0% of the MACs"
    )
    # the same ratio with finer rounding does prune, and says how much
    pruned = STAGES["prune"].apply(model, PruneConfig(ratio=0.7, round_to=1), ctx)
    assert pruned.info["prune_report"]["macs_ratio"] < 0.3


def test_a_pt2_file_runs_no_code_but_a_plain_one_loads(
    model_files: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    evil = _pickling_pt2(model_files, tmp_path, marker)
    result = _run("bench", evil, "--target", "mobile")
    assert result.exit_code == 2
    assert "Hint: if you trust the file, pass --trust-pickle" in result.stderr
    assert not marker.exists()
    ok = _run("bench", model_files["pt2"], "--target", "mobile", "--json")
    assert ok.exit_code == 0, ok.output
    assert not marker.exists()
    # the payload is live: with the opt-in, torch unpickles it (and the weight is no tensor)
    _run("bench", evil, "--target", "mobile", "--trust-pickle")
    assert marker.exists()


def test_damaged_bundle_names_the_member(model_files: dict, tmp_path: Path) -> None:
    path, member = _damaged_bundle(model_files, tmp_path)
    result = _run("bench", path)
    assert result.exit_code == 2
    assert f"Error: {path} is damaged: archive member {member!r} fails its CRC check" in (
        result.stderr
    )
    assert "Hint: the file changed after it was saved" in result.stderr


def test_trusted_pickle_with_a_missing_module_says_pythonpath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "edgeopt_test_gone_nets"
    (tmp_path / f"{name}.py").write_text("import torch\nclass Net(torch.nn.Linear):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(name)
    path = tmp_path / "full.pt"
    torch.save(module.Net(4, 2), path)
    sys.path.remove(str(tmp_path))
    monkeypatch.delitem(sys.modules, name)
    result = _run("bench", path, "--trust-pickle", "--input-shape", "4")
    assert result.exit_code == 2
    assert f"Error: cannot unpickle {path}: No module named '{name}'" in result.stderr
    assert (
        f"(module '{name}'): install its package, or put the folder that holds it on "
        "PYTHONPATH" in result.stderr
    )


def test_a_directory_as_model_is_a_usage_error(tmp_path: Path) -> None:
    result = _run("bench", tmp_path)
    assert result.exit_code == 2
    assert f"Invalid value for 'MODEL': File '{tmp_path}' is a directory." in result.stderr
    assert "Traceback" not in result.output


def test_an_unreadable_model_says_permission(model_files: dict, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "locked.pt"
    path.write_bytes(model_files["bundle"].read_bytes())
    path.chmod(0)
    result = _run("bench", path)
    assert result.exit_code == 2
    assert f"Error: cannot read model file {path}: Permission denied" in result.stderr
