"""Child processes that stop with the command: the workers of ``--jobs`` and the ranks of ``--nproc``.

A terminal's Ctrl-C sends SIGINT to every process of the foreground group. The command alone acts
on it: its children are born ignoring SIGINT (:meth:`Children.start`) and are stopped by the command
on its way out — SIGTERM, then SIGKILL after :data:`GRACE_S` — whatever ends it (:class:`Children`
is a context manager). A child turns SIGTERM into :class:`Stopped`, which unwinds it, stopping its
own children, to a quiet exit; on Linux a child also gets SIGTERM if its parent dies first.

In the command, :func:`stop_on_signals` makes the first SIGINT or SIGTERM raise :class:`Stopped`
and ignores the later ones, so that the cleanup it unwinds through always finishes: a second Ctrl-C
neither hangs nor prints a traceback.

A child talks to its parent through a pipe: it receives what the parent sends (a run to train) and
sends messages back (an epoch's metrics, a record); :meth:`Children.messages` hands them over as
they come, and raises if a child fails (its exception, with the child's traceback as its cause).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any

GRACE_S = 5.0  # how long a child may take to stop after SIGTERM before it is killed
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


class Stopped(BaseException):
    """SIGINT or SIGTERM reached the process; like KeyboardInterrupt, not an error of the code."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class ChildFailed(RuntimeError):
    """A child process ended without finishing its work."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a child process (its ``__cause__``)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    for each in STOP_SIGNALS:  # later signals must not interrupt the cleanup this one starts
        signal.signal(each, signal.SIG_IGN)
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Stopped` in the block, once; the handlers are put back
    after it unless one was raised (the process is then ending, and keeps ignoring both)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {each: signal.signal(each, _raise_stopped) for each in STOP_SIGNALS}
    try:
        yield
    finally:
        if all(signal.getsignal(each) is _raise_stopped for each in STOP_SIGNALS):
            for each, handler in previous.items():
                signal.signal(each, handler if handler is not None else signal.SIG_DFL)


@dataclass(frozen=True)
class _Failure:
    """What a child sends when its work raised: the exception (None if it does not pickle)."""

    error: BaseException | None
    description: str
    traceback: str


def _stop_with_parent(parent: int) -> None:
    """SIGTERM when the parent dies (Linux), and now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise Stopped(signal.SIGTERM)


def _entry(
    work: Callable[..., None], connection: Connection, parent: int, args: tuple[Any, ...]
) -> None:
    """A child's life: SIGTERM raises Stopped, SIGINT stays ignored; ``work(connection, *args)``.

    It ends with ``os._exit``: the interpreter's teardown takes seconds with torch loaded, and
    nothing is left to clean up — the child's own children are stopped by then, it writes no file.
    """
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = 0
    try:
        _stop_with_parent(parent)
        work(connection, *args)
    except Stopped as stopped:
        code = stopped.exit_code
    except Exception as error:
        _send_failure(connection, error)
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    os._exit(code)


def _send_failure(connection: Connection, error: Exception) -> None:
    text = "".join(traceback.format_exception(error))
    description = f"{type(error).__name__}: {error}"
    with contextlib.suppress(Exception):
        connection.send(_Failure(error, description, text))
        return
    with contextlib.suppress(Exception):  # the exception does not pickle: its text alone
        connection.send(_Failure(None, description, text))


@contextlib.contextmanager
def _born_ignoring_sigint() -> Iterator[None]:
    """Processes started in the block inherit SIGINT ignored (a handler would not survive exec);
    a SIGINT to this process meanwhile is held back (blocked), not lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler if handler is not None else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class Child:
    """One child process and the parent's end of its pipe."""

    def __init__(self, process: multiprocessing.process.BaseProcess, connection: Connection):
        self.process, self.connection = process, connection
        self.open = True  # the pipe may still hold messages

    @property
    def name(self) -> str:
        return str(self.process.name)

    def send(self, message: Any) -> None:
        self.connection.send(message)

    def _next(self) -> tuple[bool, Any]:
        """(True, message) if one is waiting; (False, None) once the pipe is closed and empty."""
        try:
            return True, self.connection.recv()
        except (EOFError, OSError):
            self.open = False
            return False, None

    def check_exit(self) -> None:
        """Raise unless the process returned normally (call once it has exited)."""
        self.process.join()
        code = self.process.exitcode
        for signum in STOP_SIGNALS:  # stopped from outside: the command is being stopped too
            if code in (-signum, 128 + signum):
                raise Stopped(signum)
        if code != 0:
            raise ChildFailed(f"{self.name} exited with code {code} before finishing its work")


class Children:
    """Child processes that are all stopped, and waited for, when the block ends by an exception.

    Example:
        with Children() as children:
            children.start(work, arg)
            for child, message in children.messages():
                ...
    """

    def __init__(self, name: str = "worker") -> None:
        self.name = name
        self.children: list[Child] = []
        self.context = multiprocessing.get_context("spawn")

    def __enter__(self) -> Children:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: Any) -> None:
        if kind is None:
            for child in self.children:
                child.process.join(GRACE_S)
        self.stop()

    def start(self, work: Callable[..., None], *args: Any) -> Child:
        """Start ``work(connection, *args)`` in a new process (spawned: a fresh interpreter)."""
        mine, theirs = self.context.Pipe(duplex=True)
        process = self.context.Process(
            target=_entry,
            args=(work, theirs, os.getpid(), args),
            name=f"{self.name} {len(self.children)}",
        )
        child = Child(process, mine)
        self.children.append(child)
        with _born_ignoring_sigint():
            process.start()
        theirs.close()  # the child's end: the pipe reads EOF once the child has exited
        return child

    def messages(self) -> Iterator[tuple[Child, Any]]:
        """Every child's messages as they come, until all have exited.

        Raises:
            the exception a child's work raised (its traceback as the cause); ChildFailed for a
            child that exited otherwise; Stopped if one was stopped by SIGINT or SIGTERM.
        """
        running = list(self.children)
        while running:
            ready = wait([child.connection for child in running if child.open])
            for child in [c for c in running if c.connection in ready]:
                received, message = child._next()
                if isinstance(message, _Failure):
                    error = message.error or ChildFailed(f"{child.name}: {message.description}")
                    raise error from RemoteTraceback(message.traceback)
                if received:
                    yield child, message
                    continue
                child.check_exit()
                running.remove(child)

    def stop(self) -> None:
        """SIGTERM to every child still running, SIGKILL to those left after GRACE_S; wait for all."""
        alive = [child.process for child in self.children if child.process.is_alive()]
        for process in alive:
            with contextlib.suppress(OSError):
                process.terminate()
        deadline = time.monotonic() + GRACE_S
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in alive:
            if process.is_alive():
                with contextlib.suppress(OSError):
                    process.kill()
                process.join()

    def drain(self) -> Iterator[tuple[Child, Any]]:
        """The messages still in the pipes of stopped children (their last whole ones)."""
        for child in self.children:
            while child.open and child.connection.poll(0):
                received, message = child._next()
                if received and not isinstance(message, _Failure):
                    yield child, message
