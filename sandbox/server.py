"""Run the sandbox over real HTTP: :func:`start` (background thread) and :func:`serve_forever`."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from sandbox.app import SandboxApp
from sandbox.defaults import BASE_PATH, DEFAULT_HOST, DEFAULT_ORG_SECRET, DEFAULT_PORT, DEFAULT_USER_SECRET
from sandbox.faults import DelaySpec, FailSpec, Faults
from sandbox.platform_refresh import refresh_due
from sandbox.store import Store
from sandbox.web import Context, Secrets


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without the per-request access log line (the sandbox keeps its own log)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:  # noqa: D102
        pass


class Sandbox:
    """A running sandbox: its URLs, its request log and fault rules, and ``stop()``.

    Use as a context manager to stop it on exit.
    """

    def __init__(self, server: BaseWSGIServer, app: SandboxApp, host: str) -> None:
        self._server = server
        self.app = app
        self.host = host
        self.port: int = server.port
        # A wildcard bind is reachable on loopback; URLs handed out must be connectable.
        url_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.root_url = f"http://{url_host}:{self.port}"
        self.base_url = self.root_url + BASE_PATH
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"sandbox:{self.port}", daemon=True)
        self._stopped = False

    def _start(self) -> None:
        self._thread.start()

    @property
    def store(self) -> Store:
        """The sandbox state (for white-box assertions in tests)."""
        return self.app.ctx.store

    @property
    def faults(self) -> Faults:
        """The fault rules in force; see :meth:`set_faults`."""
        return self.app.ctx.faults

    def set_faults(self, delays: DelaySpec = None, fails: FailSpec = None) -> None:
        """Replace all fault rules (same forms as :func:`start`)."""
        self.faults.replace(delays, fails)

    def requests(self) -> list[dict[str, Any]]:
        """Every request served so far (method, path, endpoint, query, body, status, request_id)."""
        return self.store.requests()

    def clear_requests(self) -> None:
        """Empty the request log."""
        self.store.clear_requests()

    def platform_refresh(self) -> list[dict[str, Any]]:
        """Run the platform's due token refreshes now (as ``POST /_sandbox/platform-refresh``)."""
        return refresh_due(self.store)

    def refresh_presentations(self) -> list[tuple[str, str, float]]:
        """Every refresh token presented so far: (token, "client" | "platform", sandbox time)."""
        with self.store.lock:
            return list(self.store.refresh_presentations)

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self.app.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Sandbox {self.base_url}{' stopped' if self._stopped else ''}>"


def start(host: str = DEFAULT_HOST, port: int = 0, user_secret: str = DEFAULT_USER_SECRET,
          org_secret: str = DEFAULT_ORG_SECRET, delays: DelaySpec = None, fails: FailSpec = None,
          seed: int | None = None, now: Callable[[], float] | None = None, *,
          clock: Callable[[], float] | None = None, page_size: int = 200,
          auto_refresh: bool = False, filter_after_paging: bool = False) -> Sandbox:
    """Start a sandbox in a daemon thread and return it (``port=0`` picks a free port).

    ``delays``/``fails`` take CLI spec strings (``["create_instance=1.5"]``, ``["oauth_url=0.5:429"]``)
    or mappings (``{"create_instance": 1.5}``, ``{"oauth_url": {"rate": 1, "status": 429, "count": 2}}``);
    invalid ones raise ``ValueError``; a port that cannot be bound raises ``OSError``.  ``seed`` makes
    random failures reproducible; ``clock`` (or its older name ``now``) replaces the clock (epoch
    seconds, real time by default). ``page_size`` is GET /instances' default page size;
    ``auto_refresh`` runs the platform's due token refreshes before every request
    (``sandbox.platform_refresh``); ``filter_after_paging`` makes tag-filtered pages sparse
    (``sandbox.web.Context``).
    """
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    faults = Faults.build(delays, fails, seed=seed)
    app = SandboxApp(Context(Store(clock or now), Secrets(user_secret, org_secret), faults,
                             page_size=page_size, auto_refresh=auto_refresh,
                             filter_after_paging=filter_after_paging))
    # Bind ourselves: werkzeug answers a taken port with a message and sys.exit(1), which an embedding
    # program (or a test) should get as a plain OSError instead.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family)
    try:
        server = make_server(host, listener.getsockname()[1], app, threaded=True,
                             request_handler=_QuietHandler, fd=listener.fileno())
    finally:
        listener.close()  # werkzeug works on its own duplicate of the descriptor
    sandbox = Sandbox(server, app, host)
    sandbox._start()
    return sandbox


def serve_forever(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, user_secret: str = DEFAULT_USER_SECRET,
                  org_secret: str = DEFAULT_ORG_SECRET, delays: DelaySpec = None, fails: FailSpec = None,
                  seed: int | None = None, ready: Callable[[Sandbox], None] | None = None,
                  stop_event: threading.Event | None = None, *, page_size: int = 200,
                  auto_refresh: bool = False) -> None:
    """Run in the foreground until SIGINT/SIGTERM (or ``stop_event`` is set), then stop cleanly.

    ``ready`` is called once the socket is listening (the CLI prints its banner there).
    """
    stop = stop_event or threading.Event()
    sandbox = start(host, port, user_secret, org_secret, delays, fails, seed, page_size=page_size,
                    auto_refresh=auto_refresh)
    previous: dict[signal.Signals, Any] = {}
    signalled: list[int] = []

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        # Not stop.set(): the handler runs in this thread, which may hold the event's lock inside
        # stop.wait() below, and that lock is not re-entrant (a deadlock; engine/signals.py says more).
        signalled.append(signum)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _on_signal)
    try:
        if ready is not None:
            ready(sandbox)
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not signalled and not stop.wait(0.2):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sandbox.stop()
