"""The tests that load OpenVINO, LiteRT or onnxruntime's ORT-format tools into their process
(``tests/*_cases.py``), each module in a pytest process of its own.

KNOWN BUG, not hidden: in the one-process suite these runtimes crashed pytest with a
segmentation fault, in several places depending on what ran before (a Ctrl-C test of the
final pass after OpenVINO was loaded: reproduce with ``pytest tests/convert_cases.py
tests/test_final_measure.py -k "openvino_ir or ctrl_c"``; LiteRT's first session after
OpenVINO; the ORT-format export after OpenVINO), so a user's process that loads one of them
next to edgeopt's own work may crash too. Keeping them out of edgeopt's main process is the
next step of issue 25. Each module here runs for real; a failure fails its case with the
report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CASES = sorted(p.name for p in HERE.glob("*_cases.py"))


def test_every_cases_module_is_run() -> None:
    assert set(CASES) == {
        "convert_cases.py",
        "export_format_cases.py",
        "litert_cases.py",
        "run_runtimes_cases.py",
        "runtime_files_cases.py",
        "sessions_cases.py",
    }


@pytest.mark.parametrize("module", CASES)
def test_runtime_cases_pass_in_their_own_process(module: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", str(HERE / module), "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=HERE.parent,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    assert " passed" in r.stdout and " failed" not in r.stdout
