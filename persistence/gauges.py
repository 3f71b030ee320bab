"""Scrape-time gauges (issue 18 must-have 6): one cheap query each, on the database's clock.

- ``due_backlog``: attempts due now and not leased, per state, with the oldest due time's age. Due
  and age are judged against the database's ``now`` inside the same statement, so workers and the
  scraper with skewed clocks agree, and the query uses the partial index on ``next_run_at``.
- ``live_worker_counts``: heartbeat rows younger than ``dead_after``, per role (worker, serve,
  console), with the liveness rule of ``persistence.workers.live_workers``.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from persistence.columns import UTCDateTime
from persistence.database import AUTOCOMMIT_OPTIONS
from persistence.schema import attempts, workers


@dataclass(frozen=True)
class DueBacklog:
    """Attempts of one state that are due and not leased, and how late the oldest is (seconds)."""

    state: str
    count: int
    oldest_age_s: float


def _db_now(dialect: str) -> sa.ColumnElement[Any]:
    """The database's now as a naive UTC value comparable with ``UTCDateTime`` columns."""
    if dialect == "postgresql":
        return sa.literal_column("(clock_timestamp() AT TIME ZONE 'UTC')")
    # The same fixed-width text SQLite stores (persistence.columns), to the millisecond.
    return sa.literal_column("strftime('%Y-%m-%d %H:%M:%f', 'now')")


def _utc(value: Any, dialect: sa.Dialect) -> datetime:
    moment = UTCDateTime().process_result_value(value, dialect)
    assert moment is not None
    return moment


def _reader(db: sa.Engine) -> sa.Connection:
    """A connection for one read: on SQLite no BEGIN IMMEDIATE, so a scrape takes no write lock."""
    conn = db.connect()
    return conn if db.dialect.name == "postgresql" else conn.execution_options(**AUTOCOMMIT_OPTIONS)


def due_backlog(db: sa.Engine) -> list[DueBacklog]:
    """Per state: attempts due now (``next_run_at <= now``) whose lease is free or expired."""
    now = _db_now(db.dialect.name)
    free = sa.or_(attempts.c.lease_expires_at.is_(None), attempts.c.lease_expires_at <= now)
    q = (sa.select(attempts.c.state, sa.func.count(), sa.func.min(attempts.c.next_run_at), sa.func.max(now))
         .where(attempts.c.next_run_at.is_not(None), attempts.c.next_run_at <= now, free)
         .group_by(attempts.c.state))
    with _reader(db) as conn:
        rows = conn.execute(q).all()
    backlog = []
    for state, count, oldest, at in rows:
        age = (_utc(at, db.dialect) - _utc(oldest, db.dialect)).total_seconds()
        backlog.append(DueBacklog(str(state), int(count), max(0.0, age)))
    return sorted(backlog, key=lambda b: b.state)


def live_worker_counts(db: sa.Engine, dead_after: timedelta) -> dict[str, int]:
    """Live heartbeat rows per role: ``last_tick_at`` within ``dead_after`` of the database's now."""
    q = sa.select(workers.c.role, workers.c.last_tick_at, _db_now(db.dialect.name))
    with _reader(db) as conn:
        rows = conn.execute(q).all()  # one row per running process: a handful
    counts: dict[str, int] = {}
    for role, last, now in rows:
        if _utc(now, db.dialect) - _utc(last, db.dialect) <= dead_after:
            counts[str(role)] = counts.get(str(role), 0) + 1
    return counts

