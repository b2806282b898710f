"""The tiny two-input BERT the text-model tests share: its builder arguments and its inputs."""

from __future__ import annotations

from edgeopt.inputs import ModelInputs, parse_input_flags

BERT_KW = {"vocab_size": 64, "max_len": 16, "hidden": 32, "depth": 2, "heads": 4}
BERT_KW |= {"intermediate": 64}


def bert_inputs(seq: int) -> ModelInputs:
    """``input_ids`` and ``attention_mask`` of ``seq`` int64 tokens, vocabulary 64."""
    got = parse_input_flags([f"input_ids={seq}:int64", f"attention_mask={seq}:int64"])
    assert isinstance(got, ModelInputs)
    return ModelInputs(tuple(s.__class__(**{**s.__dict__, "vocab_size": 64}) for s in got.specs))
