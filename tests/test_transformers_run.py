"""``edgeopt optimize`` of a model with two integer inputs (a tiny BERT-class classifier fed
``input_ids`` and ``attention_mask``), end to end through the command line: with a two-input
npz and without data, a recipe that prunes attention heads, the report, ``export --best`` of a
two-input ONNX that ``check`` accepts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner, Result

from edgeopt import zoo
from edgeopt.cli import main
from edgeopt.inputs import InputSpec, ModelInputs
from edgeopt.loading import save_bundle
from edgeopt.search.run.collect import load_run

SEQ, VOCAB, TOKEN = 16, 64, 5
BERT_KW = {"vocab_size": VOCAB, "max_len": SEQ, "hidden": 32, "depth": 2, "heads": 4}
BERT_KW |= {"intermediate": 64}
TEXT = ModelInputs(
    (
        InputSpec.of("input_ids", (SEQ,), "int64", vocab_size=VOCAB),
        InputSpec.of("attention_mask", (SEQ,), "int64"),
    )
)
HEADS_RECIPE = """
[[recipe]]
name = "heads"
prune.ratio = 0.25
prune.importance = "l2"
prune.attention = "heads"
prune.head_ratio = 0.5
finetune.epochs = 1
finetune.distill = false
quantize.mode = "fp32"
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Label 1 when token ``TOKEN`` is in the unmasked part (a label-0 sample may hold it in
    the padding, where only the mask says it does not count)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(6, VOCAB, (n, SEQ))
    ids[:, 0] = 1
    mask = np.zeros((n, SEQ), dtype=np.int64)
    y = rng.integers(0, 2, n).astype(np.int64)
    for i in range(n):
        length = int(rng.integers(4, SEQ + 1))
        mask[i, :length] = 1
        if y[i]:
            ids[i, int(rng.integers(1, length))] = TOKEN
        elif length < SEQ:
            ids[i, int(rng.integers(length, SEQ))] = TOKEN
    return np.stack([ids, mask]), y


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny bert_text bundle trained a little on the task, and the task's npz with the
    mask stored before the ids (the data's order is not the model's)."""
    where = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    model = zoo.bert_text(**BERT_KW)
    arrays: dict[str, np.ndarray] = {}
    for split, n, seed in (("train", 384, 0), ("val", 96, 1), ("test", 96, 2)):
        x, y = _task(n, seed)
        arrays[f"x_{split}.attention_mask"] = x[1]
        arrays[f"x_{split}.input_ids"] = x[0]
        arrays[f"y_{split}"] = y
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids, mask = (
        torch.from_numpy(arrays["x_train.input_ids"]),
        torch.from_numpy(arrays["x_train.attention_mask"]),
    )
    labels = torch.from_numpy(arrays["y_train"])
    model.train()
    for _ in range(3):
        for i in range(0, len(labels), 32):
            loss = torch.nn.functional.cross_entropy(
                model(ids[i : i + 32], mask[i : i + 32]), labels[i : i + 32]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    bundle = where / "bert.pt"
    save_bundle(
        model,
        bundle,
        arch="edgeopt.zoo:bert_text",
        arch_kwargs=BERT_KW,
        input_shape=(SEQ,),
        inputs=TEXT,
    )
    data = where / "text.npz"
    np.savez(data, **arrays)
    return bundle, data


def _invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _optimize(model: Path, out: Path, *extra: object) -> Result:
    return _invoke("optimize", model, "--target", "cpu", "--threads", "1", "--out", out, *extra)


def _complete(run: Path) -> list[dict]:
    return [t for t in load_run(run)["trials"] if t["state"] == "complete"]


def test_optimize_searches_a_two_input_model_prunes_heads_and_exports_it(
    bert: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = bert
    recipes = tmp_path / "heads.toml"
    recipes.write_text(HEADS_RECIPE)
    out = tmp_path / "run"
    res = _optimize(model, out, "--data", data, "--trials", 4, "--enqueue", recipes)
    assert res.exit_code == 0, res.output
    done = load_run(out)["trials"]
    assert len(done) == 4
    # the torch phase, export, int8 (calibrated on both inputs) and measure take two inputs
    assert all(t["state"] == "complete" for t in done), [t.get("reason") for t in done]
    assert any(t["candidate"]["quantize"]["mode"].startswith("int8") for t in done)
    trials = _complete(out)
    mine = [t for t in trials if t.get("user_recipe") == "heads"]
    assert mine and mine[0]["params"]["prune.attention"] == "heads"
    assert "heads 0.50" in mine[0]["describe"]
    run_json = json.loads((out / "run.json").read_text())
    assert [s["name"] for s in run_json["model"]["inputs"]] == [
        "input_ids",
        "attention_mask",
    ]
    assert (out / "report" / "report.json").exists()
    assert "seq_lens" not in run_json  # not given: run.json as before
    best = tmp_path / "best.onnx"
    res = _invoke("export", out, "--best", "--out", best)
    assert res.exit_code == 0, res.output
    graph = onnx.load(str(best)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    res = _invoke("check", best, "--target", "cpu", "--data", data, "--max-size-mb", 1)
    assert res.exit_code == 0, res.output


def test_optimize_runs_a_two_input_model_without_data(
    bert: tuple[Path, Path], tmp_path: Path
) -> None:
    model, _ = bert
    out = tmp_path / "run"
    # a transformer user's space names params only a transformer's probe offers: it is checked
    # before the probe runs (it was refused there as "not among the declared choices")
    space = tmp_path / "space.toml"
    space.write_text('[quantize]\nmode = ["fp32", "int8_dynamic"]\nstatic_ops = ["compute"]\n')
    res = _optimize(model, out, "--trials", 3, "--no-report", "--space", space)
    assert res.exit_code == 0, res.output
    done = load_run(out)["trials"]
    assert len(done) == 3
    drawn = [t for t in done if not t.get("baseline")]
    assert all(t["candidate"]["quantize"]["mode"] in ("fp32", "int8_dynamic") for t in drawn)
    assert all(t["state"] == "complete" for t in done), [t.get("reason") for t in done]
    assert done[0]["state"] == "complete" and done[0]["baseline"] == "unchanged"


def test_optimize_seq_lens_reports_latency_per_length(
    bert: tuple[Path, Path], tmp_path: Path
) -> None:
    model, _ = bert
    out = tmp_path / "run"
    res = _optimize(model, out, "--trials", 2, "--seq-lens", "8,16")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "run.json").read_text())["seq_lens"] == [8, 16]
    report = json.loads((out / "report" / "report.json").read_text())
    (target,) = report["targets"]
    by_seq = report["latency_by_seq"][target]
    assert by_seq["provenance"] == "measured"
    assert list(by_seq["original"]) == ["8", "16"]
    assert report["front"]
    for n in report["front"]:
        mine = by_seq["trials"][str(n)]
        assert list(mine) == ["8", "16"]
        assert all(mine[k]["p50_ms"] > 0 and mine[k]["ratio_to_original"] > 0 for k in mine)
    head = next(
        line for line in (out / "report" / "report.md").read_text().splitlines() if "@8" in line
    )
    assert f"@8 {target} (meas.)" in head and f"@16 {target} (meas.)" in head


def test_optimize_seq_lens_above_the_position_table_exits_2_before_any_work(
    bert: tuple[Path, Path], model_files: dict, tmp_path: Path
) -> None:
    model, _ = bert
    out = tmp_path / "run"
    res = _optimize(model, out, "--trials", 2, "--seq-lens", "8,40")
    assert res.exit_code == 2, res.output
    assert "takes at most 16 tokens" in res.output
    assert not out.exists()
    res = _optimize(model_files["bundle"], out, "--trials", 2, "--seq-lens", "8")
    assert res.exit_code == 2, res.output
    assert "no sequence axis" in res.output
    assert not out.exists()
