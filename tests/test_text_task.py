"""models/text_task.py: the seeded synthetic text task of issue 27's BERT-class model. Same seed,
same bytes; int64 ids and a right-padded mask of 32; balanced labels that the token order
determines exactly while a bag of words cannot (swapping NOT and the sentiment word keeps the bag
and flips the label; logistic regression on counts stays near its 75 % ceiling)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "models" / "text_task.py"
SMALL = {"train": 2000, "val": 500, "test": 500}


@pytest.fixture(scope="module")
def task() -> ModuleType:
    spec = importlib.util.spec_from_file_location("text_task", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small(task: ModuleType) -> dict[str, np.ndarray]:
    return task.build_arrays(0, SMALL)


def test_the_same_seed_gives_the_same_examples(task: ModuleType) -> None:
    one, two, other = task.make_split(300, 7), task.make_split(300, 7), task.make_split(300, 8)
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))
    assert not np.array_equal(one[0], other[0])


def test_npz_keys_shapes_dtypes_and_padding(
    task: ModuleType, small: dict[str, np.ndarray], tmp_path: Path
) -> None:
    path = tmp_path / "text.npz"
    written = task.write_npz(path, 0, SMALL)
    with np.load(path) as npz:
        assert sorted(npz.files) == sorted(small)
        for key in small:
            assert np.array_equal(npz[key], small[key]) and np.array_equal(written[key], small[key])
    for split, n in SMALL.items():
        ids, mask = small[f"x_{split}.input_ids"], small[f"x_{split}.attention_mask"]
        y = small[f"y_{split}"]
        assert ids.dtype == mask.dtype == y.dtype == np.int64
        assert ids.shape == mask.shape == (n, 32) and y.shape == (n,)
        lengths = mask.sum(1)
        assert lengths.min() >= 12 and lengths.max() == 32
        assert np.array_equal(mask, (np.arange(32) < lengths[:, None]).astype(np.int64))
        assert np.all((ids == task.PAD) == (mask == 0))  # PAD exactly on the padding
        assert np.all(ids[:, 0] == task.CLS) and ids.max() < task.VOCAB
        assert np.all((ids == task.NOT).sum(1) == 1)
        words = np.isin(ids, np.concatenate([task.POS_WORDS, task.NEG_WORDS])).sum(1)
        assert np.all(words == 1)
        topic_a, topic_b = np.isin(ids, task.TOPIC_A).sum(1), np.isin(ids, task.TOPIC_B).sum(1)
        assert np.all(np.sort(np.stack([topic_a, topic_b]), 0) == [[0], [3]])


def test_labels_are_balanced(task: ModuleType) -> None:
    _, _, y = task.make_split(4000, 0)
    share = np.bincount(y, minlength=4) / len(y)
    assert np.all(np.abs(share - 0.25) < 0.025), share


def test_the_order_decides_the_label_and_a_bag_of_words_cannot(
    task: ModuleType, small: dict[str, np.ndarray]
) -> None:
    ids, mask = small["x_test.input_ids"], small["x_test.attention_mask"]
    assert np.array_equal(task.order_rule(ids), small["y_test"])  # the order-aware rule: 100 %
    # swap NOT and the sentiment word in every example: same bag, other polarity label
    swapped = ids.copy()
    cols = np.arange(32)
    at_not = np.where(ids == task.NOT, cols, -1).max(1)
    at_word = np.where(np.isin(ids, np.r_[task.POS_WORDS, task.NEG_WORDS]), cols, -1).max(1)
    rows = np.arange(len(ids))
    swapped[rows, at_not], swapped[rows, at_word] = ids[rows, at_word], ids[rows, at_not]
    assert np.array_equal(task.bag_of_words(swapped, mask), task.bag_of_words(ids, mask))
    assert np.array_equal(task.order_rule(swapped), small["y_test"] ^ 1)
    # so logistic regression on counts stays near the 75 % ceiling, far below the rule
    acc = task.bow_baseline(small)
    assert 0.55 < acc["test"] <= 0.78 and 0.55 < acc["val"] <= 0.78, acc
