"""Stopping on SIGINT/SIGTERM: the one signal helper of the worker (CLI) and ``serve`` (web).

It lives in a foundation module because ``engine.cli`` and ``engine.web`` may not import each other.
"""
from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

#: The signals that ask a long-running command to stop.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(on_stop: Callable[[], None], *, doing: str = "stopping") -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM call ``on_stop`` instead of ending the process.

    ``doing`` completes the INFO line logged on a signal ("received SIGTERM; <doing>"). The previous
    handlers come back when the block ends. Python only lets the main thread install handlers, so in
    any other thread (an embedder's, a test's) nothing is installed and ``on_stop`` is left to the
    caller's own stop event.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; %s", signal.Signals(signum).name, doing)
        on_stop()

    previous = {sig: signal.signal(sig, _handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
