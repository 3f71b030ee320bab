"""The connections of a repository: reads, write transactions, single-statement writes."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa

from .codec import SecretCodec
from .database import autocommit_options


class Store:
    """One database and its secret codec; the base of ``Repository`` (safe to share between threads)."""

    def __init__(self, engine: sa.Engine, codec: SecretCodec) -> None:
        self.engine = engine
        self.codec = codec
        self.dialect = engine.dialect.name
        self._autocommit = autocommit_options(engine)
        self._pg = self.dialect == "postgresql"
        # SQLite has one writer at a time. Threads of this process queue on a lock instead of
        # SQLite's busy handler, which sleeps 1, 2, 5, 10... ms between tries and so idles the
        # worker's thread pool; other processes still queue through busy_timeout.
        self._write_lock: Any = threading.Lock() if self.dialect == "sqlite" else nullcontext()

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """A connection for single-statement reads: no transaction, no write lock."""
        with self.engine.connect() as conn:
            yield conn.execution_options(**self._autocommit)

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
        with self.engine.connect() as conn:
            yield conn.execution_options(**self._autocommit)

    def seal(self, secrets: dict[str, Any] | None) -> bytes | None:
        """The encrypted blob of ``secrets`` (None stays None: the stored blob is kept)."""
        return self.codec.seal(secrets) if secrets is not None else None
