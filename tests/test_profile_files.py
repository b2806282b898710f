"""Profile files that are not text profiles (binary, a FIFO, a device, oversized) and a
shipped profile's file name end in one clear error, without blocking or reading unbounded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeopt.cli import main


def _cli(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_binary_profile_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "board.toml"
    path.write_bytes(b"\xff\xfe\x00binary" + bytes(range(256)))
    r = _cli("profiles", "show", path)
    assert r.exit_code == 2, r.output
    assert f"{path}: not a text (UTF-8) TOML file" in r.stderr
    assert "Traceback" not in r.output


def test_a_profile_that_is_not_a_regular_file_is_refused_without_reading_it(
    tmp_path: Path,
) -> None:
    fifo = tmp_path / "board.toml"
    os.mkfifo(fifo)  # reading it would block forever
    for spec in (fifo, Path("/dev/zero")):  # or never end
        r = _cli("profiles", "show", spec)
        assert r.exit_code == 2, r.output
        assert f"{spec}: not a regular file" in r.stderr


def test_an_oversized_profile_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.toml"
    path.write_text("# padding\n" * 200_000)  # 2 MB of comments: valid TOML
    r = _cli("profiles", "validate", path)
    assert r.exit_code == 2, r.output
    assert "larger than" in r.stderr and "a profile is a few KB" in r.stderr


def test_a_shipped_profiles_file_name_points_at_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where no host-cpu.toml exists
    r = _cli("profiles", "show", "host-cpu.toml")
    assert r.exit_code == 2, r.output
    assert "host-cpu.toml: profile file not found" in r.stderr
    assert "the shipped profile 'host-cpu'" in r.stderr
