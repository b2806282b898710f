"""Models with several inputs, or integer ones (token ids, masks), load: names, dtypes and
shapes from the ONNX graph or from --input-shape NAME=DIMS[:DTYPE], vocab from the embedding;
commands that cannot run them yet say so before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from edgeopt import zoo
from edgeopt.cli import main
from edgeopt.errors import ConfigError
from edgeopt.inputs import InputRole, ModelInputs, parse_input_flags
from edgeopt.loading import ModelFormat, load_model, model_output_shape, save_bundle

BERT_KW = {"vocab_size": 64, "max_len": 16, "hidden": 32, "depth": 1, "heads": 4}
BERT_KW |= {"intermediate": 64}
FLAGS = ["--input-shape", "input_ids=16:int64", "--input-shape", "attention_mask=16:int64"]


class _ThreeInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = torch.nn.Embedding(50, 8)
        self.typ = torch.nn.Embedding(2, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        h = self.tok(input_ids) + self.typ(token_type_ids)
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp(min=1.0))


def _bert() -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.bert_text(**BERT_KW).eval()


def _export(model: torch.nn.Module, names: list[str], path: Path, seq: int = 16) -> Path:
    args = tuple(torch.ones(1, seq, dtype=torch.int64) for _ in names)
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    torch.onnx.export(
        model,
        args,
        str(path),
        input_names=names,
        output_names=["logits"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    return path


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return _export(
        _bert(), ["input_ids", "attention_mask"], tmp_path_factory.mktemp("bert") / "bert.onnx"
    )


def test_a_two_input_int64_onnx_loads_with_specs_from_the_graph(bert_onnx: Path) -> None:
    loaded = load_model(bert_onnx, inputs=parse_input_flags(FLAGS[1::2]))  # type: ignore[arg-type]
    ids, mask = loaded.inputs.specs
    assert loaded.inputs.names == ("input_ids", "attention_mask")
    assert (ids.dtype, ids.shape, ids.role, ids.vocab_size, ids.seq_axis) == (
        "int64",
        (16,),
        InputRole.TOKEN_IDS,
        64,
        0,
    )
    assert (mask.role, mask.seq_axis) == (InputRole.MASK, 0)
    assert loaded.input_shape == (16,) and loaded.output_shape == (1, 2)


def test_a_dynamic_sequence_needs_its_length_and_names_the_inputs(bert_onnx: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_model(bert_onnx)
    assert "dynamic" in str(err.value) and "input_ids" in str(err.value)
    assert "--input-shape input_ids=" in (err.value.hint or "")
    # a plain shape does not say which input it is for
    with pytest.raises(ConfigError, match="takes 2 inputs"):
        load_model(bert_onnx, input_shape=(16,))


def test_a_three_input_onnx_with_fixed_shapes_loads_without_flags(tmp_path: Path) -> None:
    torch.manual_seed(0)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    args = tuple(torch.ones(1, 8, dtype=torch.int64) for _ in names)
    path = tmp_path / "three.onnx"
    torch.onnx.export(
        _ThreeInputs().eval(),
        args,
        str(path),
        input_names=names,
        dynamic_axes={n: {0: "batch"} for n in names},
        opset_version=17,
        dynamo=False,
    )
    loaded = load_model(path)
    assert loaded.inputs.names == tuple(names) and loaded.output_shape == (1, 3)
    assert [s.role for s in loaded.inputs.specs] == [
        InputRole.TOKEN_IDS,
        InputRole.MASK,
        InputRole.TOKEN_TYPE,
    ]
    assert loaded.inputs.specs[0].vocab_size == 50


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["input_ids=16:int64", "mask=16:int64"], "attention_mask"),
        (["input_ids=16:int32", "attention_mask=16:int64"], "int32"),
    ],
)
def test_bad_names_or_dtypes_list_the_models_inputs(
    bert_onnx: Path, flags: list[str], words: str
) -> None:
    with pytest.raises(ConfigError, match=words) as err:
        load_model(bert_onnx, inputs=parse_input_flags(flags))  # type: ignore[arg-type]
    assert "input_ids" in (err.value.hint or "") and "attention_mask" in (err.value.hint or "")


def test_a_bert_bundle_and_pickle_load_with_the_flags(tmp_path: Path) -> None:
    model = _bert()
    inputs = parse_input_flags(FLAGS[1::2])
    assert isinstance(inputs, ModelInputs)
    save_bundle(
        model,
        tmp_path / "b.pt",
        arch="edgeopt.zoo:bert_text",
        arch_kwargs=BERT_KW,
        input_shape=(16,),
        inputs=inputs,
    )
    torch.save(model, tmp_path / "p.pt")
    bundle = load_model(tmp_path / "b.pt")  # the bundle records its inputs
    pickled = load_model(tmp_path / "p.pt", trust_pickle=True, inputs=inputs)
    for loaded, fmt in ((bundle, ModelFormat.BUNDLE), (pickled, ModelFormat.PICKLE)):
        assert loaded.format == fmt and loaded.inputs.names == ("input_ids", "attention_mask")
        assert loaded.inputs.specs[0].vocab_size == 64  # from the embedding that reads it
        assert model_output_shape(loaded) == (1, 2)


def test_single_input_models_keep_their_one_float_input(model_files: dict[str, Path]) -> None:
    loaded = load_model(model_files["onnx"])
    assert loaded.inputs == ModelInputs.single((1, 16, 16))
    assert load_model(model_files["bundle"]).inputs == ModelInputs.single((1, 16, 16))


def test_bad_input_shape_flag_exits_2_before_loading(bert_onnx: Path) -> None:
    res = CliRunner().invoke(main, ["bench", str(bert_onnx), "--input-shape", "ids=16:int8"])
    assert res.exit_code == 2 and "int8" in res.stderr
    res = CliRunner().invoke(
        main,
        [
            "bench",
            str(bert_onnx),
            "--input-shape",
            "ids=16:int64",
            "--input-shape",
            "attention_mask=16:int64",
        ],
    )
    assert res.exit_code == 2 and "input_ids" in res.stderr, res.output
