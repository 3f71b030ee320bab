"""The worker's own small listener: ``/metrics``, ``/healthz`` and ``/readyz`` (issue 18 must-have 6).

``provision worker --metrics-port PORT`` (or ``PROVISION_WORKER_METRICS_PORT``) starts it beside the
scheduler loop, in a thread: waitress with 2 threads, 50 connections and a 10-second idle timeout
(a scraper cannot hold more). It serves only those three paths, GET or HEAD.

It is unauthenticated: the metrics carry counts per state, outcome and role (no customer, id or
secret), but they describe the business. So it binds 127.0.0.1 by default, and a non-loopback
``--metrics-host`` is refused unless ``--metrics-allow-remote`` says the network in between is
trusted (a scraper on a private network, or a proxy that authenticates).

Both ``prometheus-client`` and ``waitress`` come with the ``metrics`` extra; without them the
worker stops before it starts, with an error naming that extra.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from werkzeug.wrappers import Request, Response

from engine.config import ServeSettings
from engine.errors import InvalidInputError, ProvisionError
from engine.web.console_auth import is_loopback
from engine.web.health import ReadinessProbe, database_probe, health_response
from engine.web.metrics import CONTENT_TYPE, INSTALL_HINT, Metrics
from engine.web.wsgi_server import run_server

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from engine.core.facade import Engine

log = logging.getLogger(__name__)

#: A scraper and a health checker at once, and a few stragglers: no more is needed.
LISTENER_SETTINGS = ServeSettings(threads=2, connection_limit=50, idle_timeout_s=10.0)


def check_metrics_host(host: str, *, allow_remote: bool) -> None:
    """Refuse a non-loopback ``host`` unless ``allow_remote`` (``InvalidInputError`` naming the flag)."""
    if not is_loopback(host) and not allow_remote:
        raise InvalidInputError(
            "--metrics-host", f"{host!r} is not a loopback address and the metrics listener has no login",
            hint="Bind 127.0.0.1 (the default), or add --metrics-allow-remote when the network between "
                 "the worker and the scraper is trusted.")


class WorkerMetricsApp:
    """The WSGI app: ``/metrics`` from ``metrics``, ``/healthz`` and ``/readyz`` from ``probe``."""

    def __init__(self, metrics: Metrics, probe: ReadinessProbe) -> None:
        self.metrics = metrics
        self.probe = probe

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request."""
        request = Request(environ)
        if request.method not in ("GET", "HEAD"):
            response = Response("method not allowed\n", status=405, headers={"Allow": "GET, HEAD"})
        elif (health := health_response(request.path, self.probe)) is not None:
            response = health
        elif request.path == "/metrics":
            response = Response(self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})
        else:
            response = Response("not found: this listener serves /metrics, /healthz, /readyz\n", status=404)
        response.headers["Cache-Control"] = "no-store"
        return response(environ, start_response)


class WorkerMetricsListener:
    """A worker's metrics listener: build it (checks the host and the extra), then ``start(engine)``."""

    def __init__(self, host: str, port: int, *, allow_remote: bool = False,
                 metrics: Metrics | None = None) -> None:
        check_metrics_host(host, allow_remote=allow_remote)
        try:
            import waitress  # noqa: F401, PLC0415 - the `metrics` extra brings it
        except ImportError:
            raise ProvisionError("--metrics-port needs waitress and prometheus-client (the `metrics` extra)",
                                 hint=INSTALL_HINT) from None
        self.host, self.port = host, port
        # Metrics() raises naming the `metrics` extra when prometheus-client is missing.
        self.metrics = metrics if metrics is not None else Metrics()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def observer(self) -> Metrics:
        """What the engine reports its steps, callbacks and deliveries to."""
        return self.metrics

    def start(self, engine: Engine) -> str:
        """Serve in a daemon thread; returns the base URL once it listens (raises if it cannot)."""
        self.metrics.watch(engine)
        app = WorkerMetricsApp(self.metrics, database_probe(engine))
        ready = threading.Event()
        bound: list[int] = []
        failed: list[BaseException] = []

        def listening(port: int) -> None:
            bound.append(port)
            ready.set()

        def serve() -> None:
            try:
                run_server(app, self.host, self.port, settings=LISTENER_SETTINGS, ready=listening,
                           stop=self._stop)
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                failed.append(exc)
                ready.set()

        self._thread = threading.Thread(target=serve, name="provision-metrics", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            raise ProvisionError(f"the metrics listener cannot listen on {self.host}:{self.port} "
                                 f"({type(failed[0]).__name__}: {failed[0]})",
                                 hint="Pick a free --metrics-port (or PROVISION_WORKER_METRICS_PORT).")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{bound[0]}"

    def stop(self) -> None:
        """Stop serving (waits a few seconds for requests in flight)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

