"""``edgeopt dashboard``: a run's study in optuna-dashboard, objectives named on its axes."""

from __future__ import annotations

import signal
from typing import Any

import click


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port."
)
@click.option(
    "--allow-writes",
    is_flag=True,
    help="Let the dashboard's own page change the study (notes, attributes, deleting it). "
    "Off: the study is served read-only.",
)
def dashboard(run_dir: str, host: str, port: int, allow_writes: bool) -> None:
    """Serve RUN_DIR's study in optuna-dashboard until Ctrl-C.

    The study is read from where the run keeps it (its study.db, or the --storage it was
    started with), and its objective names (accuracy, latency_ms[TARGET], size_mb ...) label
    the dashboard's axes. Needs pip install 'edgeopt[dashboard]'. It is read-only unless
    --allow-writes, and answers only requests addressed to it (127.0.0.1, localhost or
    --host). Other machines can reach it only with --host 0.0.0.0, and the dashboard has no
    login: anyone who reaches it can read the study (and, with --allow-writes, change it).
    """
    from edgeopt.search.integrations.dashboard import open_dashboard, serving
    from edgeopt.search.integrations.dashboard_guard import is_loopback

    dash = open_dashboard(run_dir)
    with serving(dash, host, port, writes=allow_writes) as server:
        bound = server.server_address[1]  # the port the system gave for --port 0
        # Ctrl-C or a service manager's SIGTERM stops it, set before the URL is printed, even
        # when a script started it in the background (which starts it with SIGINT ignored)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _interrupt)
        try:
            click.echo(
                f"edgeopt dashboard: study {dash.study_name!r} in {dash.where}\n"
                f"  http://{host}:{bound}{dash.study_path()}  "
                f"({'writes allowed' if allow_writes else 'read-only'}; Ctrl-C to stop)",
                err=True,
            )
            if not is_loopback(host):
                click.echo(
                    f"warning: --host {host} serves the study, without any login, to whoever "
                    f"reaches this machine on port {bound}"
                    + (" (who may also change it: --allow-writes)" if allow_writes else ""),
                    err=True,
                )
            if not dash.named:
                click.echo(
                    "note: the study is read-only here, so the dashboard shows its objectives "
                    f"unnamed; in order they are {', '.join(dash.metric_names) or 'unknown'}",
                    err=True,
                )
            server.serve_forever()
        except KeyboardInterrupt:
            click.echo("dashboard stopped", err=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
