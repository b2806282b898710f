"""``--seq-lens`` on bench and check: a text model is timed (or estimated) at each length
named, interleaved per length; a model without a sequence axis, or a length above its
position table, is a one-line usage error naming the limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tiny_text import BERT_KW, bert_inputs

from edgeopt import zoo
from edgeopt.cli import main
from edgeopt.errors import ConfigError
from edgeopt.inputs import ModelInputs
from edgeopt.onnx_export import export_onnx
from edgeopt.seq_lens import parse_seq_lens

FLAGS = ["--input-shape", "input_ids=12:int64", "--input-shape", "attention_mask=12:int64"]
FAST = ["--time-budget", "0.3", "--threads", "1"]


def _inputs(seq: int = 12) -> ModelInputs:
    return bert_inputs(seq)


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    inputs = _inputs()
    out = tmp_path_factory.mktemp("bert") / "bert.onnx"
    model = zoo.bert_text(**BERT_KW).eval()
    return export_onnx(model, inputs, out, check_inputs=inputs.synthetic(2, seed=1))


def test_bench_times_each_length_and_says_measured(bert_onnx: Path) -> None:
    args = ["bench", str(bert_onnx), *FAST, *FLAGS, "--seq-lens", "4,16"]
    res = CliRunner().invoke(main, [*args, "--vs", str(bert_onnx), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["seq_lens"] == [4, 16] and report["seq_len"] == 12
    for row in report["results"]:
        by = row["latency_by_seq"]
        assert set(by) == {"4", "16"}
        assert all(by[k]["latency_p50_ms"]["provenance"] == "measured" for k in by)
        assert all(by[k]["latency_p50_ms"]["value"] > 0 for k in by)
    (cmp,) = report["comparisons"]
    assert set(cmp["ratio_by_seq"]) == {"4", "16"}
    table = CliRunner().invoke(main, args)
    assert table.exit_code == 0, table.output
    assert "p50@4 ms" in table.output and "p50@16 ms" in table.output
    assert "p50@N: at N tokens" in table.output


def test_bench_estimates_each_length_on_an_estimated_target(bert_onnx: Path) -> None:
    args = ["bench", str(bert_onnx), "--target", "mobile", *FLAGS, "--seq-lens", "4,16"]
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["results"]
    by = row["latency_by_seq"]
    assert by["4"]["latency_p50_ms"]["provenance"] == "estimated"
    assert by["16"]["latency_p50_ms"]["value"] > by["4"]["latency_p50_ms"]["value"]


@pytest.mark.parametrize("command", ["bench", "check"])
def test_a_length_above_the_position_table_exits_2_naming_the_limit(
    bert_onnx: Path, command: str
) -> None:
    args = [command, str(bert_onnx), *FLAGS, "--time-budget", "0.3", "--seq-lens", "8,40"]
    if command == "check":
        args += ["--max-size-mb", "100"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert "--seq-lens 40" in res.stderr and "takes at most 16 tokens" in res.stderr
    assert "p50" not in res.stdout  # nothing timed


def test_a_model_without_a_sequence_axis_exits_2(model_files: dict) -> None:
    res = CliRunner().invoke(main, ["bench", str(model_files["onnx"]), *FAST, "--seq-lens", "8"])
    assert res.exit_code == 2, res.output
    assert "has no sequence axis" in res.stderr


def test_check_shows_each_length_and_keeps_budgets_at_the_main_length(bert_onnx: Path) -> None:
    args = ["check", str(bert_onnx), *FLAGS, "--time-budget", "0.3", "--seq-lens", "4,16"]
    res = CliRunner().invoke(main, [*args, "--max-latency-ms", "1000", "--json"])
    assert res.exit_code == 0, res.output
    verdict = json.loads(res.stdout)
    assert [r["name"] for r in verdict["results"]] == ["max_latency_ms"]
    assert set(verdict["latency_by_seq"]) == {"4", "16"}
    assert verdict["latency_by_seq"]["4"]["provenance"] == "measured"
    table = CliRunner().invoke(main, [*args, "--max-latency-ms", "1000"])
    assert table.exit_code == 0, table.output
    assert "p50 at 4 tokens" in table.output and "p50 at 16 tokens" in table.output


@pytest.mark.parametrize("text", ["0", "8,x", "8,8", ""])
def test_parse_seq_lens_refuses_bad_lists(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_seq_lens(text)
    assert parse_seq_lens("16, 8") == (16, 8)
