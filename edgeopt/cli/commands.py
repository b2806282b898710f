"""Registers each subcommand module on the ``main`` group (one module per command)."""

from __future__ import annotations

import importlib

import click

# Each module defines one click command or group named like the module's command.
_COMMANDS = {
    "bench": "edgeopt.cli.bench_cmd:bench",
    "profiles": "edgeopt.cli.profiles_cmd:profiles",
    "optimize": "edgeopt.cli.optimize_cmd:optimize",
    "report": "edgeopt.cli.report_cmd:report",
    "export": "edgeopt.cli.export_cmd:export",
    "check": "edgeopt.cli.check_cmd:check",
    "dashboard": "edgeopt.cli.dashboard_cmd:dashboard",
}


def register_commands(group: click.Group) -> None:
    """Add every command of ``_COMMANDS`` to ``group`` (the ``edgeopt`` group)."""
    for name, ref in _COMMANDS.items():
        module, attr = ref.split(":")
        try:
            group.add_command(getattr(importlib.import_module(module), attr), name)
        except ModuleNotFoundError as exc:  # a command module not written yet
            if exc.name != module:
                raise
