"""bench/pg_waits.py: how samples of pg_stat_activity are named and counted."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import pg_waits  # noqa: E402


def test_statement_kind_drops_literals_and_parameters() -> None:
    first = pg_waits.statement_kind("UPDATE attempts\n  SET runs = $1 WHERE id = 'abc' LIMIT 50")
    second = pg_waits.statement_kind("UPDATE attempts SET runs = $7 WHERE id = 'xyz' LIMIT 40")
    assert first == second == "UPDATE attempts SET runs = ? WHERE id = ? LIMIT ?"
    assert len(pg_waits.statement_kind("SELECT " + "x, " * 100)) == 60


def test_waits_are_counted_by_class_and_statement() -> None:
    waits = pg_waits.Waits()
    waits.add("COMMIT", "IO", "WALSync")
    waits.add("WITH moved AS (UPDATE attempts SET state = $1)", "Lock", "advisory")
    waits.add("WITH moved AS (UPDATE attempts SET state = $2)", None, None)
    waits.add("SELECT 1", "LWLock", "BufferContent")
    waits.polls = 2
    assert waits.shares() == {"WAL flush": 0.25, "advisory lock (events outbox)": 0.25, "on CPU": 0.25,
                              "other (LWLock/BufferContent)": 0.25}
    assert waits.summary()["busy_backends"] == 2.0
    report = waits.report()
    assert "2.00 busy backends" in report and "25.0%  advisory lock (events outbox)" in report
    assert "WITH moved AS (UPDATE attempts SET state = ?)" in report


def test_a_wait_for_another_backends_flush_is_a_shared_flush() -> None:
    waits = pg_waits.Waits()
    waits.add("COMMIT", "LWLock", "WALWrite")  # group commit: this commit rides on that flush
    assert waits.shares() == {"WAL flush (shared)": 1.0}
