"""The README's fenced commands work, in the order the README gives them, on the bundled model
(with tiny trial budgets): a newcomer copies them one after another.

Every command of every ```bash block is either run here or named in ``NOT_RUN`` with the
reason, so a new example cannot be added without deciding which."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EDGEOPT = Path(sys.executable).parent / "edgeopt"  # the console script beside this python
TINY_TRIALS = "2"

NOT_RUN: tuple[tuple[str, str], ...] = (
    (r"^python3 -m venv \.venv$", "the set-up CI itself runs (.ci/run)"),
    (r"^\.venv/bin/pip install ", "installs into the venv this test runs in"),
    (r"^\.venv/bin/python -m pytest$", "this test suite"),
    (r"^\.venv/bin/python (models|benchmarks)/\S+\.py\b", "builds or benchmarks: minutes to hours"),
    (r"db\.internal", "a shared PostgreSQL server a user has (tests/test_postgres.py runs one)"),
)


def readme_commands(text: str) -> list[str]:
    """Every command of the ```bash blocks, in order: continuation lines joined, comments
    dropped, ``&&`` chains split."""
    commands: list[str] = []
    for block in re.findall(r"^\s*```bash\n(.*?)^\s*```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            command = " ".join(shlex.quote(w) for w in words)
            commands += [c.strip() for c in command.split(" '&&' ") if c.strip()]
    return commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tiny(args: list[str]) -> list[str]:
    """``args`` with a tiny trial budget."""
    if args[0] != "optimize":
        return args
    if "--trials" in args:
        i = args.index("--trials")
        return [*args[: i + 1], TINY_TRIALS, *args[i + 2 :]]
    return [*args, "--trials", TINY_TRIALS]


def _dashboard(args: list[str], cwd: Path) -> None:
    """The dashboard serves forever: start it, read its page, stop it with Ctrl-C."""
    port = _free_port()
    proc = subprocess.Popen(
        [str(EDGEOPT), *args, "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    assert page.status == 200
                    break
            except OSError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"dashboard did not serve: {proc.communicate()}") from exc
                time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_readme_commands_run_in_order(tmp_path: Path) -> None:
    commands = readme_commands((REPO / "README.md").read_text())
    assert commands[0] == "python3 -m venv .venv"
    for name in ("resnet_small.pt", "digits.npz"):
        (tmp_path / "models").mkdir(exist_ok=True)
        shutil.copy(REPO / "models" / name, tmp_path / "models" / name)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    ran = []
    for command in commands:
        skipped = [why for pattern, why in NOT_RUN if re.search(pattern, command)]
        for extra in re.findall(r"\.\[(\w+)\]", command):
            assert extra in extras, f"README installs an extra pyproject.toml lacks: {command}"
        for script in re.findall(r"\b((?:models|benchmarks)/\w+\.py)\b", command):
            assert (REPO / script).is_file(), f"README names a missing script: {command}"
        if skipped:
            continue
        words = shlex.split(command)
        assert words[0] == ".venv/bin/edgeopt", f"README command neither run nor listed: {command}"
        args = _tiny(words[1:])
        if args[0] == "dashboard":
            _dashboard(args, tmp_path)
        else:
            done = subprocess.run(
                [str(EDGEOPT), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, f"{command}\n{done.stderr}"
            assert "Traceback" not in done.stderr
        ran.append(args[0])
    # the main job, the f1 + MLflow run, its dashboard, the dashboard section, MLflow's
    assert ran.count("optimize") >= 3 and "dashboard" in ran, ran


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "```bash\na && b --x 1 \\\n   --y 2   # note\n```\n",
            ["a", "b --x 1 --y 2"],
        ),
        (
            "  ```bash\n  .venv/bin/pip install -e '.[mlflow]'\n  ```\n",
            [".venv/bin/pip install -e '.[mlflow]'"],
        ),
    ],
)
def test_readme_commands_are_read_as_a_shell_reads_them(text: str, expected: list[str]) -> None:
    assert readme_commands(text) == expected
