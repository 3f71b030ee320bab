"""The worker loop's database errors, one part at a time (issue 16 item 6): the heartbeat and the
wait computation fail, the loop goes on, and each failure is one log line without SQL or secrets.

``tests/integration/test_worker_survives.py`` and ``test_db_restarts.py`` do the same with real
databases; these pin the loop's own logic (``Scheduler.run``, behind ``Engine.run``, and
``Heartbeat.after_tick``) to each path.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from engine.config import EngineSettings
from engine.core.heartbeat import Heartbeat
from engine.core.outage import database_error
from engine.core.scheduler import Scheduler, TickReport
from persistence.schema import metadata
from persistence.workers import live_workers

SECRET = "refresh-token-never-logged"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def db_error(text: str = "connection to server failed: Connection refused\nIs it running?") -> Exception:
    """What SQLAlchemy raises when the server went away, its SQL parameters holding a secret."""
    return sa.exc.OperationalError("SELECT min(next_run_at) FROM attempts", {"p": SECRET},
                                   sqlite3.OperationalError(text))


class Keys:
    key_ids = ("k1",)

    def reload(self) -> bool:
        return False


class Flaky:
    """A SQLite connection factory that fails while ``down`` is set (a database restarting)."""

    def __init__(self) -> None:
        self.down = True
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)  # memory: no file, no socket

    def __call__(self) -> sqlite3.Connection:
        if self.down:
            raise sqlite3.OperationalError("unable to open database file")
        return self.conn


def test_a_failed_heartbeat_is_one_line_and_is_retried_at_the_next_beat(
        caplog: pytest.LogCaptureFixture) -> None:
    flaky = Flaky()
    db = sa.create_engine("sqlite://", creator=flaky, poolclass=StaticPool)
    ticks = [100.0]
    beat = Heartbeat(db, Keys(), every_s=5, monotonic=lambda: ticks[0])
    with caplog.at_level(logging.WARNING, logger="engine.core.heartbeat"):
        assert beat.after_tick("w1", 0) is False  # never raises
        ticks[0] += 5
        assert beat.after_tick("w1", 0) is False
    assert beat.failures == 2
    lines = [r for r in caplog.records if r.name == "engine.core.heartbeat"]
    assert [r.getMessage() for r in lines] == [
        f"heartbeat failed ({n} in a row): database error OperationalError: unable to open database file; "
        "retrying in 5.0 s" for n in (1, 2)]
    assert all(r.exc_info is None for r in lines)  # the traceback only at DEBUG
    flaky.down = False  # the database is back
    metadata.create_all(db)
    ticks[0] += 1
    assert beat.after_tick("w1", 0) is False  # not due yet: a failed beat waits its period too
    ticks[0] += 4
    assert beat.after_tick("w1", 2) is True and beat.failures == 0
    assert [w.worker_id for w in live_workers(db, timedelta(minutes=5))] == ["w1"]


class LoopParts:
    """What ``Scheduler.run`` uses of its scheduler, each part scripted to fail when told."""

    def __init__(self, stop: threading.Event, fail: dict[str, list[Exception]]) -> None:
        self.settings = EngineSettings(poll_max_s=0.001)
        self.heartbeat: Any = None
        self._wake = threading.Event()
        self.stop, self.fail = stop, fail
        self.calls: list[str] = []

    def _part(self, name: str) -> None:
        self.calls.append(name)
        if self.fail.get(name):
            raise self.fail[name].pop(0)
        if self.calls.count("tick") >= 4:
            self.stop.set()

    def _release_quarantined(self) -> None:
        self._part("release")

    def now(self) -> datetime:
        self._part("now")
        return NOW

    def tick(self) -> TickReport:
        self._part("tick")
        return TickReport(NOW)

    def next_wait(self, now: datetime) -> float:
        self._part("next_wait")
        return 0.0


@pytest.mark.parametrize("part", ["next_wait", "now", "tick"])
def test_a_database_error_in_any_part_of_the_loop_does_not_end_it(
        part: str, caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    loop = LoopParts(stop, {part: [db_error(), db_error()]})
    with caplog.at_level(logging.WARNING, logger="engine.core.scheduler"):
        Scheduler.run(loop, stop)  # type: ignore[arg-type]  # the loop alone, its parts scripted
    assert loop.calls.count("tick") >= 4  # it went on after both failures
    lines = [r.getMessage() for r in caplog.records if r.name == "engine.core.scheduler"]
    assert lines == [f"tick failed ({n} in a row): database error OperationalError: connection to server "
                     f"failed: Connection refused; retrying in 0.0 s" for n in (1, 2)]
    assert not any(SECRET in r.getMessage() or "SELECT" in r.getMessage() for r in caplog.records)


def test_only_database_errors_are_shortened() -> None:
    assert database_error(db_error("x" * 500)) == f"OperationalError: {'x' * 200}"
    assert database_error(ValueError("a bug")) is None
