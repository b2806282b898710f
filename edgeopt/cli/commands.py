"""Registers each subcommand module on the ``main`` group (one module per command)."""

from __future__ import annotations

import importlib

from edgeopt.cli import main

# Each module defines one click command or group named like the module's command.
_COMMANDS = {
    "bench": "edgeopt.cli.bench_cmd:bench",
    "profiles": "edgeopt.cli.profiles_cmd:profiles",
    "optimize": "edgeopt.cli.optimize_cmd:optimize",
    "report": "edgeopt.cli.report_cmd:report",
    "export": "edgeopt.cli.report_cmd:export",
    "check": "edgeopt.cli.check_cmd:check",
    "dashboard": "edgeopt.cli.dashboard_cmd:dashboard",
}

for _name, _ref in _COMMANDS.items():
    _module, _attr = _ref.split(":")
    try:
        main.add_command(getattr(importlib.import_module(_module), _attr), _name)
    except ModuleNotFoundError as _exc:  # a command module not written yet
        if _exc.name != _module:
            raise
