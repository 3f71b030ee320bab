"""``provision worker``: the scheduler loop with a line per transition and a summary (issue 18 item 4).

Exit codes: 0 when the worker did its job, whatever the attempts' outcomes; 1 when it could not
(database unreachable, misconfiguration, a ``TickReport.fatal`` such as rejected platform
credentials), raised as ``ProvisionError`` for ``engine.cli.main`` to print.

``--metrics-port`` (or ``PROVISION_WORKER_METRICS_PORT``) serves ``/metrics``, ``/healthz`` and
``/readyz`` from the worker process (``engine.web.worker_metrics``, plugged in by ``engine.main``:
the CLI does not import the web layer).
"""
from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

from engine.cli.options import host_name, whole_number
from engine.cli.output import to_json
from engine.cli.reporting import WorkerReporter
from engine.config import engine_settings_from_env, worker_metrics_settings_from_env
from engine.errors import ProvisionError
from engine.signals import stop_on_signals


class MetricsListener(Protocol):
    """The worker's metrics listener as the CLI sees it (``engine.web.worker_metrics``)."""

    @property
    def observer(self) -> Any:
        """The engine's observer (the Prometheus collectors)."""
        ...

    def start(self, engine: Any) -> str:
        """Serve in a thread; the base URL once listening."""
        ...

    def stop(self) -> None:
        """Stop serving."""
        ...


def add_metrics_options(parser: argparse.ArgumentParser) -> None:
    """``--metrics-port``, ``--metrics-host`` and ``--metrics-allow-remote`` of ``provision worker``."""
    port = whole_number("--metrics-port", 0, 65535, " (0 = any free port)")
    parser.add_argument("--metrics-port", type=port, metavar="PORT",
                        help="serve /metrics, /healthz and /readyz on this port (the `metrics` extra; "
                             "default PROVISION_WORKER_METRICS_PORT, else none)")
    parser.add_argument("--metrics-host", type=host_name, default="127.0.0.1", metavar="HOST",
                        help="address of that listener (default 127.0.0.1; it has no login)")
    parser.add_argument("--metrics-allow-remote", action="store_true",
                        help="allow a non-loopback --metrics-host (only on a trusted network)")


def metrics_listener(args: argparse.Namespace) -> MetricsListener | None:
    """The listener asked for by ``--metrics-port`` or the environment, not yet started; else None."""
    port = args.metrics_port if args.metrics_port is not None else worker_metrics_settings_from_env().port
    if port is None:
        return None
    factory: Callable[..., MetricsListener] | None = getattr(args, "worker_metrics", None)
    if factory is None:
        raise ProvisionError("--metrics-port needs the metrics listener, which this entry point lacks",
                             hint="Run the `provision` program (engine.main:main), which plugs it in.")
    listener: MetricsListener = factory(args.metrics_host, port, allow_remote=args.metrics_allow_remote)
    return listener


def run_worker(args: argparse.Namespace, open_engine: Callable[..., Any], out: Callable[[str], None]) -> int:
    """Run the scheduler loop until SIGINT/SIGTERM (``--once``: until nothing is due now).

    One line per transition on stdout (``engine.cli.reporting``; ``--quiet`` none, ``--log-format
    json`` JSON lines), a summary on stderr at the end. Exit 0 when the worker did its job,
    whatever the attempts' outcomes; 1 when it could not (database unreachable, a fatal report).
    """
    reporter = WorkerReporter(sys.stdout, log_format=args.log_format, quiet=args.quiet)
    listener = metrics_listener(args)  # checked (host, extra) before the database is opened
    observer = {"observer": listener.observer} if listener is not None else {}
    engine = open_engine(args, settings=engine_settings_from_env(concurrency=args.concurrency), **observer)
    stop = threading.Event()
    fatal: list[str] = []

    def _stop() -> None:
        stop.set()
        engine.wake()  # cut the idle wait short so shutdown is prompt

    def on_tick(report: Any) -> None:
        reporter(report)
        if report.fatal:
            fatal.append(report.fatal)

    if not args.once:
        from engine.cli.prune import start_retention  # noqa: PLC0415

        start_retention(args.db, stop)  # PROVISION_HISTORY_RETENTION_DAYS: hourly, from a thread
    if not args.quiet:
        print(f"worker {engine.worker_id} started (concurrency {args.concurrency}"
              f"{', once' if args.once else ''}); Ctrl-C or SIGTERM stops it", file=sys.stderr, flush=True)
    try:
        if listener is not None:
            url = listener.start(engine)
            print(f"metrics on {url}/metrics (health: {url}/healthz, {url}/readyz)", file=sys.stderr,
                  flush=True)
        with stop_on_signals(_stop, doing="finishing the steps in flight"):
            engine.run(stop, once=args.once, on_tick=on_tick)
    finally:
        if listener is not None:
            listener.stop()
        engine.close()
    stopped = ", stopped by signal" if stop.is_set() else ""
    print(reporter.summary_line() + stopped, file=sys.stderr, flush=True)
    if args.json:
        out(to_json(reporter.summary()))
    if fatal:
        raise ProvisionError(f"the worker stopped: {fatal[0]}")
    if engine.parking.parked:  # a platform-wide error: nothing was failed, but the setup needs a fix
        raise ProvisionError(engine.parking.reason or "the queue is parked")
    return 0
