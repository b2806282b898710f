"""Command line: thin click commands. Parse -> typed config -> one library call -> render.

Heavy imports (torch, onnxruntime, optuna) happen inside the commands so ``--help`` is fast.
This package is the one error boundary: EdgeoptError becomes ``Error: ...`` / ``Hint: ...``
on stderr with its exit code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import signal
import sys
import traceback
from typing import Any

import click

from edgeopt import __version__
from edgeopt.cli.commands import register_commands
from edgeopt.errors import EdgeoptError, environment_error


class _Group(click.Group):
    """Click group that turns library errors into one-line messages with exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        from edgeopt.stopping import Stopper

        try:
            # SIGTERM and SIGHUP end a command as Ctrl-C does (exit 128 + the signal);
            # ``optimize`` lets its running trial and its report finish first
            with Stopper().installed():
                return super().invoke(ctx)
        except EdgeoptError as exc:
            self._fail(ctx, exc)
        except KeyboardInterrupt as exc:  # edgeopt.stopping.Interrupted names its signal
            self._interrupted(exc)
        except Exception as exc:  # a full disk or read-only folder is the machine's fault
            cause = _interrupt_behind(exc)
            if cause is not None:  # a stop signal inside an import: ImportError wraps it
                self._interrupted(cause)
            err = environment_error(exc)
            if err is None:
                raise
            self._fail(ctx, err)

    @staticmethod
    def _interrupted(exc: KeyboardInterrupt) -> None:
        signum = getattr(exc, "signum", signal.SIGINT)
        name = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
        click.echo(f"{'Interrupted' if not name else 'Terminated'}{name}.", err=True)
        sys.exit(128 + signum)

    @staticmethod
    def _fail(ctx: click.Context, exc: EdgeoptError) -> None:
        if ctx.obj and ctx.obj.get("debug"):
            traceback.print_exc()
        click.echo(f"Error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"Hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)


def _interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or stop signal an exception was raised while handling, if any: a signal
    that lands while a C extension initialises (onnxruntime) surfaces as ImportError."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeopt")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Fit a trained PyTorch model to an edge device.

    Every number edgeopt prints is labelled 'measured' (on this host) or 'estimated'
    (from a hardware profile).
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


register_commands(main)
