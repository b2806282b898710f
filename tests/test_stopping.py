"""``edgeopt.stopping`` with real signals sent to this process: what a first and a second
stop signal do inside and outside work that may finish, the grace timer, and handing the
handlers back."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from edgeopt.errors import ConfigError
from edgeopt.stopping import GRACE_ENV, SAME_REQUEST_S, Interrupted, Stopper, current


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # the handler runs in this thread at the next bytecode


def test_outside_finishing_work_a_stop_signal_interrupts_at_once() -> None:
    with Stopper(grace_s=5).installed() as stopper, pytest.raises(Interrupted) as info:
        _send(signal.SIGTERM)
    assert info.value.exit_code == 143 and stopper.exit_code == 143
    assert info.value.reason == "interrupted by SIGTERM"


def test_a_first_signal_lets_the_work_finish_and_a_second_aborts_it() -> None:
    seen: list[tuple[int, bool]] = []
    stopper = Stopper(grace_s=60)
    with (
        stopper.installed(),
        stopper.finishing(lambda s, first: seen.append((s, first))),
        stopper.abortable(),
    ):
        _send(signal.SIGTERM)  # first: no exception, the work goes on
        assert stopper.requested and stopper.label == "SIGTERM"
        _send(signal.SIGTERM)  # within a second: the same request
        time.sleep(SAME_REQUEST_S)
        with pytest.raises(Interrupted, match="aborted by a second SIGTERM"):
            _send(signal.SIGTERM)
    assert seen == [(signal.SIGTERM, True), (signal.SIGTERM, False)]


def test_two_ctrl_c_are_always_two() -> None:
    stopper = Stopper(grace_s=60)
    with stopper.installed(), stopper.finishing(), stopper.abortable():
        _send(signal.SIGINT)
        with pytest.raises(Interrupted, match="aborted by a second Ctrl-C"):
            _send(signal.SIGINT)
    assert stopper.exit_code == 130


def test_between_steps_a_second_signal_waits_for_the_next_step() -> None:
    """Outside ``abortable`` (recording a trial, say) nothing is raised: the loop sees
    ``requested`` and ends at its next step."""
    with Stopper(grace_s=60).installed() as stopper, stopper.finishing():
        _send(signal.SIGINT)
        _send(signal.SIGINT)
        assert stopper.requested


def test_the_grace_period_aborts_work_still_running() -> None:
    stopper = Stopper(grace_s=0.2)
    with (
        stopper.installed(),
        stopper.finishing(),
        stopper.abortable(),
        pytest.raises(Interrupted, match="still running 0.2s after SIGTERM"),
    ):
        _send(signal.SIGTERM)
        time.sleep(5)  # interrupted by the grace timer


def test_no_grace_period_aborts_at_once() -> None:
    stopper = Stopper(grace_s=0)
    with (
        stopper.installed(),
        stopper.finishing(),
        stopper.abortable(),
        pytest.raises(Interrupted, match="no grace period"),
    ):
        _send(signal.SIGHUP)


def test_a_timer_left_running_does_not_fire_after_the_work_ended() -> None:
    with Stopper(grace_s=0.2).installed() as stopper:
        with stopper.finishing():
            _send(signal.SIGTERM)
        time.sleep(0.4)  # no Interrupted here
        assert stopper.exit_code == 143


def test_the_handlers_found_are_handed_back_and_current_follows() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    outer = current()
    with Stopper(grace_s=0.2).installed() as stopper:
        assert current() is stopper
        with stopper.finishing():
            _send(signal.SIGTERM)  # takes SIGALRM for the grace timer
    assert current() is outer
    assert {s: signal.getsignal(s) for s in before} == before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_an_ignored_sighup_stays_ignored() -> None:
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with Stopper(grace_s=1).installed() as stopper:
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            _send(signal.SIGHUP)
            assert not stopper.requested
    finally:
        signal.signal(signal.SIGHUP, old)


@pytest.mark.parametrize("text", ["soon", "-1", "nan"])
def test_a_malformed_grace_period_is_a_config_error(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(GRACE_ENV, text)
    with pytest.raises(ConfigError, match="is not a number of seconds"):
        Stopper()


def test_a_stop_signal_inside_an_import_ends_the_command_as_a_stop() -> None:
    """A SIGTERM that lands while onnxruntime's C extension initialises reaches the CLI
    as ImportError('initialization failed') raised from the signal's exception; that is a
    stop (exit 143), not a crash (exit 1 with a traceback)."""
    from click.testing import CliRunner

    from edgeopt.cli import main

    @main.command("raise-in-import")
    def raise_in_import() -> None:
        try:
            raise Interrupted(signal.SIGTERM, "interrupted by SIGTERM")
        except Interrupted as exc:
            raise ImportError("initialization failed") from exc

    try:
        res = CliRunner().invoke(main, ["raise-in-import"])
    finally:
        main.commands.pop("raise-in-import")
    assert res.exit_code == 143, res.output
    assert "Terminated (SIGTERM)." in res.output
    assert "Traceback" not in res.output


def _report_sigint_disposition(conn: Any) -> None:
    import signal as sig

    conn.send(sig.getsignal(sig.SIGINT) == sig.SIG_IGN)
    conn.close()


def test_children_started_in_the_block_ignore_a_ctrl_c_from_their_first_instruction() -> None:
    """A Ctrl-C reaches the whole process group; the pruning pre-flight's spawned child got
    it while unpickling its arguments and printed a traceback (probe D21). Started inside
    ``stop_signals_ignored_by_children`` it ignores it from the start; this process keeps
    its own handler."""
    import multiprocessing

    from edgeopt.lifeline import stop_signals_ignored_by_children

    ctx = multiprocessing.get_context("spawn")
    mine = signal.getsignal(signal.SIGINT)
    results = []
    for guarded in (False, True):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_report_sigint_disposition, args=(send,))
        if guarded:
            with stop_signals_ignored_by_children():
                proc.start()
        else:
            proc.start()
        send.close()
        results.append(recv.recv())
        proc.join(30)
    assert results == [False, True]
    assert signal.getsignal(signal.SIGINT) is mine
