"""SQLite's WAL checkpoints on a thread of their own, not on the thread that commits (issue 19).

In WAL mode a commit appends pages to the ``-wal`` file, and by default the commit that takes the
file past 1,000 pages also copies them back into the database and syncs it (the automatic
checkpoint). That commit then takes 2-11 ms instead of about 0.05: in a single-process run on 2
cores the checkpoints were 152 of 8,578 commits and 0.24 ms per attempt, on the thread that also
answers callbacks and runs the steps (``bench/README.md``). :class:`WalCheckpointer` runs a passive
checkpoint (``PRAGMA wal_checkpoint(PASSIVE)``: it never waits for readers or writers) on a daemon
thread after every ``every`` write transactions of its store. SQLite releases the GIL while it
copies and syncs, so the work moves to another core. The automatic checkpoint stays as a safety
net, at ``SAFETY_AUTOCHECKPOINT_PAGES`` (``persistence.database``), for processes whose writes do
not pass through a store.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

#: A passive checkpoint after this many write transactions: about SQLite's own 1,000 pages.
CHECKPOINT_EVERY_COMMITS = 50


class WalCheckpointer:
    """Checkpoints ``engine``'s SQLite WAL on a background thread, woken every ``every`` commits.

    ``committed`` is called after each write transaction; the thread starts with the first
    checkpoint due and ``stop`` ends it (a later ``committed`` starts a new one, since a disposed
    engine may still be used). ``passes`` counts the checkpoints run.
    """

    def __init__(self, engine: sa.Engine, *, every: int = CHECKPOINT_EVERY_COMMITS) -> None:
        self._engine = engine
        self._every = max(1, every)
        self._lock = threading.Lock()
        self._commits = 0
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.passes = 0

    def committed(self) -> None:
        """Count one write transaction; every ``every``-th wakes the thread."""
        with self._lock:
            self._commits += 1
            if self._commits % self._every:
                return
            if self._thread is None:
                self._wake, self._stopping = threading.Event(), threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._wake, self._stopping),
                                                name="provision-wal-checkpoint", daemon=True)
                self._thread.start()
            wake = self._wake
        wake.set()

    def _run(self, wake: threading.Event, stopping: threading.Event) -> None:
        while True:
            wake.wait()
            wake.clear()
            if stopping.is_set():
                return
            self.checkpoint()

    def checkpoint(self) -> None:
        """One passive checkpoint now, on a pooled connection of its own, outside a transaction."""
        try:
            with self._engine.connect() as conn:
                # Straight to the driver, outside any transaction: housekeeping, which statement
                # listeners (tests counting statements, tracers) should not see.
                driver: Any = conn.connection.driver_connection
                driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except (sa.exc.DBAPIError, sqlite3.Error) as exc:
            # Another connection is checkpointing ("database is locked"), or the file is gone:
            # the next pass, or SQLite's own checkpoint, does the work.
            log.debug("WAL checkpoint skipped: %s", type(exc).__name__)
        with self._lock:
            self.passes += 1

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the thread (after a checkpoint in progress); idempotent."""
        with self._lock:
            thread, self._thread = self._thread, None
            stopping, wake = self._stopping, self._wake
        if thread is None:
            return
        stopping.set()
        wake.set()
        thread.join(timeout_s)
