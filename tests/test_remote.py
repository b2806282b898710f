"""Measuring on a device over SSH, against a real OpenSSH server on 127.0.0.1 whose "device"
is this machine (the project's python as the remote python): bench, check, optimize and
calibrate measure there and label every number with the device; each failure mode (device
gone mid-study, wrong key, no onnxruntime there, a missing provider, a hang, an unreachable
host) is a FAIL trial or one exit-2 error with a hint. Also: the [runner] table's strict
validation and the power readers, on a sysfs-like tree."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import psutil
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from edgeopt.cli import main
from edgeopt.config import RunConfig
from edgeopt.errors import ConfigError
from edgeopt.loading import ModelSpec
from edgeopt.measure.runners import DeviceError, LocalRunner, close_runners, runner_for
from edgeopt.profiles import shipped_profile_dir, validate_profile_file
from edgeopt.search.run.collect import load_run
from edgeopt.search.run.loop import run_search
from edgeopt.search.run.setup import prepare
from edgeopt.search.study.lifecycle import counted_trials

SHAPE = (1, 16, 16)
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


class SshServer:
    """A throwaway sshd on 127.0.0.1: its own host key, one authorized key, a work dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.key = root / "id_ed25519"
        self.known_hosts = root / "known_hosts"
        self.workdir = root / "device-work"
        self.proc: subprocess.Popen[bytes] | None = None
        for name in ("host_key", "id_ed25519"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)],
                check=True,
            )
        shutil.copy(root / "id_ed25519.pub", root / "authorized_keys")
        host_pub = (root / "host_key.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(host_pub)}\n")
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
            "StrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\n"
        )

    @property
    def device(self) -> str:
        return f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}"

    def start(self) -> None:
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation folder
        log = open(self.root / "sshd.log", "ab")  # noqa: SIM115 (sshd keeps writing to it)
        self.proc = subprocess.Popen(
            [SSHD, "-f", str(self.root / "sshd_config"), "-D", "-e"], stderr=log, stdout=log
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(self.root / 'sshd.log').read_text()[-2000:]}")

    def stop(self) -> None:
        """Kill sshd and every session it serves, as a device that loses power."""
        if self.proc is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]
            for p in procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
        self.proc.wait(10)
        self.proc = None

    def profile(self, path: Path, **runner: Any) -> Path:
        """The host profile renamed ``board``, with a [runner] to this server (``runner``
        overrides keys; None drops one)."""
        text = (shipped_profile_dir() / "host-cpu.toml").read_text()
        text = text.replace('name = "host-cpu"', 'name = "board"')
        text = text.replace('aliases = ["cpu", "host"]', "aliases = []")
        table: dict[str, Any] = {
            "kind": "ssh",
            "host": "127.0.0.1",
            "user": getpass.getuser(),
            "port": self.port,
            "identity_file": str(self.key),
            "known_hosts": str(self.known_hosts),
            "python": sys.executable,
            "workdir": str(self.workdir),
            **runner,
        }
        body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items() if v is not None)
        path.write_text(f"{text}\n[runner]\n{body}\n")
        return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if not Path(SSHD).exists():
        pytest.skip("no sshd here: apt-get install -y openssh-server (.ci/run installs it)")
    srv = SshServer(tmp_path_factory.mktemp("sshd"))
    srv.start()
    yield srv
    close_runners()
    srv.stop()


@pytest.fixture(autouse=True)
def _fresh_runners() -> Iterator[None]:
    yield
    close_runners()  # every test starts without cached connections


def _cli(*args: object) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error(result: Any) -> str:
    """Exit 2 with one ``Error:`` line (and at most one ``Hint:``), no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Error: ") and len(lines) <= 2, result.stderr
    assert "Traceback" not in result.output
    return str(lines[0])


# ------------------------------------------------------------------ measured on the device


def test_bench_on_the_device_is_measured_and_labelled(
    server: SshServer, model_files: dict, tmp_path: Path
) -> None:
    board = server.profile(tmp_path / "board.toml")
    onnx = model_files["onnx"]
    result = _cli("bench", onnx, "--vs", onnx, "--target", board, "--time-budget", "0.5", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["device"] == server.device and report["measured"] is True
    assert report["host"].startswith(server.device)
    for row in report["results"]:
        for key in ("latency_p50_ms", "latency_p90_ms", "peak_memory_mb", "process_peak_rss_mb"):
            assert row[key]["provenance"] == "measured"
            assert row[key]["device"] == server.device
        assert 0 < row["latency_p50_ms"]["value"] < 100
        assert 0 < row["peak_memory_mb"]["value"] < row["process_peak_rss_mb"]["value"] < 300
        # this machine has no readable power meter: energy stays the cost model's, labelled
        assert row["energy_mj"]["provenance"] == "estimated"
        assert "device" not in row["energy_mj"]
    (cmp,) = report["comparisons"]  # the model against itself, interleaved on the device
    assert cmp["device"] == server.device and 0.6 < cmp["ratio"] < 1.6
    text = _cli("bench", onnx, "--target", board, "--time-budget", "0.3")
    assert text.exit_code == 0, text.output
    assert f"measured on {server.device}" in text.output
    assert "energy: estimated by the cost model" in text.output


def test_each_model_is_copied_once_and_the_device_is_left_tidy(
    server: SshServer, model_files: dict, tmp_path: Path
) -> None:
    profile = validate_profile_file(server.profile(tmp_path / "board.toml"))
    runner = runner_for(profile)
    runner.measure_latency([model_files["onnx"]], threads=1, input_shape=SHAPE, time_budget_s=0.2)
    (session,) = server.workdir.glob("s-*")
    (copied,) = (session / "m").glob("*/model.onnx")
    first = copied.stat().st_mtime_ns
    runner.measure_memory(model_files["onnx"], threads=1, input_shape=SHAPE)
    assert copied.stat().st_mtime_ns == first  # same content hash: not copied again
    # more candidates than the device keeps: the oldest are removed, the newest stay
    import onnx

    for i in range(6):
        other = onnx.load(model_files["onnx"])
        other.doc_string = f"candidate {i}"  # same graph, other bytes
        onnx.save(other, tmp_path / f"c{i}.onnx")
        runner.measure_memory(tmp_path / f"c{i}.onnx", threads=1, input_shape=SHAPE)
    assert len(list((session / "m").iterdir())) <= 4
    runner.close()
    assert list(server.workdir.iterdir()) == []


def test_check_on_the_device_labels_the_verdict(
    server: SshServer, model_files: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    board = server.profile(tmp_path / "board.toml")
    args = ["--target", board, "--max-latency-ms", "100", "--max-energy-mj", "1000"]
    result = _cli("check", model_files["onnx"], *args, "--time-budget", "0.3", "--json")
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["passed"] and verdict["device"] == server.device
    by_name = {r["name"]: r for r in verdict["results"]}
    assert by_name["max_latency_ms"]["provenance"] == "measured"
    assert by_name["max_energy_mj"]["provenance"] == "estimated"  # no meter on this machine
    text = _cli("check", model_files["onnx"], *args, "--time-budget", "0.3", "--junit", "j.xml")
    assert f"measured on {server.device}" in text.output
    assert f'name="device" value="{server.device}"' in (tmp_path / "j.xml").read_text()


def _config(model: Path, data: Path, target: Path) -> RunConfig:
    return RunConfig(
        model=ModelSpec(path=str(model)),
        data=str(data),
        targets=(str(target),),
        seed=0,
        trial_timeout_s=120.0,
    )


def test_device_going_down_mid_study_fails_trials_and_the_study_goes_on(
    server: SshServer, model_files: dict, tiny_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    prepare(_config(model_files["bundle"], tiny_data, server.profile(tmp_path / "b.toml")), run)
    storage = f"sqlite:///{run / 'study.db'}"
    stopped = threading.Event()

    def power_off_after_the_first_trial() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                study = optuna.load_study(study_name="edgeopt", storage=storage)
                if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                    server.stop()
                    stopped.set()
                    return
            time.sleep(0.1)

    watcher = threading.Thread(target=power_off_after_the_first_trial, daemon=True)
    watcher.start()
    try:
        run_search(run, n_trials=3, timeout_s=None)
        watcher.join(5)
    finally:
        if not stopped.is_set():
            server.stop()
        server.start()  # the device comes back
    study = optuna.load_study(study_name="edgeopt", storage=storage)
    trials = study.get_trials()
    assert counted_trials(study) == 3  # the study went on
    # a trial its device failed to measure is queued once more; a failed retry is not
    retries = [t for t in trials if "retry_of" in t.user_attrs]
    assert retries and all(t.params == trials[t.user_attrs["retry_of"]].params for t in retries)
    assert not [t for t in retries if "retry_of" in trials[t.user_attrs["retry_of"]].user_attrs]
    assert trials[0].state == TrialState.COMPLETE
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, [t.state for t in trials]
    for t in failed:
        assert t.user_attrs["fail_stage"] == "measure"
        assert server.device in t.user_attrs["fail_reason"]
    records = load_run(run)
    lat = records["trials"][0]["measurements"]["board"]["latency_ms"]
    assert lat["provenance"] == "measured" and lat["device"] == server.device
    ref = records["baseline"]["host_latency_ms"]["board"]
    assert 0.5 * ref < lat["value"] < 2.0 * ref  # the original against itself on the device
    # after the reboot, the next trial measures there again (files copied anew)
    run_search(run, n_trials=4, timeout_s=None)
    last = optuna.load_study(study_name="edgeopt", storage=storage).get_trials()[-1]
    assert last.state == TrialState.COMPLETE, last.user_attrs.get("fail_reason")


def test_calibrate_on_the_device_writes_a_sourced_profile(
    server: SshServer, tmp_path: Path
) -> None:
    board = server.profile(tmp_path / "board.toml")
    out = tmp_path / "elsewhere" / "board.calibrated.toml"
    args = ["--target", board, "--out", out, "--no-check", "--rounds", "2"]
    result = _cli("profiles", "calibrate", *args)
    assert result.exit_code == 0, result.output
    assert f"on {server.device}" in result.output
    fitted = validate_profile_file(out)
    assert fitted.name == "board" and fitted.calibrated and fitted.measured
    assert fitted.runner is not None and fitted.runner.device == server.device
    assert fitted.runner.identity_file == server.key  # absolute: the file moved folders
    assert fitted.calibration is not None
    assert fitted.calibration.machine.startswith(server.device)
    for key in ("units.cpu.peak_gops_fp32", "units.cpu.bandwidth_gbs", "memory.dram_bytes"):
        assert fitted.provenance[key].kind == "measured" and fitted.provenance[key].src == "CAL"
    assert fitted.units[0].peak_gops["fp32"] > 0
    assert not fitted.unstated


# ------------------------------------------------------------------ failure modes


def test_wrong_key_is_one_error_with_exit_2(
    server: SshServer, model_files: dict, tmp_path: Path
) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    board = server.profile(tmp_path / "board.toml", identity_file="other")  # relative: here
    line = _one_error(_cli("bench", model_files["onnx"], "--target", board))
    assert f"{server.device} refused the key {tmp_path / 'other'}" in line


def test_remote_python_without_onnxruntime_is_one_error_with_exit_2(
    server: SshServer, model_files: dict, tmp_path: Path
) -> None:
    # the same interpreter without site-packages: no onnxruntime, no numpy
    bare = tmp_path / "bare-python"
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    bare.chmod(0o755)
    board = server.profile(tmp_path / "board.toml", python=str(bare))
    line = _one_error(_cli("bench", model_files["onnx"], "--target", board))
    assert f"python {sys.executable} has no onnxruntime" in line


def test_a_provider_the_device_lacks_is_one_error_with_exit_2(
    server: SshServer, model_files: dict, tmp_path: Path
) -> None:
    work = tmp_path / "device-work"
    board = server.profile(
        tmp_path / "board.toml", providers=["CANNExecutionProvider"], workdir=str(work)
    )
    line = _one_error(_cli("bench", model_files["onnx"], "--target", board))
    assert "has no CANNExecutionProvider (available: " in line
    close_runners()  # as at the command's exit
    assert list(work.iterdir()) == []  # the session it started is gone


def test_a_hang_mid_measurement_times_out_with_exit_2(
    server: SshServer, model_files: dict, tmp_path: Path
) -> None:
    # a device whose timing process never answers (set-up calls work)
    hang = tmp_path / "hanging-python"
    hang.write_text(f'#!/bin/sh\n[ "$1" = "-m" ] && exec sleep 30\nexec {sys.executable} "$@"\n')
    hang.chmod(0o755)
    board = server.profile(tmp_path / "board.toml", python=str(hang), timeout_s=1)
    t0 = time.monotonic()
    line = _one_error(_cli("bench", model_files["onnx"], "--target", board))
    assert f"{server.device} did not answer within" in line
    assert time.monotonic() - t0 < 25
    close_runners()
    assert not list(server.workdir.glob("s-*"))  # the connection survived: removed at close


def test_unreachable_device_is_one_error_with_exit_2(
    server: SshServer, model_files: dict, tmp_path: Path
) -> None:
    board = server.profile(tmp_path / "board.toml", port=_free_port())
    line = _one_error(_cli("bench", model_files["onnx"], "--target", board))
    assert "cannot reach ssh://" in line and "Connection refused" in line


# ------------------------------------------------------------------ without a server


def test_runner_table_is_validated_strictly(tmp_path: Path) -> None:
    srv_like = tmp_path / "keys"
    srv_like.mkdir()
    base = (shipped_profile_dir() / "host-cpu.toml").read_text()

    def load(runner: str, measured: bool = True) -> Any:
        text = base if measured else base.replace("measured = true", "measured = false")
        path = srv_like / "p.toml"
        path.write_text(text + "\n[runner]\n" + runner)
        return validate_profile_file(path)

    spec = load('kind = "ssh"\nhost = "board"\nidentity_file = "id"\nthreads = 4\n')
    assert spec.runner.identity_file == srv_like / "id" and spec.threads == 4
    assert spec.runner.device == "ssh://board" and spec.label == "measured (ssh://board)"
    assert not any(k.startswith("runner.") for k in spec.provenance)
    cases = {
        'kind = "ssh"\nhots = "b"\n': "unknown key 'hots' (did you mean 'host'?)",
        'kind = "sssh"\nhost = "b"\n': "runner.kind: expected one of local, ssh",
        'kind = "ssh"\nhost = "-oProxyCommand=x"\n': "runner.host: expected a host name",
        'kind = "ssh"\nhost = "b"\nport = 70000\n': "runner.port: expected a port number",
        'kind = "ssh"\nhost = "b"\nproviders = ["CUDAExecutionProvder"]\n': (
            "unknown execution provider 'CUDAExecutionProvder' "
            "(did you mean 'CUDAExecutionProvider'?)"
        ),
        'kind = "local"\nhost = "b"\n': 'runner.host: only for kind = "ssh"',
        'kind = "ssh"\n': "runner.host: missing required key",
        'kind = "ssh"\nhost = "b"\nworkdir = "/"\n': "runner.workdir: expected an absolute",
    }
    for table, message in cases.items():
        with pytest.raises(ConfigError) as exc:
            load(table)
        assert message in exc.value.message, (table, exc.value.message)
    with pytest.raises(ConfigError, match="measured on its device"):
        load('kind = "ssh"\nhost = "b"\n', measured=False)
    result = _cli("profiles", "validate", srv_like / "p.toml")  # the last (bad) file
    assert result.exit_code == 2 and "measured on its device" in result.stderr


def test_local_runner_refuses_a_provider_this_host_lacks(model_files: dict) -> None:
    runner = LocalRunner(["CANNExecutionProvider"])
    with pytest.raises(DeviceError, match="has no CANNExecutionProvider"):
        runner.measure_latency([model_files["onnx"]], threads=1, input_shape=SHAPE)
    cpu = LocalRunner(["CPUExecutionProvider"])
    (stats,) = cpu.measure_latency(
        [model_files["onnx"]], threads=1, input_shape=SHAPE, time_budget_s=0.2
    )
    assert stats.p50_ms > 0 and cpu.device.startswith("local://")


def test_power_readers_on_a_sysfs_tree(tmp_path: Path) -> None:
    from edgeopt.measure.power import energy_per_run_mj, find_power_source

    assert find_power_source(str(tmp_path)) is None
    rapl = tmp_path / "sys/class/powercap/intel-rapl:0"
    rapl.mkdir(parents=True)
    (rapl / "energy_uj").write_text("999000000\n")
    (rapl / "max_energy_range_uj").write_text("1000000000\n")
    source = find_power_source(str(tmp_path))
    assert source is not None and source["kind"] == "rapl"
    counter = rapl / "energy_uj"

    def run() -> None:  # each run costs 2 mJ; the counter wraps past its range
        counter.write_text(str((int(counter.read_text()) + 2000) % 1_000_000_000))

    out = energy_per_run_mj(run, source, duration_s=0.05)
    assert out["energy_mj"] == pytest.approx(2.0) and out["runs"] >= 3
    # a Jetson (JetPack 5+): hwmon rails in mV and mA; the module input rail is the one used
    hw = tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    hw.mkdir(parents=True)
    for n, (label, mv, ma) in enumerate([("VDD_IN", 5000, 1000), ("VDD_SOC", 5000, 300)], 1):
        (hw / f"in{n}_label").write_text(label)
        (hw / f"in{n}_input").write_text(str(mv))
        (hw / f"curr{n}_input").write_text(str(ma))
    rapl.joinpath("energy_uj").unlink()
    source = find_power_source(str(tmp_path))
    assert source is not None and source["label"] == "INA3221 VDD_IN"
    out = energy_per_run_mj(lambda: time.sleep(0.002), source, duration_s=0.1)
    assert out["mean_w"] == pytest.approx(5.0)  # 5 V x 1 A


def test_the_files_copied_to_devices_parse_as_python_38() -> None:
    import ast

    from edgeopt.measure import ssh_runner

    here = Path(ssh_runner.__file__).parent
    for name in ssh_runner.CHILD_FILES:
        tree = ast.parse((here / name).read_text(), feature_version=(3, 8))
        for node in ast.walk(tree):  # zip(strict=) and match are 3.10+
            assert not (isinstance(node, ast.keyword) and node.arg == "strict"), name
    for script in (ssh_runner._BOOT, ssh_runner._PUT):
        ast.parse(script, feature_version=(3, 8))


def test_energy_request_runs_the_child_on_a_power_reading(
    model_files: dict, tmp_path: Path
) -> None:
    from edgeopt.measure.local_runner import measure_energy

    counter = tmp_path / "energy_uj"
    counter.write_text("5000\n")  # a counter that does not move: 0 mJ, but every step runs
    source = {"kind": "rapl", "counter": str(counter), "max_uj": 2**32, "label": "test"}
    stats = measure_energy(
        model_files["onnx"], source, threads=1, input_shape=SHAPE, duration_s=0.1
    )
    assert stats.energy_mj == 0 and stats.runs >= 3 and stats.source == "test"
