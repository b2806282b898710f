"""Many machines on one study, proven against a real PostgreSQL server started from the
system's binaries: two workers with separate run directories ("two machines") share one
study through a shared artifact folder, a third directory that ran no trial reports and
exports every trial, a killed machine's trial is failed and re-run by the other, and a bad
storage is a one-line error with exit 2."""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from edgeopt.cli import main
from edgeopt.config import RunConfig
from edgeopt.loading import ModelSpec
from edgeopt.search.study.storage import redact, resolve_url

EDGEOPT = [sys.executable, "-c", "from edgeopt.cli import main; main()"]
PG_USER = "edgeopt"
PG_PASSWORD = "s3cret-pw"
SERVER_USER = "postgres"  # PostgreSQL refuses to run as root; the package's user, or made


@dataclass(frozen=True)
class PgServer:
    """A running server: ``url()`` is a bare postgresql:// URL (the driver is edgeopt's job)."""

    port: int

    def url(self, password: str = PG_PASSWORD, port: int | None = None) -> str:
        return f"postgresql://{PG_USER}:{password}@127.0.0.1:{port or self.port}/postgres"


def pg_bindir() -> Path | None:
    """The newest PostgreSQL server binaries on this machine (Debian layout, else PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER], check=True)
        return pwd.getpwnam(SERVER_USER)


@contextlib.contextmanager
def running_postgres(bindir: Path) -> Iterator[PgServer]:
    """A throwaway PostgreSQL server on 127.0.0.1 and a free port, its data and unix socket
    in a temporary folder; run as an unprivileged user when this process is root (PostgreSQL
    refuses to run as root). Also used by benchmarks/scaleout.py."""
    root = Path(tempfile.mkdtemp(prefix="edgeopt-pg-"))
    run_as: list[str] = []
    pwfile = root / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    if os.geteuid() == 0:
        user = _server_user()
        for path in (root, pwfile):
            os.chown(path, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", user.pw_name, "--"]
    ctl = [*run_as, str(bindir / "pg_ctl"), "-D", str(root / "data")]
    try:
        subprocess.run(
            [*run_as, str(bindir / "initdb"), "-D", str(root / "data"), "-U", PG_USER,
             f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust",
             "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip
        port = _free_port()
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*ctl, "-l", str(root / "log"), "-o", opts, "-w", "-t", "60", "start"],
            check=True, capture_output=True,
        )  # fmt: skip
        yield PgServer(port)
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    """One server for this module's tests (each test uses its own study)."""
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine; .ci/run installs them")
    with running_postgres(bindir) as server:
        yield server


@functools.cache
def _storage(url: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(resolve_url(url))


def _study(pg: PgServer, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=_storage(pg.url()))


def _optimize(
    model: Path, data: Path, out: Path, *extra: object, target: str = "mobile"
) -> list[str]:
    args = ["optimize", model, "--data", data, "--target", target, "--out", out, *extra]
    return [*EDGEOPT, *(str(a) for a in args)]


def _cli(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


# ---------------------------------------------------------------------------- two machines
@pytest.fixture(scope="module")
def two_machines(
    pg: PgServer, tmp_path_factory: pytest.TempPathFactory, model_files: dict, tiny_data: Path
) -> dict[str, Path]:
    """Machines a and b (separate run directories) run one 6-trial study at once."""
    root = tmp_path_factory.mktemp("machines")
    shared = root / "shared"
    common = ["--storage", pg.url(), "--study", "two", "--artifacts", shared, "--trials", "6"]
    procs = {
        name: subprocess.Popen(
            _optimize(model_files["onnx"], tiny_data, root / name, *common, "--no-report"),
            env={**os.environ, "EDGEOPT_MACHINE": f"machine-{name}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    }
    for name, p in procs.items():
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"machine {name}: {err}"
    return {"a": root / "a", "b": root / "b", "shared": shared, "root": root}


def test_two_machines_share_one_study_without_lost_or_extra_trials(
    pg: PgServer, two_machines: dict[str, Path]
) -> None:
    trials = _study(pg, "two").get_trials()
    assert sorted(t.number for t in trials) == list(range(6))  # exact count, no duplicates
    assert all(t.state == TrialState.COMPLETE for t in trials)
    built = {
        name: {int(p.name) for p in (two_machines[name] / "trials").iterdir()}
        for name in ("a", "b")
    }
    assert built["a"] and built["b"] and not built["a"] & built["b"]  # both machines worked
    # a drawn candidate a baseline built already is completed from it, not built again
    reused = {t.number for t in trials if "same_as_baseline" in t.user_attrs}
    assert built["a"] | built["b"] == set(range(6)) - reused
    for t in trials:
        name = t.user_attrs["machine"]["hostname"].removeprefix("machine-")
        if t.number not in reused:  # the machine recorded is the one that built it
            assert t.number in built[name]
    # the study holds the settings and the first machine's baseline as the reference
    attrs = _study(pg, "two").user_attrs
    assert attrs["edgeopt:settings"]["targets"] == ["mobile-sd8gen2"]
    assert "password" not in json.dumps(attrs) and PG_PASSWORD not in json.dumps(attrs)


def test_the_password_is_in_no_file_of_a_run_and_readers_take_it_from_pgpassword(
    pg: PgServer, two_machines: dict[str, Path], tmp_path: Path
) -> None:
    run = two_machines["a"]
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    # a later reader of the run directory gives the password the way libpq takes it
    report = [*EDGEOPT, "report", str(run)]
    with_pw = subprocess.run(
        report, capture_output=True, text=True, timeout=120, env={**env, "PGPASSWORD": PG_PASSWORD}
    )
    assert with_pw.returncode == 0, with_pw.stderr
    without = subprocess.run(report, capture_output=True, text=True, timeout=120, env=env)
    _assert_one_line_error(without, "no password supplied", "PGPASSWORD")
    files = [p for d in (run, two_machines["shared"]) for p in d.rglob("*") if p.is_file()]
    assert len(files) > 10
    leaks = [str(p) for p in files if PG_PASSWORD.encode() in p.read_bytes()]
    assert not leaks
    recorded = json.loads((run / "run.json").read_text())["storage"]
    assert recorded == f"postgresql://{PG_USER}@127.0.0.1:{pg.port}/postgres"


def test_a_third_machine_reports_and_exports_every_trial(
    pg: PgServer, two_machines: dict[str, Path], tmp_path: Path
) -> None:
    third = tmp_path / "third"  # ran no trial: no run.json, no trials/
    code, out = _cli(
        "report", "--storage", pg.url(), "--study", "two",
        "--artifacts", two_machines["shared"], "--out", third / "report",
    )  # fmt: skip
    assert code == 0, out
    report = json.loads((third / "report" / "report.json").read_text())
    assert sorted(t["number"] for t in report["trials"]) == list(range(6))
    assert PG_PASSWORD not in (third / "report" / "report.json").read_text()
    # the front's test numbers were computed by the machines, reading each other's models
    front = [t for t in report["trials"] if t["on_front"] or t["baseline"]]
    assert front and all(t["test_accuracy"] is not None for t in front)
    md = (third / "report" / "report.md").read_text()
    assert "machine-a" in md and "machine-b" in md  # which machine measured what
    assert "machine-a" in (third / "report" / "trials.csv").read_text()
    for t in report["trials"]:
        dest = third / f"trial{t['number']}.onnx"
        code, out = _cli(
            "export", "--storage", pg.url(), "--study", "two",
            "--artifacts", two_machines["shared"], "--trial", t["number"], "--out", dest,
        )  # fmt: skip
        assert code == 0, out
        onnx.checker.check_model(str(dest))
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == t["onnx_sha256"]
    assert not (third / "trials").exists()


def test_a_machine_with_other_settings_is_refused(
    pg: PgServer, two_machines: dict[str, Path], model_files: dict, tiny_data: Path
) -> None:
    out = two_machines["root"] / "c"
    proc = subprocess.run(
        _optimize(model_files["onnx"], tiny_data, out, "--storage", pg.url(), "--study", "two",
                  "--seed", "1", "--max-size-mb", "3", "--trials", "6"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "seed (1 here, 0 in the study)" in proc.stderr
    assert "budgets.max_size_mb (3.0 here, None in the study)" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()  # refused before any work


# ---------------------------------------------------------------------------- a killed machine
def test_killed_machine_trial_is_failed_and_rerun_by_the_other(
    pg: PgServer,
    tmp_path: Path,
    model_files: dict,
    tiny_data: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import edgeopt.search.run.loop as loop
    import edgeopt.search.study.lifecycle as study_mod
    from edgeopt.search.run.setup import prepare

    # heartbeats every second: a trial is stale 3 s after its machine died
    monkeypatch.setattr(study_mod, "HEARTBEAT_S", 1)
    monkeypatch.setattr(loop, "HEARTBEAT_S", 1)
    shared = tmp_path / "shared"
    common = ["--storage", pg.url(), "--study", "kill", "--artifacts", shared, "--trials", "5"]
    # target cpu: each trial times its model for seconds, so the trial seen running is still
    # running when the kill lands (an estimated target's trial can end in between)
    machine_a = subprocess.Popen(
        _optimize(
            model_files["onnx"], tiny_data, tmp_path / "a", *common, "--no-report", target="cpu"
        ),
        env={**os.environ, "EDGEOPT_HEARTBEAT_S": "1"},
        start_new_session=True,  # its trial's build process dies with it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    running: list[optuna.trial.FrozenTrial] = []
    done: dict[int, list[float]] = {}
    while time.monotonic() < deadline and machine_a.poll() is None:
        try:
            trials = _study(pg, "kill").get_trials()
        except KeyError:  # not created yet
            time.sleep(0.2)
            continue
        done = {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}
        running = [t for t in trials if t.state == TrialState.RUNNING and "machine" in t.user_attrs]
        if done and running:
            break
        time.sleep(0.1)
    assert done and running, "machine a never had a finished and a running trial"
    os.killpg(machine_a.pid, signal.SIGKILL)  # kill -9, mid-trial
    machine_a.wait()
    killed = running[0].number

    config = RunConfig(
        model=ModelSpec(path=str(model_files["onnx"])),
        targets=("cpu",),
        data=str(tiny_data),
        study_name="kill",
        storage=pg.url(),
        artifacts=str(shared),
    )
    prepare(config, tmp_path / "b")
    loop.run_search(tmp_path / "b", n_trials=5, timeout_s=None)

    trials = _study(pg, "kill").get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].user_attrs["worker"].endswith(f":{os.getpid()}")  # machine b re-ran it
    for number, values in done.items():  # nothing completed was lost
        assert trials[number].state == TrialState.COMPLETE and trials[number].values == values
    assert len(trials) == 6  # 5 counted + the failed one its retry replaces


# ---------------------------------------------------------------------------- bad storage
def _assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert [line.split(":")[0] for line in lines] == ["Error", "Hint"], proc.stderr
    for needle in needles:
        assert needle in proc.stderr
    assert PG_PASSWORD not in proc.stderr and "wrong-pw" not in proc.stderr


def test_unreachable_server_wrong_password_and_missing_driver_exit_2(
    pg: PgServer, tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    def optimize(url: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _optimize(model_files["onnx"], tiny_data, tmp_path / "run", "--storage", url),
            capture_output=True, text=True, timeout=120, env={**os.environ, **env},
        )  # fmt: skip

    _assert_one_line_error(
        optimize(pg.url(port=_free_port())), "Connection refused", "server running"
    )
    _assert_one_line_error(
        optimize(pg.url(password="wrong-pw")), "password authentication failed", "PGPASSWORD"
    )
    # a machine without the driver: both PostgreSQL drivers fail to import
    shadow = tmp_path / "no-driver"
    for module in ("psycopg", "psycopg2"):
        (shadow / module).mkdir(parents=True)
        (shadow / module / "__init__.py").write_text("raise ImportError('not installed')\n")
    _assert_one_line_error(
        optimize(pg.url(), PYTHONPATH=str(shadow)),
        "no PostgreSQL driver is installed",
        "pip install 'edgeopt[postgres]'",
    )
    report = subprocess.run(
        [*EDGEOPT, "report", "--storage", pg.url(password="wrong-pw"), "--out", tmp_path / "r"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    _assert_one_line_error(report, "password authentication failed")
    assert not (tmp_path / "run").exists()


def test_bare_postgres_url_gets_the_installed_driver() -> None:
    assert resolve_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert resolve_url("postgres://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert resolve_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert resolve_url("sqlite:///x.db") == "sqlite:///x.db"
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


# ------------------------------------------------------------- machines without an artifact store
def test_machines_without_artifacts_finish_with_what_they_can_read(
    pg: PgServer, tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """A machine whose front holds a trial another machine built without ``--artifacts``
    (and has not scored yet) finishes, exit 0, and says which trials it could not read."""
    bundle = model_files["bundle_wide"]
    common = ["--storage", pg.url(), "--study", "no-store", "--no-report"]
    env = {**os.environ, "EDGEOPT_MACHINE": "machine-a"}
    first = subprocess.run(
        _optimize(bundle, tiny_data, tmp_path / "a", *common, "--trials", "2"),
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    env_b = {**os.environ, "EDGEOPT_MACHINE": "machine-b"}
    joined = subprocess.run(
        _optimize(bundle, tiny_data, tmp_path / "b", *common, "--trials", "2"),
        capture_output=True, text=True, timeout=300, env=env_b,
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    # machine b's worker builds the expert seeds and has not finished (so scored nothing)
    worker = subprocess.run(
        [sys.executable, "-m", "edgeopt.search.run.loop", str(tmp_path / "b"), "--trials", "4"],
        capture_output=True, text=True, timeout=300, env={**env_b, "PGPASSWORD": PG_PASSWORD},
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    front = {t.number for t in _study(pg, "no-store").best_trials}
    assert front & {2, 3}, "a pruned seed is the smallest model: on the front"
    again = subprocess.run(
        _optimize(bundle, tiny_data, tmp_path / "a", *common, "--trials", "4"),
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "built on machine-b without --artifacts" in again.stderr
    assert "Traceback" not in again.stderr
