"""Stopping on SIGINT/SIGTERM: the one signal helper of the worker (CLI), ``serve`` and ``events --follow``.

It lives in a foundation module because ``engine.cli`` and ``engine.web`` may not import each other.

Why ``on_stop`` does not run in the signal handler: Python runs a handler in the main thread, between
two bytecodes of whatever that thread is doing. A handler that sets a ``threading.Event`` (or wakes
the worker, or logs) takes that object's lock, and if the main thread was inside the same object
at that instant (``Event.clear()`` at the top of every worker tick, ``Event.wait()`` in the server's
loop), it already holds that lock, which is not re-entrant: the handler waits for itself for ever,
and the process ignores every later SIGTERM until it is killed. That happened to a benchmark
worker (2026-12-01). So the Python handler does nothing; Python's C-level handler writes the
signal's number to a socket (``signal.set_wakeup_fd``, which takes no lock), and a thread of
ours reads it and calls ``on_stop`` like any other thread would, waiting its turn for the lock.
"""
from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

#: The signals that ask a long-running command to stop.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
#: How long leaving the block waits for the watcher thread (it is reading a socket we just closed).
WATCHER_JOIN_S = 5.0


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: nothing (see the module docstring); its C side writes the wakeup fd."""


def _watch(reader: socket.socket, on_stop: Callable[[], None], doing: str) -> None:
    """Call ``on_stop`` for every stop signal written to ``reader``, until the other end closes."""
    wanted = {int(sig) for sig in STOP_SIGNALS}
    while True:
        try:
            data = reader.recv(64)
        except OSError:  # closed under us while leaving the block
            return
        if not data:
            return
        for signum in data:
            if signum in wanted:
                log.info("received %s; %s", signal.Signals(signum).name, doing)
                on_stop()


@contextmanager
def stop_on_signals(on_stop: Callable[[], None], *, doing: str = "stopping") -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM call ``on_stop`` instead of ending the process.

    ``on_stop`` runs in a thread of its own (``provision-signals``), never inside the signal handler,
    so it may take locks the main thread holds (module docstring); it must be thread-safe, as setting
    an event is. ``doing`` completes the INFO line logged on a signal ("received SIGTERM; <doing>").
    The previous handlers and wakeup fd come back when the block ends. Python only lets the main
    thread install handlers, so in any other thread (an embedder's, a test's) nothing is installed
    and ``on_stop`` is left to the caller's own stop event.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)  # set_wakeup_fd requires it: the C handler must never block
    watcher = threading.Thread(target=_watch, args=(reader, on_stop, doing), name="provision-signals",
                               daemon=True)
    watcher.start()
    previous: dict[signal.Signals, Any] = {}
    previous_fd: int | None = None
    try:  # the setup too: what it did is undone, and the thread ends, whatever fails
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, _ignore)
        previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        yield
    finally:
        # Handlers first: a signal between the two steps then reaches the previous handler rather
        # than ours with no fd to report it.
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if previous_fd is not None:
            signal.set_wakeup_fd(previous_fd)
        writer.close()  # the watcher reads the end of the stream and returns
        watcher.join(WATCHER_JOIN_S)
        reader.close()
