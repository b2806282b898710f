"""The synopsis under README's "## Commands" names every option of every command, as the
commands themselves define them (what ``--help`` prints), and no option they lack."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from edgeopt.cli import main

REPO = Path(__file__).resolve().parent.parent

FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def _synopsis() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Commands\n", 1)[1]
    return section.split("```\n", 2)[1].splitlines()


def _block(command: str) -> str:
    """The synopsis lines of ``edgeopt COMMAND`` (with its continuation lines), and the
    shared model and image options when it refers to them."""
    lines = _synopsis()
    out, inside = [], False
    for line in lines:
        if line.startswith("edgeopt "):
            inside = line.startswith(f"edgeopt {command} ")
        elif not line.startswith(" "):
            inside = False
        if inside:
            out.append(line)
    assert out, f"the synopsis has no line for edgeopt {command}"
    text = "\n".join(out)
    for shared in ("MODEL OPTIONS", "IMAGE OPTIONS"):
        if f"[{shared}]" in text:
            text += "\n" + _shared_options(lines, shared)
    return text


def _shared_options(lines: list[str], name: str) -> str:
    """The ``MODEL OPTIONS:`` lines (the loading options optimize, bench and check share), or
    the ``IMAGE OPTIONS ...:`` ones (how image files are read), with their continuations."""
    start = next(i for i, ln in enumerate(lines) if ln.startswith(name))
    end = start + 1
    while end < len(lines) and lines[end].startswith(" "):
        end += 1
    return "\n".join(lines[start:end])


def _flags(cmd: click.Command) -> set[str]:
    """Every long option of ``cmd`` but --help (both halves of --check/--no-check)."""
    out = set()
    for p in cmd.params:
        if isinstance(p, click.Option):
            out |= {o for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
    return out - {"--help"}


COMMANDS = {
    "optimize": main.commands["optimize"],
    "bench": main.commands["bench"],
    "check": main.commands["check"],
    "report": main.commands["report"],
    "export": main.commands["export"],
    "dashboard": main.commands["dashboard"],
    "profiles": main.commands["profiles"].commands["calibrate"],  # the one with options
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_synopsis_names_every_option_and_only_real_ones(name: str) -> None:
    cmd = COMMANDS[name]
    block = _block(name)
    real = _flags(cmd)
    if name == "profiles":  # calibrate's default --check is shown by its opposite
        real.discard("--check")
    shown = set(FLAG.findall(block))
    assert real - shown == set(), f"edgeopt {name}: options missing from the synopsis"
    assert shown - _flags(cmd) == set(), f"edgeopt {name}: not options of it"


def test_the_global_options_are_shown() -> None:
    first = _synopsis()[0]
    assert first.startswith("edgeopt [") and _flags(main) <= set(FLAG.findall(first))
