"""Model inputs that are not one float image: specs, structured samples, synthetic token
inputs, feeds, the --input-shape NAME=DIMS[:DTYPE] form, and the torch batch helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt import zoo
from edgeopt.data.npz import synthetic_inputs
from edgeopt.errors import ConfigError
from edgeopt.inputs import InputRole, InputSpec, ModelInputs, parse_input_flags
from edgeopt.training import batch

TEXT = ModelInputs(
    (
        InputSpec.of("input_ids", (16,), "int64", vocab_size=64),
        InputSpec.of("attention_mask", (16,), "int64"),
        InputSpec.of("token_type_ids", (16,), "int64"),
    )
)


def test_roles_come_from_names_and_dtypes() -> None:
    roles = {s.name: s.role for s in TEXT.specs}
    assert roles == {
        "input_ids": InputRole.TOKEN_IDS,
        "attention_mask": InputRole.MASK,
        "token_type_ids": InputRole.TOKEN_TYPE,
    }
    assert InputSpec.of("pixels", (3, 8, 8), "float32").role is InputRole.FLOAT
    assert InputSpec.of("segment_ids", (8,), "int32").role is InputRole.TOKEN_TYPE
    assert [s.seq_axis for s in TEXT.specs] == [0, 0, 0]
    assert TEXT.seq_len == 16 and TEXT.names == ("input_ids", "attention_mask", "token_type_ids")
    assert not TEXT.is_single


def test_single_input_stays_a_plain_float_array() -> None:
    one = ModelInputs.single((1, 4, 4))
    assert one.is_single and one.names == ("input",) and one.seq_len is None
    x = one.synthetic(5, seed=3)
    assert x.dtype == np.float32 and x.shape == (5, 1, 4, 4)
    # the same draws as the data-free inputs every single-input path uses today
    assert np.array_equal(x, synthetic_inputs((1, 4, 4), 5, 3))
    feeds = one.feeds(x)
    assert list(feeds) == ["input"] and feeds["input"] is x


def test_synthetic_token_inputs_are_seeded_and_valid() -> None:
    x = TEXT.synthetic(200, seed=0)
    assert x.dtype == TEXT.record_dtype() and x.shape == (200,)
    assert np.array_equal(x, TEXT.synthetic(200, seed=0))
    assert not np.array_equal(x["input_ids"], TEXT.synthetic(200, seed=1)["input_ids"])
    ids, mask, types = x["input_ids"], x["attention_mask"], x["token_type_ids"]
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 64 and ids.max() > 32
    assert (types == 0).all()
    lengths = mask.sum(axis=1)
    # right padding: ones on a prefix, zeros after; lengths from S//4 (at least 2) to S
    assert np.array_equal(mask, (np.arange(16) < lengths[:, None]).astype(np.int64))
    assert lengths.min() >= 4 and lengths.max() == 16 and len(set(lengths.tolist())) > 5


def test_feeds_are_contiguous_per_input_and_refuse_float_ids() -> None:
    x = TEXT.synthetic(8, seed=0)[::2]
    feeds = TEXT.feeds(x)
    assert list(feeds) == list(TEXT.names)
    for name, arr in feeds.items():
        assert arr.flags.c_contiguous and arr.dtype == np.int64 and arr.shape == (4, 16)
        assert np.array_equal(arr, x[name])
    bad = np.zeros(
        2,
        dtype=[
            ("input_ids", "f4", (16,)),
            ("attention_mask", "i8", (16,)),
            ("token_type_ids", "i8", (16,)),
        ],
    )
    with pytest.raises(ValueError, match="input_ids.*float32.*int64"):
        TEXT.feeds(bad)
    with pytest.raises(ValueError, match="attention_mask"):
        TEXT.feeds(np.zeros(2, dtype=[("input_ids", "i8", (16,))]))


def test_structured_samples_survive_npz_and_npy(tmp_path: Path) -> None:
    x = TEXT.synthetic(10, seed=2)
    np.savez(tmp_path / "d.npz", x_train=x)
    np.save(tmp_path / "d.npy", x[3:7])
    with np.load(tmp_path / "d.npz", allow_pickle=False) as z:
        assert np.array_equal(z["x_train"], x)
    assert np.array_equal(np.load(tmp_path / "d.npy", allow_pickle=False), x[3:7])
    assert np.array_equal(np.concatenate([x[:4], x[4:]]), x)


def test_to_dict_round_trips() -> None:
    for inputs in (TEXT, ModelInputs.single((3, 8, 8))):
        assert ModelInputs.from_dict(inputs.to_dict()) == inputs
    assert TEXT.with_seq_len(8).seq_len == 8
    assert TEXT.with_seq_len(8).synthetic(2, 0)["input_ids"].shape == (2, 8)


def test_input_shape_flags_parse() -> None:
    assert parse_input_flags(()) is None
    assert parse_input_flags(("3,32,32",)) == (3, 32, 32)
    got = parse_input_flags(("input_ids=32:int64", "attention_mask=32:int64"))
    assert isinstance(got, ModelInputs)
    assert got.names == ("input_ids", "attention_mask") and got.seq_len == 32
    assert got.specs[1].role is InputRole.MASK and got.specs[0].dtype == "int64"
    assert parse_input_flags(("x=1x4x4",)).specs[0].dtype == "float32"  # type: ignore[union-attr]
    for bad, words in [
        (("input_ids=32:int8",), "int8"),
        (("3,32,32", "mask=32:int64"), "NAME=DIMS"),
        (("ids=32:int64", "ids=16:int64"), "twice"),
        (("=32:int64",), "NAME"),
        (("ids=0:int64",), "shape"),
    ]:
        with pytest.raises(ConfigError, match=words):
            parse_input_flags(bad)


def test_batch_helpers_take_move_and_call_with_tuples() -> None:
    torch.manual_seed(0)
    m = zoo.bert_text(vocab_size=64, max_len=16, hidden=32, depth=1, heads=4, intermediate=64)
    x = TEXT.synthetic(6, seed=0)
    two = ModelInputs(TEXT.specs[:2])
    args = batch.tensors(two.synthetic(6, seed=0))
    assert isinstance(args, tuple) and len(args) == 2 and args[0].dtype == torch.int64
    part = batch.take(args, torch.tensor([0, 2]))
    assert isinstance(part, tuple) and part[0].shape == (2, 16)
    out = batch.forward(m.eval(), batch.to(part, "cpu"))
    assert out.shape == (2, 2)
    assert torch.equal(out, m(*part))
    # one tensor: unchanged calls
    img = batch.tensors(np.zeros((3, 1, 4, 4), np.float32))
    assert isinstance(img, torch.Tensor) and batch.take(img, torch.tensor([1])).shape[0] == 1
    assert len(batch.tensors(x)) == 3
