"""``provision prune`` and the worker's hourly retention: the commands around ``persistence.retention``."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from engine.cli.output import to_json
from engine.clock import utcnow
from engine.config import db_url_from_env, history_retention_days_from_env
from engine.wiring import open_repository
from persistence.database import create_db_engine
from persistence.retention import HistoryPruner, PruneReport, RetentionSchedule, retention_cutoff

log = logging.getLogger("provision")


def format_report(report: PruneReport) -> str:
    """The human summary printed by the CLI."""
    what = (f"{report.renewal_rows:,} renewal rows of {report.attempts:,} attempts from before "
            f"{report.cutoff.date().isoformat()} into {report.summaries:,} daily summaries "
            f"({report.rows_removed:,} history rows fewer")
    if report.dry_run:
        return f"dry run: would fold {what})"
    return f"folded {what}, {report.pages:,} transactions)"


def run_prune(db_url: str | None, keep: timedelta, *, dry_run: bool, batch: int, as_json: bool,
              out: Callable[[str], None]) -> int:
    """The body of ``provision prune``: fold renewal rows older than ``keep``, print what was done."""
    repo = open_repository(db_url or db_url_from_env())
    try:
        report = HistoryPruner(repo.engine, batch_rows=batch).prune(retention_cutoff(utcnow(), keep),
                                                                   dry_run=dry_run)
    finally:
        repo.engine.dispose()
    out(to_json(report.as_dict()) if as_json else format_report(report))
    return 0


def start_retention(db_url: str | None, stop: threading.Event) -> threading.Thread | None:
    """Fold old renewal history hourly from a thread of the worker, when the setting asks for it.

    The pruner has its own connection pool and its own transactions, never a step's; a failure is
    logged and tried again an hour later. None when ``PROVISION_HISTORY_RETENTION_DAYS`` is 0 or unset.
    """
    days = history_retention_days_from_env()
    if not days:
        return None
    pruner = HistoryPruner(create_db_engine(db_url or db_url_from_env(), pool_size=1), batch_rows=1000)
    return RetentionSchedule(pruner, days, utcnow).run_in_thread(
        stop, on_error=lambda exc: log.warning("history retention failed: %s", type(exc).__name__),
        on_report=lambda r: log.info("history retention: %s", format_report(r)))
