"""The worker loop survives a database error in every part of its loop (issue 16 item 6).

``Engine.run`` computed the wait (``next_wait``, a database read) outside its try block, so an
``OperationalError`` there ended the worker process. On PostgreSQL the failure is real: the
engine's backends are terminated (``pg_terminate_backend``) just before the read, as a database
restart would; on SQLite, whose WAL reads cannot be made to fail from outside, the driver's own
error is raised at the same point.
"""
from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from testkit import quick_config

from engine import Engine, EngineSettings
from states import State


def db_now(url: str) -> datetime:
    """The database's clock (sessions that start after it are the engine's)."""
    admin = sa.create_engine(url)
    try:
        with admin.begin() as conn:
            return conn.exec_driver_sql("SELECT now()").scalar_one()  # type: ignore[no-any-return]
    finally:
        admin.dispose()


def terminate_backends(url: str, since: datetime) -> int:
    """Terminate this test's sessions opened since ``since``, as a restart would.

    Only those: the fixtures' own sessions (older) must survive to drop the test's schema, and the
    sessions of tests running in parallel (pytest -n) are told apart by their ``application_name``,
    which ``pg_schema_url`` sets to the test's schema.
    """
    app = sa.make_url(url).query.get("application_name")
    mine = " AND application_name = %(app)s" if app else ""
    admin = sa.create_engine(url)
    try:
        with admin.begin() as conn:
            return len(conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_start > %(since)s" + mine,
                {"since": since, "app": app}).all())
    finally:
        admin.dispose()


def database_fault(db_url: str, since: datetime | None) -> None:
    if since is not None:
        assert terminate_backends(db_url, since) >= 1
        return
    raise sa.exc.OperationalError("SELECT ... next_run_at", {}, sqlite3.OperationalError("disk I/O error"))


def test_a_database_error_while_computing_the_wait_does_not_end_the_worker(
        db_url: str, make_engine: Callable[..., Engine]) -> None:
    since = db_now(db_url) if db_url.startswith("postgresql") else None
    engine = make_engine(settings=EngineSettings(poll_max_s=0.01))
    first = engine.start("quickbooks", "Before", flow="quick", config=quick_config())
    stop = threading.Event()
    real = engine.repo.next_due_at
    calls: list[str] = []
    later: list[str] = []

    def next_due_at(now: datetime) -> datetime | None:
        calls.append("call")
        if len(calls) == 1:
            later.append(engine.start("quickbooks", "After", flow="quick", config=quick_config()).id)
            database_fault(db_url, since)
        if engine.get(later[0]).state is State.PROVISIONED:
            stop.set()
        return real(now)

    engine.repo.next_due_at = next_due_at  # type: ignore[method-assign,assignment]
    engine.run(stop)
    assert len(calls) >= 2
    assert engine.get(first.id).state is State.PROVISIONED
    assert engine.get(later[0]).state is State.PROVISIONED
