"""The connections of a repository: reads, write transactions, single-statement writes."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa

from persistence.codec import Codec
from persistence.database import AUTOCOMMIT_OPTIONS, create_db_engine
from persistence.prepared import DriverStatement


class Store:
    """One database and its secret codec; the base of ``Repository`` (safe to share between threads)."""

    def __init__(self, engine: sa.Engine, codec: Codec) -> None:
        self.engine = engine
        self.codec = codec
        self.dialect = engine.dialect.name
        self._pg = self.dialect == "postgresql"
        # SQLite has one writer at a time. Threads of this process queue on a lock instead of
        # SQLite's busy handler, which sleeps 1, 2, 5, 10... ms between tries and so idles the
        # worker's thread pool; other processes still queue through busy_timeout.
        self._write_lock: Any = threading.Lock() if self.dialect == "sqlite" else nullcontext()
        # PostgreSQL: reads and single-statement writes go through a pool of autocommit
        # connections. Setting autocommit per checkout (and resetting it on return) cost about
        # 0.08 ms of CPU per Engine.start or callback, a fifth of each (bench/README.md).
        self._auto = engine
        # id(statement) -> (statement, prepared); holding the statement keeps its id unique.
        self._prepared: dict[int, tuple[Any, DriverStatement]] = {}
        if self._pg:
            # The same pool size as the transactional engine (PROVISION_DB_POOL_SIZE reaches both).
            size = engine.pool.size() if isinstance(engine.pool, sa.pool.QueuePool) else None
            # No rollback when a connection returns to this pool: in autocommit no transaction
            # can be open, and the call cost CPU on every statement.
            self._auto = create_db_engine(engine.url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None,
                                          **({"pool_size": size} if size else {}))
            sa.event.listen(engine, "engine_disposed", lambda _engine: self._auto.dispose())

    @property
    def engines(self) -> tuple[sa.Engine, ...]:
        """Every engine this store sends statements through (``engine`` first): for event listeners."""
        return (self.engine,) if self._auto is self.engine else (self.engine, self._auto)

    def prepared(self, statement: Any) -> DriverStatement:
        """``statement`` compiled once for this database (``persistence.prepared``); pass a statement
        built once (a module constant or a cached one), since it is remembered by identity."""
        found = self._prepared.get(id(statement))
        if found is None:
            found = (statement, DriverStatement(statement, self.engine.dialect))
            self._prepared[id(statement)] = found
        return found[1]

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """A connection for single-statement reads: no transaction, no write lock."""
        with self._auto.connect() as conn:
            yield conn if self._pg else conn.execution_options(**AUTOCOMMIT_OPTIONS)

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction (committed on exit), serialised within the process on SQLite."""
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _write_one(self) -> Iterator[sa.Connection]:
        """A connection for ONE self-contained write statement.

        PostgreSQL: autocommit, so the statement is its own transaction in one round trip instead
        of three (BEGIN, statement, COMMIT). SQLite: an ordinary ``_write`` transaction (no round
        trips to save, and BEGIN IMMEDIATE keeps its locking simple).
        """
        if not self._pg:
            with self._write() as conn:
                yield conn
            return
        with self._auto.connect() as conn:
            yield conn

    def close(self) -> None:
        """Close every pooled connection (the autocommit pool follows through ``engine_disposed``)."""
        self.engine.dispose()
