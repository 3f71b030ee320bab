"""The production WSGI server of ``provision serve`` (and ``provision console``): waitress.

Why waitress: it is pure Python (Linux, macOS and Windows alike, no compiler), serves WSGI from a
fixed thread pool (bounded concurrency: ``threads``), reads requests in one asyncore loop before a
thread is involved (a slow or half-open client costs a socket, never a thread), closes idle
connections (``channel_timeout``) and stops accepting at ``connection_limit``. gunicorn would
add worker processes but runs on Unix only; werkzeug's development server starts one thread per
connection and has no idle timeout (issue 16: 400 half-open connections held 402 threads).

Waitress is the ``serve`` extra (``pip install 'element-provisioner[serve]'``); without it the
command stops with that hint rather than fall back to the development server.

Scale-out: waitress is threaded, one process per core is the way to use more cores. Put K
``provision serve`` processes behind a load balancer, or set ``PROVISION_SERVE_REUSEPORT=true``
and start K of them on the same port: the kernel (``SO_REUSEPORT``, Linux and BSD; only the same
user may join) spreads the connections over them.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.config import ServeSettings
from engine.errors import ProvisionError
from engine.web.queue_warnings import QueueWarnings

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'element-provisioner[serve]' (or: pip install waitress)"
LOOP_TIMEOUT_S = 0.2  # how soon the loop sees a stop request
MAX_HEADER_BYTES = 64 * 1024  # request line plus headers; a callback needs far less
THREADS_START_S = 5.0  # how long to wait for the threads to be idle before serving anyway


def _listener(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A bound, listening TCP socket; ``SO_REUSEPORT`` lets K processes share ``port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise ProvisionError("PROVISION_SERVE_REUSEPORT: this platform has no SO_REUSEPORT",
                                     hint="Unset it and run one process per port behind a load balancer.")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return sock


def _await_idle_threads(dispatcher: Any, timeout_s: float = THREADS_START_S) -> None:
    """Return once every waitress thread is waiting for work, or after ``timeout_s``.

    Waitress counts a thread as active from its start until it first waits for a task, so a request
    queued in between is warned about as though every thread were busy: on a loaded machine the
    first request after start logged "Task queue depth is 1" (a CI run caught it). Saying ready only
    once the threads wait keeps that warning for real saturation. Nothing signals the moment, so
    this polls waitress's ``active_count``; it takes microseconds unless the machine is starved.
    """
    deadline = time.monotonic() + timeout_s
    while dispatcher.active_count > 0 and time.monotonic() < deadline:
        time.sleep(0.001)


def run_server(app: WSGIApplication, host: str, port: int, *, settings: ServeSettings,
               ready: Callable[[int], None], stop: threading.Event,
               queue_warnings: QueueWarnings | None = None) -> None:
    """Serve ``app`` on ``host:port`` under waitress until ``stop`` is set.

    ``ready`` gets the bound port once connections are accepted. ``queue_warnings`` takes
    waitress's warnings about queued requests (default: one per 10 s to waitress's logger, with a
    count). Raises ``ProvisionError`` naming the ``serve`` extra when waitress is not installed.
    """
    try:
        from waitress import wasyncore  # noqa: PLC0415 - optional: the `serve` extra
        from waitress.server import create_server  # noqa: PLC0415
    except ImportError:
        raise ProvisionError("`provision serve` needs waitress (the `serve` extra), which is not installed",
                             hint=INSTALL_HINT) from None
    sock = _listener(host, port, settings.reuse_port)
    options: dict[str, Any] = {
        "threads": settings.threads, "connection_limit": settings.connection_limit,
        "channel_timeout": settings.idle_timeout_s,
        # Idle connections are looked for every cleanup_interval; keep it below the timeout.
        "cleanup_interval": max(1.0, min(30.0, settings.idle_timeout_s / 2)),
        "max_request_header_size": MAX_HEADER_BYTES, "max_request_body_size": 16 * 1024,
        "expose_tracebacks": False, "ident": None, "asyncore_use_poll": True,
    }
    server: Any = create_server(app, sockets=[sock], **options)
    # Waitress warns through its dispatcher's ``queue_logger`` for every request it queues; this
    # server's own stand-in lets one line through per 10 s (engine.web.queue_warnings).
    warnings = queue_warnings or QueueWarnings(settings.threads)
    server.task_dispatcher.queue_logger = warnings
    _await_idle_threads(server.task_dispatcher)
    ready(sock.getsockname()[1])
    try:
        # Our own loop (waitress's run() has no stop): one poll at a time until asked to stop.
        while not stop.is_set():
            wasyncore.loop(timeout=LOOP_TIMEOUT_S, map=server._map, use_poll=True, count=1)  # noqa: SLF001
    finally:
        server.task_dispatcher.shutdown(timeout=5)
        wasyncore.close_all(server._map, ignore_all=True)  # noqa: SLF001
        sock.close()
        warnings.flush()
