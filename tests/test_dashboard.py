"""``edgeopt dashboard``: optuna-dashboard served on a real tiny run, objectives named."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner

from edgeopt.cli import main
from edgeopt.profiles import load_profile

pytest.importorskip("optuna_dashboard", reason="pip install 'edgeopt[dashboard]'")

START_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def run_dir(
    tmp_path_factory: pytest.TempPathFactory, model_files: dict[str, Path], tiny_data: Path
) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    args = [str(model_files["onnx"]), "--data", str(tiny_data), "--target", "mobile"]
    args += ["--trials", "3", "--out", str(out), "--no-report"]
    res = CliRunner().invoke(main, ["optimize", *args])
    assert res.exit_code == 0, res.output
    return out


def _objective_names() -> list[str]:
    return ["accuracy", f"latency_ms[{load_profile('mobile').name}]", "size_mb"]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:  # 127.0.0.1 only
        return json.loads(resp.read())


def _start(run_dir: Path) -> tuple[subprocess.Popen[str], str]:
    """Start ``edgeopt dashboard`` on a free port (``--port 0``); the study's URL it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from edgeopt.cli import main; main()", "dashboard", str(run_dir)]
        + ["--host", "127.0.0.1", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+)(/dashboard/studies/\d+)", line)
        if m:
            return proc, m.group(1) + m.group(2)
    proc.kill()
    raise AssertionError("dashboard did not start: " + "".join(seen))


def test_dashboard_serves_the_study_with_named_objectives(run_dir: Path) -> None:
    proc, url = _start(run_dir)
    try:
        root = url.split("/dashboard/")[0]
        studies = _get(root + "/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["edgeopt"]
        study_id = studies[0]["study_id"]
        assert url.endswith(f"/dashboard/studies/{study_id}")
        detail = _get(f"{root}/api/studies/{study_id}")
        assert detail["objective_names"] == _objective_names()
        assert detail["directions"] == ["maximize", "minimize", "minimize"]
        assert len(detail["trials"]) == 3
        with urllib.request.urlopen(url, timeout=30) as resp:  # the study's page itself
            assert resp.status == 200 and b"<html" in resp.read().lower()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "dashboard stopped" in err


def test_dashboard_stops_cleanly_on_sigterm_too(run_dir: Path) -> None:
    """A service manager stops it with SIGTERM: the same clean stop as Ctrl-C."""
    proc, _ = _start(run_dir)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "dashboard stopped" in err


def test_dashboard_names_the_objectives_of_a_study_without_names(tmp_path: Path) -> None:
    from edgeopt.search.dashboard import name_metrics

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    assert study.metric_names is None
    assert name_metrics(study) == ()  # no edgeopt objectives recorded: nothing written
    study.set_user_attr("objectives", ["accuracy", "size_mb"])
    assert name_metrics(study) == ("accuracy", "size_mb")
    assert optuna.load_study(study_name=study.study_name, storage=storage).metric_names == [
        "accuracy",
        "size_mb",
    ]


def test_dashboard_without_the_extra_says_how_to_install_it(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if not installed
    res = CliRunner().invoke(main, ["dashboard", str(run_dir)])
    assert res.exit_code == 2, res.output
    assert "Hint: pip install 'edgeopt[dashboard]'" in res.output


def test_dashboard_on_a_folder_that_is_no_run_is_a_usage_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["dashboard", str(tmp_path)])
    assert res.exit_code == 2
    assert "is not an edgeopt run directory" in res.output


def test_dashboard_on_a_port_in_use_is_a_usage_error(run_dir: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = CliRunner().invoke(main, ["dashboard", str(run_dir), "--port", str(port)])
    assert res.exit_code == 2, res.output
    assert f"cannot serve on 127.0.0.1:{port}: the port is in use" in res.output
    assert "Hint: pass another --port" in res.output
