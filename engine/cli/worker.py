"""``provision worker``: the scheduler loop with a line per transition and a summary (issue 18 item 4).

Exit codes: 0 when the worker did its job, whatever the attempts' outcomes; 1 when it could not
(database unreachable, misconfiguration, a ``TickReport.fatal`` such as rejected platform
credentials), raised as ``ProvisionError`` for ``engine.cli.main`` to print.
"""
from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from typing import Any

from engine.cli.output import to_json
from engine.cli.reporting import WorkerReporter
from engine.config import engine_settings_from_env
from engine.errors import ProvisionError
from engine.signals import stop_on_signals


def run_worker(args: argparse.Namespace, open_engine: Callable[..., Any], out: Callable[[str], None]) -> int:
    """Run the scheduler loop until SIGINT/SIGTERM (``--once``: until nothing is due now).

    One line per transition on stdout (``engine.cli.reporting``; ``--quiet`` none, ``--log-format
    json`` JSON lines), a summary on stderr at the end. Exit 0 when the worker did its job,
    whatever the attempts' outcomes; 1 when it could not (database unreachable, a fatal report).
    """
    reporter = WorkerReporter(sys.stdout, log_format=args.log_format, quiet=args.quiet)
    engine = open_engine(args, settings=engine_settings_from_env(concurrency=args.concurrency))
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
        with stop_on_signals(_stop, doing="finishing the steps in flight"):
            engine.run(stop, once=args.once, on_tick=on_tick)
    finally:
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
