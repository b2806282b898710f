"""Where a trial's ONNX file is read from (search/study/source.trial_onnx) when it is not here."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeopt.rundir import RunDir
from edgeopt.search.study.source import BuiltElsewhere, trial_onnx


@pytest.mark.parametrize("machine", [None, {}, {"hostname": "box-7"}])
def test_a_trial_built_elsewhere_names_the_machine_or_says_another(
    tmp_path: Path, machine: dict[str, str] | None
) -> None:
    """A study records ``machine`` as null for a trial whose worker never wrote it: the error
    must still be the typed 'built elsewhere' one, not an AttributeError."""
    trial = {"number": 3, "onnx": "trials/3/model.onnx", "machine": machine}
    with pytest.raises(BuiltElsewhere) as err:
        trial_onnx(RunDir(tmp_path), lambda: None, trial, tmp_path / "dl")
    host = (machine or {}).get("hostname", "another machine")
    assert f"it was built on {host} without --artifacts" in str(err.value.hint)
