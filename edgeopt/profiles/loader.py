"""Finding and loading profiles: a file path, a shipped profile's name, or one of its aliases.

The shipped profiles live in the repository's top-level ``profiles/`` folder, which the wheel
installs as the data package ``edgeopt.profile_files``; they are found with
:mod:`importlib.resources`, so an installed wheel, an editable install and a plain source
checkout all find them.
"""

from __future__ import annotations

import importlib.resources
import stat
import tomllib
from dataclasses import replace
from pathlib import Path

from edgeopt.errors import ConfigError, EdgeoptError
from edgeopt.profiles.parse import parse_profile
from edgeopt.profiles.reader import did_you_mean
from edgeopt.profiles.schema import HardwareProfile

SHIPPED_PACKAGE = "edgeopt.profile_files"
# A profile is a few KB of TOML; anything much larger is not one.
MAX_PROFILE_BYTES = 1024 * 1024
# A source checkout run without ``pip install`` (e.g. PYTHONPATH=.) has no such package.
_SOURCE_DIR = Path(__file__).resolve().parents[2] / "profiles"


def shipped_profile_dir() -> Path:
    """The folder holding the shipped profile TOMLs."""
    # A source checkout imported directly (PYTHONPATH=checkout, e.g. a second git worktree
    # beside an editable install, which maps the package to the first) reads its own files.
    if (_SOURCE_DIR.parent / "pyproject.toml").is_file() and (
        _SOURCE_DIR / "__init__.py"
    ).is_file():
        return _SOURCE_DIR
    try:
        root = importlib.resources.files(SHIPPED_PACKAGE)
    except ModuleNotFoundError:
        return _SOURCE_DIR
    return Path(str(root))


def _shipped_files() -> list[Path]:
    folder = shipped_profile_dir()
    files = sorted(folder.glob("*.toml"))
    if not files:
        raise EdgeoptError(
            f"no shipped hardware profiles found in {folder}",
            hint="reinstall edgeopt (pip install -e . in a checkout)",
        )
    return files


def validate_profile_file(path: str | Path) -> HardwareProfile:
    """Load and validate one profile TOML file.

    Raises ConfigError naming the file and key path for a missing file, invalid TOML, an
    unknown key (with the closest valid name), a wrong type or unit, or a missing field.
    """
    p = Path(path)
    shown = str(path)
    text = _read_text(p, shown)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {exc}") from None
    return replace(parse_profile(data, shown, p.resolve()), text=text)


def profile_from_text(text: str, label: str) -> HardwareProfile:
    """A profile from the TOML ``text`` a run recorded (``HardwareProfile.text``); ``label``
    names it in errors. Relative ``[runner]`` paths resolve against the working directory."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: invalid TOML: {exc}") from None
    return replace(parse_profile(data, label, None), text=text)


def _read_text(p: Path, shown: str) -> str:
    """The file's text; only a regular UTF-8 file of at most MAX_PROFILE_BYTES is read (a
    FIFO or a device such as /dev/zero would block or never end)."""
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"{shown}: profile file not found", hint=_shipped_hint(p)) from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read profile file: {exc}") from None
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ConfigError(f"{shown}: {what}, not a profile file", hint="give a .toml file")
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read profile file: {exc}") from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise ConfigError(
            f"{shown}: larger than {MAX_PROFILE_BYTES // 1024} KB: not a profile "
            "(a profile is a few KB of TOML)"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{shown}: not a text (UTF-8) TOML file (byte {exc.start} is 0x{raw[exc.start]:02x})"
        ) from None


def _shipped_hint(p: Path) -> str | None:
    """Point a missing ``NAME.toml`` at the shipped profile ``NAME`` (they are named without
    the file extension)."""
    if p.suffix == ".toml" and (shipped_profile_dir() / p.name).is_file():
        return f"the shipped profile '{p.stem}' is named without .toml: give {p.stem}"
    return None


def list_profiles() -> list[HardwareProfile]:
    """Every shipped profile, sorted by name."""
    return sorted((validate_profile_file(f) for f in _shipped_files()), key=lambda p: p.name)


def _alias_table() -> dict[str, Path]:
    table: dict[str, Path] = {}
    for f in _shipped_files():
        prof = validate_profile_file(f)
        table[prof.name] = f
        for a in prof.aliases:
            table.setdefault(a, f)
    return table


def load_profile(spec: str) -> HardwareProfile:
    """Resolve ``spec`` to a profile: an alias (``cpu``, ``mobile``, ...), a shipped profile
    name, or a path to a ``.toml`` file.

    Raises ConfigError listing the valid names when ``spec`` is none of these.
    """
    if spec.endswith(".toml") or "/" in spec or Path(spec).suffix:
        return validate_profile_file(spec)
    table = _alias_table()
    if spec in table:
        return validate_profile_file(table[spec])
    names = sorted(table)
    raise ConfigError(
        f"unknown profile '{spec}'{did_you_mean(spec, names)}; valid names: {', '.join(names)}",
        hint="or give a path to your own profile file, e.g. --target path/to/board.toml",
    )
