"""Where profile numbers come from: every shipped value cites a public document or is an
assumption with its reason, ``profiles show`` says which, no profile or calibration output
cites a local path, and ``profiles calibrate`` writes only where it is told."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeopt.cli import main
from edgeopt.profiles import (
    list_profiles,
    load_profile,
    shipped_profile_dir,
    validate_profile_file,
)

# A path on someone's disk: an absolute or home path (a "/" that does not continue a word, a
# domain or a "://"), a relative step up, or the notes folders and files of the developers.
_LOCAL_PATH = re.compile(
    r"(?<![\w.:/-])/\w|~/|\.\./|\bresearch/|\bshared/|\w\.md\b|\.rst\b", re.IGNORECASE
)


def _local_paths(text: str) -> list[str]:
    return [line for line in text.splitlines() if _LOCAL_PATH.search(line)]


def _cli(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_local_path_check_catches_what_it_must() -> None:
    for bad in (
        'R24 = "/work/shared/research/hardware.md §2.4"',
        "# Sources: research/hardware.md",
        'S1 = "../shared/notes.md"',
        'S1 = "~/notes/board.txt"',
        'S40 = "Documentation/arch/arm/stm32/stm32f746-overview.rst"',
    ):
        assert _local_paths(bad), bad
    for ok in (
        'S36 = "9to5Google, https://9to5google.com/2018/12/05/qualcomm-snapdragon-855-specs/"',
        'note = "2 x 4096 ops/cyc x 300 MHz; 0.6 GOP / 2.3 ms; 2 TOPS/W; int8/int16"',
        'S41 = "Lai et al., CMSIS-NN, arXiv:1801.06601"',
    ):
        assert not _local_paths(ok), ok


@pytest.mark.parametrize("path", sorted(shipped_profile_dir().glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_value_cites_a_public_document_or_is_a_stated_assumption(
    path: Path,
) -> None:
    p = validate_profile_file(path)
    assert p.provenance, p.name
    for key, s in p.provenance.items():
        if s.kind == "assumption":
            assert s.note and len(s.note.split()) >= 3, f"{p.name}: {key}: assumption without why"
            continue
        assert s.kind != "unstated", f"{p.name}: {key}: a bare number"
        assert s.src, f"{p.name}: {key} ({s.kind}) names no document"
        for k in s.src.split(","):
            doc = p.sources[k.strip()]
            assert len(doc.split()) >= 3, f"{p.name}: [sources] {k}: {doc!r} is not a citation"
    assert p.without_source == [], p.without_source
    # the whole file, comments included
    assert _local_paths(path.read_text()) == [], path.name
    for doc in p.sources.values():
        assert not _local_paths(doc), doc


def test_profiles_show_gives_each_assumption_its_reason() -> None:
    r = _cli("profiles", "show", "mobile")
    assert r.exit_code == 0, r.output
    assert "without a source" not in r.output
    p = load_profile("mobile")
    lines = [line.strip() for line in r.output.splitlines()]
    for key in p.assumptions:
        reason = p.provenance[key].note
        (line,) = [x for x in lines if x.startswith(f"{key} = ")]
        assert line.endswith(f"assumption: {reason}"), line
    assert f"{len(p.assumptions)} assumptions" in r.output
    assert "[datasheet, S37]" in r.output  # a sourced value shows its document
    for q in list_profiles():
        out = _cli("profiles", "show", q.name).output
        assert "without a source" not in out, q.name
        # the one path shown is the file's own ("file: ..."), never a cited one
        cited = [x for x in out.splitlines() if not x.startswith("  file: ")]
        assert not _local_paths("\n".join(cited)), q.name


def test_profiles_show_lists_bare_numbers_as_without_a_source(tmp_path: Path) -> None:
    text = (Path(__file__).parent / "data" / "profiles" / "arith.toml").read_text()
    path = tmp_path / "mine.toml"
    path.write_text(text)
    r = _cli("profiles", "show", path)
    assert r.exit_code == 0, r.output
    assert "without a source (" in r.output
    assert "units.cpu.bandwidth_gbs = 10" in r.output
    assert "runtime.invoke_overhead_us = 10  assumption: (no reason given)" in r.output


# -- profiles calibrate -----------------------------------------------------------------------


def _calibrate(*args: str) -> object:
    """``profiles calibrate``, quick: one round, no check on example models."""
    return _cli("profiles", "calibrate", "--no-check", "--rounds", "1", *args)


def test_calibrate_without_out_writes_nothing_and_says_where_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _calibrate()
    assert result.exit_code == 2, result.output
    assert "--out" in result.stderr and "Traceback" not in result.stderr
    assert "Running micro-benchmarks" not in result.output  # refused before any work
    assert list(tmp_path.iterdir()) == []


def test_calibrate_refuses_to_overwrite_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "host.toml"
    out.write_text("mine\n")
    result = _calibrate("--out", str(out))
    assert result.exit_code == 2, result.output
    assert f"{out} already exists" in result.stderr and "--force" in result.stderr
    assert "Running micro-benchmarks" not in result.output
    assert out.read_text() == "mine\n"
    result = _calibrate("--out", str(out), "--force")
    assert result.exit_code == 0, result.output
    assert f"Wrote calibrated profile to {out}" in result.output
    p = validate_profile_file(out)
    assert p.measured and p.calibrated and p.without_source == []
    assert _local_paths(out.read_text()) == []  # not even the --out it was given
    assert p.calibration is not None
    assert p.calibration.command == "edgeopt profiles calibrate --out host.toml"


def test_calibrated_host_profile_cites_no_local_path(tmp_path: Path) -> None:
    from edgeopt.measure.calibrate import CalibrationResult, render_host_toml

    eff = {"dense_conv": 1.0, "pointwise_conv": 0.9, "depthwise_conv": 0.4, "gemm": 0.3}
    r = CalibrationResult(
        peak_gops={"fp32": 110.0, "int8": 300.0},
        efficiency={"fp32": {**eff, "quantize": 0.03}, "int8": eff},
        bandwidth_gbs=40.0,
        kernel_overhead_us=0.8,
        invoke_overhead_us=5.0,
        machine="Test CPU, 2 logical cores",
    )
    text = render_host_toml(load_profile("cpu"), r, "edgeopt profiles calibrate --out h.toml")
    assert _local_paths(text) == []
    path = tmp_path / "h.toml"
    path.write_text(text)
    p = validate_profile_file(path)
    assert p.without_source == []
    assert all(p.provenance[k].note for k in p.assumptions)
