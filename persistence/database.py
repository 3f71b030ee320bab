"""Backend selection by URL (STYLE habit 6): SQLite file by default, PostgreSQL via psycopg 3."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import tenacity
from sqlalchemy import event

DEFAULT_URL = "sqlite:///provision.db"

# SQLite: execution options of a connection that runs only single-statement reads. Each statement
# is its own transaction, so no BEGIN IMMEDIATE (it would queue a read behind writers). PostgreSQL
# uses a separate pool of autocommit connections for the same purpose (persistence.store).
AUTOCOMMIT_OPTIONS = {"provision_autocommit": True}

# A pooled connection idle for longer than this is pinged before use (see _ping_idle).
PING_AFTER_IDLE_S = 1.0

#: How long a SQLite connection waits for another process's write lock before SQLITE_BUSY
#: (``PROVISION_SQLITE_BUSY_TIMEOUT_SECONDS``). A renewal whose commit still fails keeps its rotated
#: token in the spool (engine.core.spool), so a short timeout loses nothing.
DEFAULT_SQLITE_BUSY_TIMEOUT_S = 30.0
DEFAULT_POOL_SIZE = 10  # PostgreSQL connections kept per engine (PROVISION_DB_POOL_SIZE)


def sqlite_path(url: str | sa.URL) -> Path | None:
    """The file behind a SQLite URL, or None for other backends and in-memory databases."""
    u = sa.make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def create_db_engine(url: str | sa.URL, *, sqlite_busy_timeout_s: float = DEFAULT_SQLITE_BUSY_TIMEOUT_S,
                     transaction_idle_s: float | None = None, pool_size: int = DEFAULT_POOL_SIZE,
                     **kwargs: Any) -> sa.Engine:
    """Create a SQLAlchemy engine tuned for the step protocol on either backend.

    ``transaction_idle_s`` (PostgreSQL only): the longest a session of this engine may sit idle
    inside a transaction, or wait for a row lock, before the server ends it (see ``pg_session_options``).

    SQLite: WAL (readers never block the writer), ``synchronous=NORMAL`` (durable at checkpoints,
    safe against process crashes, which is what kill -9 tests exercise), a busy timeout
    (``sqlite_busy_timeout_s``) so several processes queue for the write lock, and ``BEGIN
    IMMEDIATE`` so a transaction takes the write lock up front instead of failing with SQLITE_BUSY
    when it upgrades from a read.
    """
    u = sa.make_url(url)
    if u.get_backend_name() == "sqlite":
        path = sqlite_path(u)
        if path is not None and path.parent and not path.parent.exists():
            raise FileNotFoundError(f"directory {path.parent} for the database does not exist")
        engine = sa.create_engine(u, connect_args={"timeout": sqlite_busy_timeout_s}, **kwargs)
        _tune_sqlite(engine, busy_timeout_ms=max(1, round(sqlite_busy_timeout_s * 1000)))
        return engine
    if u.get_backend_name() == "postgresql" and u.get_driver_name() in ("psycopg2", ""):
        # We ship with psycopg 3; a bare postgresql:// URL would pick psycopg2.
        u = u.set(drivername="postgresql+psycopg")
    if transaction_idle_s is not None:
        u = pg_session_options(u, transaction_idle_s)
    pre_ping = kwargs.pop("pool_pre_ping", None)
    kwargs.setdefault("pool_size", pool_size)
    engine = sa.create_engine(u, pool_pre_ping=bool(pre_ping), **kwargs)
    if pre_ping is None:
        _ping_idle(engine)
    return engine


def pg_session_options(url: sa.URL, transaction_idle_s: float) -> sa.URL:
    """``url`` with ``idle_in_transaction_session_timeout`` and ``lock_timeout`` in its ``options``.

    A worker that is stopped (SIGSTOP, a VM pause, a debugger) or hangs between two statements of
    a transaction keeps its row locks: PostgreSQL cannot tell it from a slow one, so no other
    worker could take its attempts over, whatever their leases say. With these settings the server
    ends such a session after ``transaction_idle_s`` (its transaction rolls back and its locks go),
    and a statement that waits that long for a lock fails instead of waiting for ever. The engine
    holds no transaction across an HTTP call, so an honest session idles in one for milliseconds.

    They go into the URL (libpq ``options``, appended to any already there, e.g. a
    ``search_path``) so that every pool built from ``engine.url`` has them, the autocommit pool of
    ``persistence.store`` included, at no round trip per connection.
    """
    ms = max(1, round(transaction_idle_s * 1000))
    ours = f"-c idle_in_transaction_session_timeout={ms} -c lock_timeout={ms}"
    given = url.query.get("options")
    given = given[-1] if isinstance(given, tuple) else given
    return url.update_query_dict({"options": f"{given} {ours}" if given else ours})


def _ping_idle(engine: sa.Engine) -> None:
    """Pessimistic disconnect handling, but only for connections that sat idle in the pool.

    ``pool_pre_ping`` costs a round trip (and a BEGIN) on every checkout, i.e. on every step of a
    busy worker. A connection returned milliseconds ago is as alive as a ping would show; one idle
    for ``PING_AFTER_IDLE_S`` (the database may have restarted meanwhile) is pinged, and replaced
    when dead: raising ``DisconnectionError`` makes the pool retry with a fresh connection.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["provision_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("provision_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return  # brand new, or just used
        try:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("SELECT 1")
            finally:
                cur.close()
            dbapi_conn.rollback()
        except Exception as exc:  # noqa: BLE001 - any failure means the connection is unusable
            raise sa.exc.DisconnectionError(f"stale pooled connection ({type(exc).__name__})") from exc


def _locked(exc: BaseException) -> bool:
    """SQLite's SQLITE_BUSY, as the driver raises it."""
    return isinstance(exc, sqlite3.OperationalError) and "database is locked" in str(exc)


def _tune_sqlite(engine: sa.Engine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see below)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # Processes opening a new file at once all switch it to WAL, and SQLite answers some of them
        # "database is locked" at once, without its busy handler: they try again, for as long as
        # the busy timeout would have waited.
        tenacity.Retrying(retry=tenacity.retry_if_exception(_locked), reraise=True,
                          stop=tenacity.stop_after_delay(busy_timeout_ms / 1000),
                          wait=tenacity.wait_random(0.005, 0.05))(cur.execute, "PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get("provision_autocommit"):
            return  # one SELECT is its own consistent snapshot in WAL mode; no write lock needed
        # Straight to the driver: the same statement through SQLAlchemy's execution path cost
        # more than the rest of a short transaction.
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
