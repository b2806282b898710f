"""A model with two int64 inputs (token ids, attention mask) exports with its input names and
a dynamic sequence axis, and bench/check time it and score it on a two-input npz; the cost
model estimates it at its sequence length, not at one token."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from tiny_text import BERT_KW, bert_inputs

from edgeopt import zoo
from edgeopt.cli import main
from edgeopt.errors import CandidateError
from edgeopt.estimate import estimate
from edgeopt.inputs import ModelInputs
from edgeopt.loading import save_bundle
from edgeopt.onnx_export import check_parity, export_onnx
from edgeopt.profiles import load_profile

FLAGS = ["--input-shape", "input_ids=16:int64", "--input-shape", "attention_mask=16:int64"]
FAST = ["--target", "cpu", "--time-budget", "0.5"]


def _inputs(seq: int = 16) -> ModelInputs:
    return bert_inputs(seq)


def _bert() -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.bert_text(**BERT_KW).eval()


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    inputs = _inputs()
    out = tmp_path_factory.mktemp("bert") / "bert.onnx"
    return export_onnx(_bert(), inputs, out, check_inputs=inputs.synthetic(4, seed=1))


@pytest.fixture(scope="module")
def text_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 8), ("val", 20)):
        arrays[f"x_{split}.input_ids"] = rng.integers(0, 64, (n, 16))
        mask = np.ones((n, 16), dtype=np.int64)
        mask[:, 12:] = 0
        arrays[f"x_{split}.attention_mask"] = mask
        arrays[f"y_{split}"] = rng.integers(0, 2, n)
    path = tmp_path_factory.mktemp("text") / "text.npz"
    np.savez(path, **arrays)
    return path


def test_export_names_the_inputs_with_dynamic_batch_and_seq(bert_onnx: Path) -> None:
    graph = onnx.load(str(bert_onnx)).graph
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in graph.input
    }
    assert dims == {"input_ids": ["batch", "seq"], "attention_mask": ["batch", "seq"]}
    assert {i.type.tensor_type.elem_type for i in graph.input} == {onnx.TensorProto.INT64}


def test_export_parity_runs_on_a_structured_sample(bert_onnx: Path) -> None:
    inputs = _inputs()
    x = inputs.synthetic(3, seed=2)
    x["attention_mask"][:, 5:] = 0  # padded: the mask reaches both sides by its name
    assert check_parity(_bert(), bert_onnx, x, atol=1e-4, rtol=1e-3, model_inputs=inputs) < 1e-4
    torch.manual_seed(1)
    other = zoo.bert_text(**BERT_KW).eval()
    with pytest.raises(CandidateError, match="differs from torch"):
        check_parity(other, bert_onnx, x, atol=1e-4, rtol=1e-3, model_inputs=inputs)


@pytest.mark.parametrize("with_data", [False, True])
def test_bench_of_a_two_input_onnx_times_and_scores_it(
    bert_onnx: Path, text_npz: Path, tmp_path: Path, with_data: bool
) -> None:
    args = ["bench", str(bert_onnx), *FAST, "--threads", "1"]
    args += ["--data", str(text_npz)] if with_data else FLAGS
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    (row,) = report["results"]
    assert row["latency_p50_ms"]["value"] > 0 and row["latency_p50_ms"]["provenance"] == "measured"
    if with_data:
        assert report["accuracy_samples"] == 20 and 0.0 <= row["accuracy"]["value"] <= 1.0
        table = CliRunner().invoke(main, args)
        assert table.exit_code == 0 and "accuracy" in table.output, table.output
    else:
        assert "accuracy" not in row


def test_bench_of_a_two_input_bundle_exports_and_scores_it(text_npz: Path, tmp_path: Path) -> None:
    path = tmp_path / "bert.pt"
    save_bundle(
        _bert(),
        path,
        arch="edgeopt.zoo:bert_text",
        arch_kwargs=BERT_KW,
        input_shape=(16,),
        inputs=_inputs(),
    )
    res = CliRunner().invoke(main, ["bench", str(path), *FAST, "--data", str(text_npz)])
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output


def test_check_of_a_two_input_model_passes_and_fails_on_accuracy(
    bert_onnx: Path, text_npz: Path, tmp_path: Path
) -> None:
    base = ["check", str(bert_onnx), *FAST]
    ok = CliRunner().invoke(main, [*base, *FLAGS, "--max-size-mb", "100"])
    assert ok.exit_code == 0, ok.output
    scored = CliRunner().invoke(main, [*base, "--data", str(text_npz), "--min-accuracy", "0"])
    assert scored.exit_code == 0, scored.output
    assert "accuracy" in scored.output
    failed = CliRunner().invoke(main, [*base, "--data", str(text_npz), "--min-accuracy", "0.99"])
    assert failed.exit_code == 1, failed.output


def test_data_naming_other_inputs_exits_2(bert_onnx: Path, tmp_path: Path) -> None:
    ids = np.zeros((4, 16), dtype=np.int64)
    np.savez(tmp_path / "bad.npz", **{"x_val.ids": ids, "x_val.mask": ids}, y_val=np.zeros(4, int))
    res = CliRunner().invoke(
        main, ["bench", str(bert_onnx), *FAST, "--data", str(tmp_path / "bad.npz")]
    )
    assert res.exit_code == 2, res.output
    assert (
        "the data holds inputs ids, mask" in res.stderr
        and "input_ids, attention_mask" in res.stderr
    )


def test_estimate_grows_with_the_sequence_length(bert_onnx: Path) -> None:
    profile = load_profile("mobile")
    at = {
        seq: estimate(bert_onnx, profile, {"input_ids": (seq,), "attention_mask": (seq,)})
        for seq in (8, 16)
    }
    assert at[16].macs > at[8].macs and at[16].latency_ms > at[8].latency_ms
    assert any("set to 16" in a for a in at[16].assumptions)


def test_bench_on_an_estimated_target_estimates_at_the_sequence_length(bert_onnx: Path) -> None:
    base = ["bench", str(bert_onnx), "--target", "mobile", "--json"]
    got = {}
    for seq in (8, 16):
        flags = [f"input_ids={seq}:int64", f"attention_mask={seq}:int64"]
        res = CliRunner().invoke(main, [*base, *(f for v in flags for f in ("--input-shape", v))])
        assert res.exit_code == 0, res.output
        (row,) = json.loads(res.stdout)["results"]
        assert row["latency_p50_ms"]["provenance"] == "estimated"
        got[seq] = row["latency_p50_ms"]["value"]
    assert got[16] > got[8]


def test_a_runtime_that_takes_one_input_is_refused(bert_onnx: Path) -> None:
    # no importorskip: importing openvino into this process makes it fork-unsafe for the
    # tests after it (edgeopt only ever loads it in its runtime child); CI installs it
    res = CliRunner().invoke(main, ["bench", str(bert_onnx), *FLAGS, "--target", "openvino"])
    assert res.exit_code == 2, res.output
    assert "in ONNX Runtime only" in res.stderr
