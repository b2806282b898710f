"""``edgeopt dashboard``: optuna-dashboard served on a real tiny run, objectives named."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
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


def _start(run_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``edgeopt dashboard`` on a free port (``--port 0``); the study's URL it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from edgeopt.cli import main; main()", "dashboard", str(run_dir)]
        + ["--host", "127.0.0.1", "--port", "0", *extra],
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
    from edgeopt.search.integrations.dashboard import name_metrics

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


# --------------------------------------------------------------------------- who may do what
# optuna-dashboard has no login; its write routes are plain HTTP requests any web page can
# send to 127.0.0.1, and DNS rebinding lets a page on another name read the answers too.


@contextlib.contextmanager
def _serving(run_dir: Path, *extra: str) -> Iterator[tuple[int, int]]:
    """A real ``edgeopt dashboard`` on 127.0.0.1 (a free port): (port, study id). Always
    stopped afterwards, whatever the test did."""
    proc, url = _start(run_dir, *extra)
    try:
        m = re.search(r":(\d+)/dashboard/studies/(\d+)", url)
        assert m is not None
        yield int(m.group(1)), int(m.group(2))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, bytes]:
    """One request to 127.0.0.1:``port`` with exactly these headers (Host included)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the shared run for a test that tries to change its study."""
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def _studies_in_db(run: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(run / "study.db")) as db:
        return [name for (name,) in db.execute("SELECT study_name FROM studies")]


def _dump(run: Path) -> list[str]:
    """Every row of study.db, to show that nothing at all changed."""
    with contextlib.closing(sqlite3.connect(run / "study.db")) as db:
        return list(db.iterdump())


def test_a_cross_site_delete_is_refused_and_the_study_survives(
    run_dir: Path, tmp_path: Path
) -> None:
    """The attack, verbatim: a page on another name (DNS rebinding) deletes the study."""
    run = _copy(run_dir, tmp_path)
    before = _dump(run)
    with _serving(run) as (port, study_id):
        attacker = f"attacker.example:{port}"
        status, body = _request(
            port,
            "DELETE",
            f"/api/studies/{study_id}",
            {"Host": attacker, "Origin": f"http://{attacker}"},
        )
        assert status == 403, body
        assert b"is not this dashboard's address" in body
        # addressed correctly, from its own page: still refused, the dashboard is read-only
        mine = f"127.0.0.1:{port}"
        status, body = _request(
            port, "DELETE", f"/api/studies/{study_id}", {"Host": mine, "Origin": f"http://{mine}"}
        )
        assert status == 405, body
        assert b"--allow-writes" in body
        status, _ = _request(port, "GET", f"/api/studies/{study_id}", {"Host": mine})
        assert status == 200
    assert _studies_in_db(run) == ["edgeopt"]
    assert _dump(run) == before
    assert (
        len(optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run / 'study.db'}").trials)
        == 3
    )


def _write_routes() -> list[tuple[str, str]]:
    """(method, path) of every route of the real optuna-dashboard app that is not a read,
    its wildcards filled in (study 1, trial 1, a uuid-like artifact id)."""
    from optuna_dashboard import wsgi

    app = wsgi(optuna.storages.InMemoryStorage())
    fill = {"int": "1", "re": "0123abcd-0000-4000-8000-000000000000", "path": "x"}

    def path(rule: str) -> str:
        return re.sub(
            r"<[^>:]*(?::([^>:]*))?(?::[^>]*)?>", lambda m: fill.get(m[1] or "", "x"), rule
        )

    routes = [(r.method, path(r.rule)) for r in app.routes if r.method not in ("GET", "HEAD")]
    return sorted(set(routes))


def test_every_write_route_is_refused_by_default_and_nothing_changes(
    run_dir: Path, tmp_path: Path
) -> None:
    routes = _write_routes()
    methods = {m for m, _ in routes}
    assert {"POST", "PUT", "DELETE"} <= methods and len(routes) >= 15, routes  # all found
    run = _copy(run_dir, tmp_path)
    before = _dump(run)
    with _serving(run) as (port, _):
        mine = {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"}
        headers = {**mine, "Content-Type": "application/json"}
        answers = {
            (m, p): _request(port, m, p, headers, b'{"version": 9, "body": "x"}')[0]
            for m, p in [*routes, ("PATCH", "/api/studies/1"), ("OPTIONS", "/api/studies")]
        }
    assert {k: v for k, v in answers.items() if v != 405} == {}
    assert _dump(run) == before


def test_reads_need_this_servers_address_in_the_host_header(run_dir: Path, tmp_path: Path) -> None:
    with _serving(run_dir) as (port, study_id):
        path = f"/api/studies/{study_id}"
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
            status, body = _request(port, "GET", path, {"Host": host})
            assert status == 200, (host, body)
            assert json.loads(body)["objective_names"] == _objective_names()
        for host in (
            f"attacker.example:{port}",  # a rebound name
            f"127.0.0.1:{port + 1}",  # another port
            "127.0.0.1",  # port 80
            f"localhost.attacker.example:{port}",
            f"127.0.0.1:{port}:{port}",
            f"[::1:{port}",
        ):
            status, body = _request(port, "GET", path, {"Host": host})
            assert status == 403, (host, status, body)
        # no Host header at all (HTTP/1.0 allows it; no browser sends that)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            answer = b"".join(iter(lambda: s.recv(65536), b""))
        assert answer.startswith(b"HTTP/1.0 403"), answer[:200]


def test_with_allow_writes_only_its_own_page_may_change_the_study(
    run_dir: Path, tmp_path: Path
) -> None:
    run = _copy(run_dir, tmp_path)
    with _serving(run, "--allow-writes") as (port, study_id):
        mine = f"127.0.0.1:{port}"
        note = f"/api/studies/{study_id}/note"
        headers = {"Host": mine, "Content-Type": "application/json"}

        def put(body: str, **extra: str) -> int:
            payload = json.dumps({"version": 1, "body": body}).encode()
            return _request(port, "PUT", note, {**headers, **extra}, payload)[0]

        assert put("from another site", Origin=f"http://attacker.example:{port}") == 403
        assert put("without an Origin") == 403
        assert put("another port", Origin=f"http://127.0.0.1:{port + 1}") == 403
        assert put("https", Origin=f"https://{mine}") == 403
        assert put("null origin", Origin="null") == 403
        assert put("kept", Origin=f"http://{mine}") == 204  # its own page
        status, body = _request(port, "GET", f"/api/studies/{study_id}", {"Host": mine})
        assert status == 200 and json.loads(body)["note"]["body"] == "kept"
        # the Host check holds for writes too, whatever the Origin says
        attacker = f"attacker.example:{port}"
        status, _ = _request(
            port,
            "DELETE",
            f"/api/studies/{study_id}",
            {"Host": attacker, "Origin": f"http://{attacker}"},
        )
        assert status == 403
    assert _studies_in_db(run) == ["edgeopt"]
    storage = optuna.storages.RDBStorage(f"sqlite:///{run / 'study.db'}")
    assert "kept" in storage.get_study_system_attrs(study_id).values()  # in study.db itself


def test_host_names_accepted_after_each_kind_of_bind() -> None:
    """Which Host headers name the server, for binds a test may not make (0.0.0.0)."""
    from edgeopt.search.integrations.dashboard_guard import Guard, is_loopback, split_host

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return []

    loop = Guard(app, "127.0.0.1", 8080)
    assert loop.host_ok("127.0.0.1:8080") and loop.host_ok("localhost:8080")
    assert loop.host_ok("[::1]:8080")
    assert not loop.host_ok("192.168.1.5:8080")  # an IP of this machine, not what was bound
    assert not loop.host_ok("") and not loop.host_ok(None)
    every = Guard(app, "0.0.0.0", 8080)
    assert every.host_ok("192.168.1.5:8080") and every.host_ok("[fe80::1]:8080")
    assert every.host_ok(f"{socket.gethostname()}:8080")
    assert not every.host_ok("attacker.example:8080") and not every.host_ok("192.168.1.5:80")
    named = Guard(app, "box.lan", 80)
    assert named.host_ok("box.lan") and named.host_ok("BOX.LAN:80")
    assert not named.host_ok("192.168.1.5")
    assert split_host("[::1]:8080") == ("::1", 8080)
    assert split_host("a:b") is None and split_host(":80") is None and split_host("a:0") is None
    assert is_loopback("127.0.0.2") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
