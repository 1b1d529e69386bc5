"""Child processes that stop with the command (``superloss.bench.processes``), in isolation.

The command line's own behaviour under Ctrl-C and SIGTERM is tested end to end in test_signals.py.
"""

from __future__ import annotations

import os
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from superloss.bench import processes
from superloss.bench.processes import ChildFailed, Children, RemoteTraceback, Stopped


@pytest.fixture(autouse=True)
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Spawned children unpickle the work functions by module name: make this file importable.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[__name__.count(".")]))


def report_signals(connection: Connection) -> None:
    """Sends how the child handles SIGINT and SIGTERM, then waits to be stopped."""
    connection.send((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM) is not None))
    connection.send(os.getpid())
    time.sleep(60)


def deaf(connection: Connection) -> None:
    """Ignores SIGTERM: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    connection.send("ready")
    time.sleep(60)


def fail(connection: Connection, text: str) -> None:
    raise KeyError(text)


def test_children_are_born_ignoring_sigint_and_stop_at_sigterm() -> None:
    with Children() as children:
        child = children.start(report_signals)
        messages = children.messages()
        _, (on_sigint, handles_sigterm) = next(messages)
        assert on_sigint == signal.SIG_IGN and handles_sigterm
        _, pid = next(messages)
        os.kill(pid, signal.SIGINT)  # a terminal's Ctrl-C reaches it too: nothing happens
        time.sleep(0.5)
        assert child.process.is_alive()
        started = time.monotonic()
        children.stop()
        assert time.monotonic() - started < processes.GRACE_S
        assert child.process.exitcode == 128 + signal.SIGTERM  # its own quiet exit


def test_a_child_deaf_to_sigterm_is_killed_after_the_grace_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(processes, "GRACE_S", 0.5)
    with Children() as children:
        child = children.start(deaf)
        next(children.messages())
        children.stop()
        assert child.process.exitcode == -signal.SIGKILL


@pytest.mark.parametrize(
    ("signum", "raised"), [(signal.SIGTERM, Stopped), (signal.SIGKILL, ChildFailed)]
)
def test_a_child_ended_from_outside_ends_the_wait(signum: int, raised: type[BaseException]) -> None:
    with pytest.raises(raised), Children() as children:
        children.start(report_signals)
        for _, message in children.messages():
            if isinstance(message, int):
                os.kill(message, signum)


def test_a_failing_child_raises_its_exception_with_its_traceback() -> None:
    with pytest.raises(KeyError, match="lost") as raised, Children() as children:
        children.start(fail, "lost")
        list(children.messages())
    assert isinstance(raised.value.__cause__, RemoteTraceback)
    assert "raise KeyError(text)" in str(raised.value.__cause__)


def test_the_command_puts_the_signal_handlers_back(tmp_path: Path) -> None:
    from superloss.bench.cli import main

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(["bench", "classification", "--out", str(tmp_path / "x"), "--jobs", "0"]) == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
