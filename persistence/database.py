"""Backend selection by URL (STYLE habit 6): SQLite file by default, PostgreSQL via psycopg 3."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

DEFAULT_URL = "sqlite:///provision.db"


def sqlite_path(url: str | sa.URL) -> Path | None:
    """The file behind a SQLite URL, or None for other backends and in-memory databases."""
    u = sa.make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def create_db_engine(url: str, **kwargs: Any) -> sa.Engine:
    """Create a SQLAlchemy engine tuned for the step protocol on either backend.

    SQLite: WAL (readers never block the writer), ``synchronous=NORMAL`` (durable at checkpoints,
    safe against process crashes, which is what kill -9 tests exercise), a busy timeout so several
    processes queue for the write lock, and ``BEGIN IMMEDIATE`` so a transaction takes the write
    lock up front instead of failing with SQLITE_BUSY when it upgrades from a read.
    """
    u = sa.make_url(url)
    if u.get_backend_name() == "sqlite":
        path = sqlite_path(u)
        if path is not None and path.parent and not path.parent.exists():
            raise FileNotFoundError(f"directory {path.parent} for the database does not exist")
        engine = sa.create_engine(u, connect_args={"timeout": 30}, **kwargs)
        _tune_sqlite(engine)
        return engine
    if u.get_backend_name() == "postgresql" and u.get_driver_name() in ("psycopg2", ""):
        # We ship with psycopg 3; a bare postgresql:// URL would pick psycopg2.
        u = u.set(drivername="postgresql+psycopg")
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", int(os.environ.get("PROVISION_DB_POOL_SIZE", "10")))
    return sa.create_engine(u, **kwargs)


def _tune_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
