"""An .npz for a model with several inputs: per-input arrays x_<split>.<name>, or a
structured x_<split>, load as structured arrays (one field per input, integer inputs int64),
checked against the model's inputs before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt import zoo
from edgeopt.data import load_npz, load_scoring_npz
from edgeopt.errors import ConfigError
from edgeopt.inputs import ModelInputs, parse_input_flags
from edgeopt.loading import check_model_and_data, load_model, save_bundle

BERT_KW = {"vocab_size": 64, "max_len": 16, "hidden": 32, "depth": 1, "heads": 4}
BERT_KW |= {"intermediate": 64}


def _text(n: int, seq: int = 16, seed: int = 0, ids_dtype: type = np.int64) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 64, (n, seq)).astype(ids_dtype)
    mask = np.ones((n, seq), dtype=np.int32)
    return {"input_ids": ids, "attention_mask": mask, "y": rng.integers(0, 2, n)}


def _save_per_input(
    path: Path, names: tuple[str, str] = ("input_ids", "attention_mask"), **kw
) -> Path:
    arrays = {}
    for split, n in (("train", 12), ("val", 6)):
        t = _text(n, seed=len(split), **kw)
        arrays[f"x_{split}.{names[0]}"] = t["input_ids"]
        arrays[f"x_{split}.{names[1]}"] = t["attention_mask"]
        arrays[f"y_{split}"] = t["y"]
    np.savez(path, **arrays)
    return path


def test_per_input_arrays_load_as_structured_int64_fields(tmp_path: Path) -> None:
    p = _save_per_input(tmp_path / "text.npz", ids_dtype=np.int32)
    data = load_npz(p)
    raw = np.load(p)
    assert data.x_train.dtype.names == ("input_ids", "attention_mask")
    assert data.x_train.shape == (12,) and data.x_val.shape == (6,)
    assert data.x_train["input_ids"].dtype == np.int64  # int32 widened, never float
    assert data.x_train["attention_mask"].dtype == np.int64
    assert np.array_equal(data.x_train["input_ids"], raw["x_train.input_ids"])
    assert data.input_shape == (16,)
    assert data.inputs is not None and data.inputs.names == ("input_ids", "attention_mask")
    assert [s.dtype for s in data.inputs.specs] == ["int64", "int64"]


def test_a_structured_x_loads_alike(tmp_path: Path) -> None:
    dt = np.dtype([("input_ids", np.int64, (8,)), ("attention_mask", np.uint8, (8,))])
    x = np.zeros(5, dtype=dt)
    x["input_ids"] = 3
    np.savez(tmp_path / "s.npz", x_val=x, y_val=np.zeros(5, dtype=np.int64))
    data = load_scoring_npz(tmp_path / "s.npz")
    assert data.x.dtype == np.dtype(
        [("input_ids", np.int64, (8,)), ("attention_mask", np.int64, (8,))]
    )
    assert (data.x["input_ids"] == 3).all() and data.input_shape == (8,)


def test_inputs_of_a_split_with_different_sample_counts_are_refused(tmp_path: Path) -> None:
    t = _text(6)
    np.savez(
        tmp_path / "bad.npz",
        **{"x_val.input_ids": t["input_ids"], "x_val.attention_mask": t["attention_mask"][:5]},
        y_val=t["y"],
    )
    with pytest.raises(ConfigError, match=r"x_val.input_ids has 6, x_val.attention_mask has 5"):
        load_scoring_npz(tmp_path / "bad.npz")


def test_a_split_given_both_ways_is_refused(tmp_path: Path) -> None:
    t = _text(6)
    np.savez(
        tmp_path / "both.npz",
        **{"x_val.input_ids": t["input_ids"]},
        x_val=t["input_ids"].astype(np.float32),
        y_val=t["y"],
    )
    with pytest.raises(ConfigError, match="has both x_val and per-input arrays x_val.input_ids"):
        load_scoring_npz(tmp_path / "both.npz")


def test_float_inputs_with_nan_are_refused(tmp_path: Path) -> None:
    x = np.ones((4, 3), dtype=np.float32)
    x[1, 2] = np.nan
    arrays = {"x_val.pixels": x, "x_val.ids": np.ones((4, 3), dtype=np.int64)}
    np.savez(tmp_path / "nan.npz", **arrays, y_val=np.zeros(4, dtype=np.int64))
    with pytest.raises(ConfigError, match="x_val.pixels holds 1 NaN or infinite values"):
        load_scoring_npz(tmp_path / "nan.npz")


def test_a_plain_float_npz_loads_as_before(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((7, 1, 4, 4))  # float64: cast to float32
    np.savez(tmp_path / "img.npz", x_val=x, y_val=np.arange(7) % 3)
    data = load_scoring_npz(tmp_path / "img.npz")
    assert data.x.dtype == np.float32 and data.x.shape == (7, 1, 4, 4) and data.x.flags.c_contiguous
    assert np.array_equal(data.x, x.astype(np.float32)) and data.inputs is None
    assert data.input_shape == (1, 4, 4)


@pytest.fixture(scope="module")
def bert_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = zoo.bert_text(**BERT_KW).eval()
    path = tmp_path_factory.mktemp("bert") / "bert.pt"
    inputs = parse_input_flags(["input_ids=16:int64", "attention_mask=16:int64"])
    assert isinstance(inputs, ModelInputs)
    save_bundle(
        model,
        path,
        input_shape=inputs.first_shape,
        arch="edgeopt.zoo:bert_text",
        arch_kwargs=BERT_KW,
        inputs=inputs,
    )
    return path


def test_data_that_names_other_inputs_is_refused_listing_both(
    tmp_path: Path, bert_bundle: Path
) -> None:
    loaded = load_model(bert_bundle)
    good = load_scoring_npz(_save_per_input(tmp_path / "good.npz"))
    check_model_and_data(loaded, good)  # the model's own inputs pass
    bad = load_scoring_npz(_save_per_input(tmp_path / "bad.npz", names=("ids", "attention_mask")))
    with pytest.raises(ConfigError) as err:
        check_model_and_data(loaded, bad)
    assert "the data holds inputs ids, attention_mask" in str(err.value)
    assert "takes input_ids, attention_mask" in str(err.value)
    assert "x_<split>.input_ids" in (err.value.hint or "")


def test_plain_data_for_a_two_input_model_is_refused(tmp_path: Path, bert_bundle: Path) -> None:
    np.savez(tmp_path / "img.npz", x_val=np.zeros((3, 16), np.float32), y_val=np.zeros(3, np.int64))
    with pytest.raises(ConfigError, match="the data holds one array per split"):
        check_model_and_data(load_model(bert_bundle), load_scoring_npz(tmp_path / "img.npz"))


def test_data_of_another_length_is_refused(tmp_path: Path, bert_bundle: Path) -> None:
    data = load_scoring_npz(_save_per_input(tmp_path / "short.npz"))
    short = np.zeros(
        2, dtype=np.dtype([("input_ids", np.int64, (8,)), ("attention_mask", np.int64, (8,))])
    )
    np.savez(tmp_path / "s8.npz", x_val=short, y_val=np.zeros(2, np.int64))
    check_model_and_data(load_model(bert_bundle), data)
    with pytest.raises(ConfigError, match=r"holds input_ids of shape \(8,\), but .* takes \(16,\)"):
        check_model_and_data(load_model(bert_bundle), load_scoring_npz(tmp_path / "s8.npz"))
