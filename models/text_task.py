"""A seeded synthetic text classification task whose labels need attention over the sequence:
"negation-order sentiment with topic" (issue 27's BERT-class example; numpy only).

Vocabulary (1,024 ids): 0 PAD, 1 CLS, 3 NOT; positive words 16-31 (16), negative words
116-131 (16), topic-A words 216-235 (20), topic-B words 236-255 (20), filler 256-1023 (768);
the other ids are never used.

One example, all draws from ``rng = np.random.default_rng(seed)`` of its split, in this order:

1. length ``L`` uniform in 12..32; ``L`` filler words drawn uniformly (with replacement);
   position 0 becomes CLS;
2. ``topic`` uniform in {0, 1}, ``pol`` uniform in {0, 1}, ``neg = rng.random() < 0.25``;
3. two distinct positions ``a < b`` in 1..L-1: when ``neg``, NOT goes to ``a`` and the
   sentiment word to ``b`` (NOT before the word); otherwise the word goes to ``a`` and NOT to
   ``b`` (NOT after it). The sentiment word is drawn from the positive words if ``pol``,
   else from the negative words;
4. three more distinct positions among the remaining 1..L-1 get topic words (topic B if
   ``topic``, else topic A);
5. right-padded with PAD to 32 tokens; ``attention_mask`` is 1 on the first ``L``.

Label ``2 * topic + (pol XOR neg)``: 4 classes (topic A/B x negative/positive), balanced in
expectation. Splits: train 8,000 examples from ``seed``, val 1,000 from ``seed + 1``, test
1,000 from ``seed + 2``, saved as an edgeopt named-input ``.npz``: ``x_<split>.input_ids``,
``x_<split>.attention_mask`` (int64, ``(n, 32)``) and ``y_<split>`` (int64).

Why a bag of words cannot solve it: every example holds exactly one NOT and one sentiment
word, wherever they are, so the multiset of tokens has the same distribution whether NOT
comes before the word or after it: given the bag, ``neg`` is unknowable. The best any
bag-of-words model can do is read the topic (exact) and the word's polarity, and guess
``neg = 0``: right 3/4 of the time, so **at most 75 %** (logistic regression on counts gets
about 67 %, ``bow_baseline``). The label is a function of the token order (``order_rule``
reads it back exactly): a model must relate NOT's position to the sentiment word's, which is
attention over the sequence. Negation is 25 %, not 50 %, so that the word's polarity alone
carries a first signal (at 50 % the label is an XOR of two features that each carry none, and
a small encoder did not learn it in ~2,000 steps; plan 27, E16).

    python models/text_task.py --out models/real/text4.npz   # writes it, prints the BoW baseline
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PAD, CLS, NOT = 0, 1, 3
POS_WORDS = np.arange(16, 32)
NEG_WORDS = np.arange(116, 132)
TOPIC_A = np.arange(216, 236)
TOPIC_B = np.arange(236, 256)
FILLER = np.arange(256, 1024)
VOCAB = 1024
SEQ_LEN = 32
MIN_LEN = 12
P_NEG = 0.25
TOPIC_WORDS = 3
NUM_CLASSES = 4
INPUT_NAMES = ("input_ids", "attention_mask")
SIZES = {"train": 8000, "val": 1000, "test": 1000}
"""Examples per split; split ``i`` (in this order) is drawn from ``seed + i``."""


def make_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask, labels)`` of ``n`` examples drawn from ``seed`` as the
    module docstring says: int64 ``(n, SEQ_LEN)``, ``(n, SEQ_LEN)`` and ``(n,)``."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, SEQ_LEN), np.int64)
    mask = np.zeros((n, SEQ_LEN), np.int64)
    y = np.zeros(n, np.int64)
    for i in range(n):
        length = int(rng.integers(MIN_LEN, SEQ_LEN + 1))
        tokens = rng.choice(FILLER, length)
        tokens[0] = CLS
        topic, pol = int(rng.integers(2)), int(rng.integers(2))
        neg = int(rng.random() < P_NEG)
        a, b = sorted(rng.choice(np.arange(1, length), 2, replace=False))
        at_not, at_word = (a, b) if neg else (b, a)
        tokens[at_not] = NOT
        tokens[at_word] = rng.choice(POS_WORDS if pol else NEG_WORDS)
        free = [j for j in range(1, length) if j not in (a, b)]
        for j in rng.choice(free, TOPIC_WORDS, replace=False):
            tokens[j] = rng.choice(TOPIC_B if topic else TOPIC_A)
        ids[i, :length] = tokens
        mask[i, :length] = 1
        y[i] = 2 * topic + (pol ^ neg)
    return ids, mask, y


def build_arrays(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Every split as the ``.npz`` keys ``x_<split>.<input>`` and ``y_<split>``."""
    out: dict[str, np.ndarray] = {}
    for i, (split, n) in enumerate((sizes or SIZES).items()):
        ids, mask, y = make_split(n, seed + i)
        out[f"x_{split}.input_ids"], out[f"x_{split}.attention_mask"] = ids, mask
        out[f"y_{split}"] = y
    return out


def write_npz(
    path: Path, seed: int = 0, sizes: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Build the task and save it at ``path`` (compressed); returns the arrays."""
    arrays = build_arrays(seed, sizes)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return arrays


def order_rule(ids: np.ndarray) -> np.ndarray:
    """The label read back from the token order: topic from the topic words, polarity from
    the sentiment word, flipped when NOT comes before it. Equals the labels exactly."""
    cols = np.arange(ids.shape[1])
    topic = np.isin(ids, TOPIC_B).any(1).astype(np.int64)
    pol = np.isin(ids, POS_WORDS).any(1).astype(np.int64)
    at_word = np.where(np.isin(ids, np.concatenate([POS_WORDS, NEG_WORDS])), cols, -1).max(1)
    at_not = np.where(ids == NOT, cols, -1).max(1)
    neg = (at_not < at_word).astype(np.int64)
    return 2 * topic + (pol ^ neg)


def bag_of_words(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Token counts ``(n, VOCAB)`` over the unpadded positions: all a bag-of-words model sees."""
    counts = np.zeros((len(ids), VOCAB), np.float32)
    rows = np.repeat(np.arange(len(ids)), ids.shape[1])
    np.add.at(counts, (rows, ids.ravel()), mask.ravel().astype(np.float32))
    return counts


def bow_baseline(arrays: dict[str, np.ndarray], seed: int = 0) -> dict[str, float]:
    """Accuracy per split (val, test) of a logistic regression on token counts trained on the
    train split: the bag-of-words baseline (its ceiling is 75 %). Needs scikit-learn."""
    from sklearn.linear_model import LogisticRegression

    def bag(split: str) -> np.ndarray:
        return bag_of_words(arrays[f"x_{split}.input_ids"], arrays[f"x_{split}.attention_mask"])

    clf = LogisticRegression(max_iter=1000, random_state=seed)
    clf.fit(bag("train"), arrays["y_train"])
    return {
        split: float((clf.predict(bag(split)) == arrays[f"y_{split}"]).mean())
        for split in ("val", "test")
        if f"y_{split}" in arrays
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "real" / "text4.npz")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    arrays = write_npz(args.out, args.seed)
    counts = {s: len(arrays[f"y_{s}"]) for s in SIZES}
    print(f"wrote {args.out}: {counts}, seq {SEQ_LEN}, vocab {VOCAB}, {NUM_CLASSES} classes")
    acc = bow_baseline(arrays, args.seed)
    print(f"bag-of-words logistic regression: val {acc['val']:.4f} test {acc['test']:.4f}")


if __name__ == "__main__":
    main()
