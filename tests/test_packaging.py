"""Packaging: the wheel carries every module and shipped profile, and an installed copy finds
its profiles from anywhere (not through this checkout)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (ROOT / "profiles").glob("*.toml"))


def _offline_build_ok() -> bool:
    """Whether this environment's setuptools can build the wheel without fetching anything."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    # bdist_wheel is part of setuptools from 70.1; before, it needs the wheel package
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _source_copy(dest: Path) -> Path:
    """What an sdist holds, copied so that building writes nothing into the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("edgeopt", "profiles"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    return dest


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = _source_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)]
    if _offline_build_ok():
        cmd[4:4] = ["--no-build-isolation"]
    _run(cmd)
    (whl,) = out.glob("edgeopt-*.whl")
    return whl


def test_wheel_holds_every_module_and_profile(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert SHIPPED and all(f"edgeopt/profile_files/{n}" in names for n in SHIPPED), SHIPPED
    # An explicit package list in pyproject.toml: a package missing from it is missing here.
    modules = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "edgeopt").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert modules - names == set()
    assert "edgeopt/py.typed" in names


def test_installed_wheel_lists_its_profiles(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    py = env_dir / "bin" / "python"
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    # Dependencies come from this environment (appended after the fresh site-packages, whose
    # edgeopt therefore wins); only edgeopt itself is installed.
    deps = "\n".join(site.getsitepackages())
    (Path(purelib.stdout.strip()) / "_edgeopt_test_deps.pth").write_text(deps + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)]
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        [
            str(py),
            "-c",
            "import edgeopt.profiles as p; print(p.__file__); print(p.shipped_profile_dir())",
        ],
        cwd=elsewhere,
    ).stdout.split()
    assert all(Path(w).is_relative_to(env_dir) for w in where), where

    listed = _run([str(env_dir / "bin" / "edgeopt"), "profiles", "list"], cwd=elsewhere).stdout
    for name in SHIPPED:
        assert Path(name).stem in listed, (name, listed)
