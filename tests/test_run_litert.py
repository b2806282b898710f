"""The search converts each candidate's torch module for its LiteRT targets: a real tiny
``edgeopt optimize`` on ``cpu``, ``litert-host`` (measured in LiteRT on this host) and
``edgetpu`` (estimated, full-integer), each trial's ``.tflite`` made by litert-torch and
ai-edge-quantizer in the trial's runtime child, checked for parity (an int8 file on its float
conversion), scored through LiteRT,
litert-host's timed against the original's ``.tflite``; ``export --format tflite`` copies the
very file the search recorded."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from edgeopt.candidate import Candidate
from edgeopt.cli import main
from edgeopt.estimate import estimate
from edgeopt.export.tflite_facts import tflite_facts
from edgeopt.measure.accuracy import onnx_logits
from edgeopt.measure.runtime import size_mb
from edgeopt.profiles import load_profile
from edgeopt.search.trial.runtimes import litert_mode

LITE, TPU = "litert-host", "coral-edgetpu-usb"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, model_files: dict, tiny_data: Path) -> Path:
    """A real 2-trial search on cpu, litert-host and edgetpu through the command line."""
    out = tmp_path_factory.mktemp("litert") / "run"
    args = ["optimize", model_files["bundle"], "--data", tiny_data]
    args += ["--target", f"cpu,{LITE},edgetpu", "--trials", "2", "--sampler", "random"]
    args += ["--threads", "1", "--out", out, "--no-report"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code in (0, 1), result.output
    return out


def _complete(run: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run / 'study.db'}")
    return study.get_trials(states=(TrialState.COMPLETE,))


def test_each_trial_ships_a_tflite_per_litert_target_measured_on_litert_host(
    run_dir: Path, tiny_data: Path
) -> None:
    trials = _complete(run_dir)
    assert trials, (run_dir / "trials").iterdir()
    assert (run_dir / "baseline" / LITE / "original.tflite").is_file()
    x = np.load(tiny_data)["x_val"][:16]
    for t in trials:
        ms = t.user_attrs["measurements"]
        latency = ms[LITE]["values"]["latency_ms"]
        assert latency["provenance"] == "measured", latency
        assert ms[TPU]["values"]["latency_ms"]["provenance"] == "estimated"
        files = t.user_attrs["info"]["target_files"]
        assert set(files) == {LITE, TPU}
        for target, entry in files.items():
            assert entry["runtime"] == "litert"
            path = run_dir / entry["files"][0]
            assert path.suffix == ".tflite"
            assert entry["sha256"] == [hashlib.sha256(path.read_bytes()).hexdigest()]
            conversion = entry["conversion"]
            if conversion["quant_mode"] == "fp32":
                assert 0.995 <= entry["agreement"] <= 1.0, (target, entry)
            else:  # AEQ's int8: the conversion is checked on its float file
                assert conversion["conversion_agreement"] >= 0.995, (target, entry)
                assert 0.0 <= entry["agreement"] <= 1.0
            assert 0.0 <= entry["val_accuracy"] <= 1.0
            # it loads and runs in LiteRT (in a runtime child)
            assert onnx_logits(path, x, threads=1).shape == (16, 10)
        lite = run_dir / files[LITE]["files"][0]
        assert ms[LITE]["values"]["size_mb"]["value"] == pytest.approx(size_mb(lite))
        # litert-host's file follows the candidate's quantization
        mode = litert_mode(Candidate.from_dict(t.user_attrs["candidate"]))
        assert files[LITE]["conversion"]["quant_mode"] == mode
        # the Edge TPU's is full-integer, int8 inputs and outputs included, whatever the
        # candidate
        facts = tflite_facts(run_dir / files[TPU]["files"][0])
        assert facts.all_integer, facts
        assert set(facts.input_types) == set(facts.output_types) == {"INT8"}
        assert files[TPU]["conversion"]["quant_mode"] == "int8_static"
        # and its estimate is made for that file, not for the candidate's ONNX
        want = estimate(run_dir / files[TPU]["files"][0], load_profile(TPU)).latency_ms
        assert ms[TPU]["values"]["latency_ms"]["value"] == pytest.approx(want)


def test_the_final_pass_scores_and_times_litert_host_on_its_tflite(run_dir: Path) -> None:
    final = json.loads((run_dir / "final.json").read_text())
    front = set(final["test_accuracy"])
    assert front and set(final["target_test_accuracy"]) == front
    assert all(0.0 <= v[LITE] <= 1.0 for v in final["target_test_accuracy"].values())
    assert set(final["final_latency"][LITE]["trials"]) == front


def test_export_tflite_copies_the_file_the_search_recorded(run_dir: Path, tmp_path: Path) -> None:
    trial = _complete(run_dir)[0]
    out = tmp_path / "release" / "m.tflite"
    args = ["export", run_dir, "--trial", trial.number, "--format", "tflite", "--out", out]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    entry = trial.user_attrs["info"]["target_files"][LITE]
    assert [hashlib.sha256(out.read_bytes()).hexdigest()] == entry["sha256"]
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["conversion"]["from_search"] == entry["files"][0]
    assert meta["runtime"] == "litert"
    # made from the trial's torch model: the ONNX beside it is its twin, not its source
    assert "the ONNX candidate beside it:" in result.output and ", from " not in result.output


CAPPED = """
import resource
from edgeopt import zoo
from edgeopt.errors import ConversionError
from edgeopt.export.litert import to_litert

resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
try:
    to_litert(zoo.plain_cnn(in_channels=1, num_classes=10, width=4), (1, 16, 16), {out!r})
except ConversionError as exc:
    print(exc.message)
"""


def test_a_conversion_killed_by_the_trial_memory_cap_says_so(tmp_path: Path) -> None:
    # a trial child's RLIMIT_AS (--trial-memory-gb) is inherited by its runtime child,
    # where JAX reserves ~2.5 GiB of address space up front
    code = CAPPED.format(out=str(tmp_path / "m.tflite"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "the runtime's process died" in done.stdout, done.stdout
    assert "capped at 2 GiB (--trial-memory-gb), below the ~2.5 GiB" in done.stdout
