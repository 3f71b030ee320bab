"""The per-call deadline while a server sends its status line and headers.

The transport bounds the body itself (it reads it chunk by chunk against the deadline). Before the
body, ``http.client`` reads the status line and the headers line by line, each ``recv`` bounded only
by the read timeout: a server that drips one byte just inside that timeout could hold a call for as
long as it likes (issue 15, finding 7). ``HeaderWatchdog`` closes that window: while a call waits for
its response head, its socket is registered with the call's deadline, and one watchdog thread shuts
the socket down once the deadline passes, which makes the blocked ``recv`` return at once.

``DeadlineAdapter`` is the ``requests`` adapter whose connections register themselves; the deadline
of the current call comes from the watchdog's thread-local (set by ``Transport.send``), so nothing is
global and two transports never share a watchdog.
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import urllib3.connection
import urllib3.connectionpool
from requests.adapters import HTTPAdapter

#: How often the watchdog looks at the registered calls when none is close to its deadline.
POLL_S = 0.25


class HeaderWatchdog:
    """Shuts down the socket of a call still waiting for its response head after its deadline."""

    def __init__(self) -> None:
        self.local = threading.local()  # ``deadline``: the monotonic deadline of this thread's call
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[float, socket.socket]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # When the thread looks next (monotonic): a call whose deadline is later needs no wake-up.
        # Calls' deadlines are seconds away and the thread looks every POLL_S, so most calls never
        # wake it: one wake-up per call cost a thread switch per platform call.
        self._next_look = 0.0
        self.expired = 0  # sockets shut down so far (for tests and logs)

    @contextlib.contextmanager
    def call(self, deadline: float) -> Iterator[None]:
        """The calls made in this block, in this thread, must have their head by ``deadline``."""
        previous = getattr(self.local, "deadline", None)
        self.local.deadline = deadline
        try:
            yield
        finally:
            self.local.deadline = previous

    @contextlib.contextmanager
    def watching(self, sock: socket.socket | None) -> Iterator[None]:
        """Watch ``sock`` against this thread's deadline while the block reads the response head."""
        deadline = getattr(self.local, "deadline", None)
        if sock is None or deadline is None:
            yield
            return
        key = id(sock)
        with self._lock:
            self._watched[key] = (deadline, sock)
            wake = deadline < self._next_look
            if self._thread is None or not self._thread.is_alive():
                self._next_look = 0.0  # the new thread looks at once
                self._thread = threading.Thread(target=self._run, name="provision-head-deadline",
                                                daemon=True)
                self._thread.start()
        if wake:
            self._wake.set()
        try:
            yield
        finally:
            with self._lock:
                self._watched.pop(key, None)

    def _run(self) -> None:
        while True:
            # Cleared before looking, so a wake-up set while this pass runs is not lost.
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                due = [(k, s) for k, (d, s) in self._watched.items() if d <= now]
                for key, _ in due:
                    del self._watched[key]
                nearest = min((d for d, _ in self._watched.values()), default=None)
                wait = POLL_S if nearest is None else max(0.0, min(POLL_S, nearest - now))
                self._next_look = now + wait
            for _, sock in due:
                self.expired += 1
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # the blocked recv returns; urllib3 drops it
            self._wake.wait(wait)


def _watched(base: type[Any], watchdog: HeaderWatchdog) -> type[Any]:
    """``base`` (an urllib3 connection class) whose ``getresponse`` runs under ``watchdog``."""

    def getresponse(self: Any) -> Any:
        with watchdog.watching(getattr(self, "sock", None)):
            return base.getresponse(self)

    return type(f"Watched{base.__name__}", (base,), {"getresponse": getresponse})


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections read their response head under ``watchdog``."""

    def __init__(self, watchdog: HeaderWatchdog, **kwargs: Any) -> None:
        self.watchdog = watchdog
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102 - HTTPAdapter's hook
        super().init_poolmanager(*args, **kwargs)
        http = type("WatchedHTTPConnectionPool", (urllib3.connectionpool.HTTPConnectionPool,),
                    {"ConnectionCls": _watched(urllib3.connection.HTTPConnection, self.watchdog)})
        https = type("WatchedHTTPSConnectionPool", (urllib3.connectionpool.HTTPSConnectionPool,),
                     {"ConnectionCls": _watched(urllib3.connection.HTTPSConnection, self.watchdog)})
        # Per pool manager (not the module-level table): only this adapter's pools are watched.
        self.poolmanager.pool_classes_by_scheme = {"http": http, "https": https}
