"""engine.clock.DatabaseClock: every worker's now() is the database's (issue 16 item 8), pure."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from engine.clock import DatabaseClock, FakeClock

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


class Ticks:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_worker_60_s_ahead_reads_the_database_time() -> None:
    local = FakeClock(T0 + timedelta(seconds=60))
    db = FakeClock(T0)
    clock = DatabaseClock(db, local=local, monotonic=Ticks())
    assert clock() == T0 and clock.offset == timedelta(seconds=-60)
    local.advance(5)
    assert clock() == T0 + timedelta(seconds=5)  # the local clock runs, the offset is kept


def test_the_offset_is_measured_once_per_refresh_period() -> None:
    reads: list[datetime] = []
    db = FakeClock(T0)

    def read() -> datetime:
        reads.append(db())
        return db()

    ticks = Ticks()
    clock = DatabaseClock(read, local=FakeClock(T0), refresh_s=30, monotonic=ticks)
    clock(), clock()
    assert len(reads) == 1  # an instant answer is good enough: one reading
    db.advance(2)  # the database's clock drifted 2 s ahead of ours
    ticks.t = 30
    assert clock() == T0 + timedelta(seconds=2) and len(reads) == 2


def test_a_failed_read_keeps_the_last_offset_and_retries_soon() -> None:
    state = {"fail": False}
    db = FakeClock(T0 + timedelta(seconds=10))

    def read() -> datetime:
        if state["fail"]:
            raise OSError("database restarting")
        return db()

    ticks = Ticks()
    clock = DatabaseClock(read, local=FakeClock(T0), refresh_s=30, monotonic=ticks)
    assert clock() == T0 + timedelta(seconds=10)
    state["fail"] = True
    ticks.t = 30
    assert clock() == T0 + timedelta(seconds=10)  # no exception, the last offset
    state["fail"] = False
    db.advance(1)
    ticks.t = 31  # retried a second later, not a whole refresh period
    assert clock() == T0 + timedelta(seconds=11)


def test_a_slow_reading_does_not_skew_the_offset() -> None:
    """Regression test: the offset came from one reading, so a round trip delayed on one side (the
    first query opening the connection, a descheduled thread) put the worker ahead of the database
    by half that delay. With no skew at all, a 100 ms connect before the first answer made the
    offset +50 ms: an attempt another engine started was not yet due for an engine on the host's
    clock (a flaky PostgreSQL test on a busy machine). The shortest of the readings now decides."""
    local = FakeClock(T0)  # the database and the host agree: the right offset is 0
    delays = iter([0.1, 0.002, 0.001])  # seconds spent before the answer: connect, then warm

    def read() -> datetime:
        local.advance(next(delays, 0.001))
        answer = local()  # read at the end of the wait: a late answer, as after a connect
        local.advance(0.0005)
        return answer

    clock = DatabaseClock(read, local=local, monotonic=Ticks())
    clock()
    assert abs(clock.offset) <= timedelta(milliseconds=1)


def slow_database(local: FakeClock, seconds: float, reads: list[datetime]) -> Callable[[], datetime]:
    """A ``read_db`` that answers after ``seconds`` of the local clock, with no skew."""
    def read() -> datetime:
        local.advance(seconds)
        reads.append(local())
        return local()
    return read


def test_readings_stop_at_the_first_good_one() -> None:
    local, reads = FakeClock(T0), list[datetime]()
    clock = DatabaseClock(slow_database(local, 0.0015, reads), local=local, monotonic=Ticks())
    clock()
    assert len(reads) == 1  # within GOOD_TRIP: no second query


def test_a_slow_database_is_not_read_three_times_while_the_others_wait() -> None:
    """Every thread's now() waits for a measurement: with readings of 300 ms each, three would hold
    them for 0.9 s every refresh. The budget stops after the first; one sample is also possible."""
    local, reads = FakeClock(T0), list[datetime]()
    DatabaseClock(slow_database(local, 0.3, reads), local=local, monotonic=Ticks())()
    assert len(reads) == 1
    local, reads = FakeClock(T0), list[datetime]()
    DatabaseClock(slow_database(local, 0.1, reads), local=local, monotonic=Ticks())()
    assert len(reads) == 3  # slow but within the budget: the shortest of three
    local, reads = FakeClock(T0), list[datetime]()
    DatabaseClock(slow_database(local, 0.1, reads), local=local, monotonic=Ticks(), samples=1)()
    assert len(reads) == 1
