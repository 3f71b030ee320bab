"""The one injectable clock (STYLE habit 2): production uses the system UTC time."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """Timezone-aware UTC now; freezegun patches it in tests."""
    return datetime.now(timezone.utc)


class FakeClock:
    """A settable clock for tests: ``clock()`` returns the time, ``advance()`` moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0, **kw: float) -> datetime:
        """Move forward by ``seconds`` (or timedelta keywords) and return the new time."""
        self.now += timedelta(seconds=seconds, **kw)
        return self.now

    def sleep(self, seconds: float) -> None:
        """A ``sleep`` that advances this clock instead of waiting."""
        self.advance(seconds)


#: A reading this fast is off by at most half of it: a millisecond, finer than any lease or due time.
GOOD_TRIP = timedelta(milliseconds=2)
#: At most this long in readings per measurement (after the first), while the caller holds the lock.
SAMPLING_BUDGET = timedelta(milliseconds=250)


class DatabaseClock:
    """The database's clock, read through the local one: ``local() + offset`` (issue 16 item 8).

    Leases and due times are written and compared by every worker; with each worker's own clock, a
    worker 60 s ahead saw every other worker's lease as expired and ran its step a second time. All
    workers of one database therefore use the database server's time. Reading it per call would add
    a round trip to every ``now()``, so the offset between the database and the local clock is
    measured (``read_db`` between two local readings, the midpoint against the answer) and
    refreshed every ``refresh_s``. A reading delayed on one side (a connection being opened, the
    thread descheduled on a busy host) is off by up to half its round trip, so a measurement takes
    up to ``samples`` readings and keeps the one with the shortest round trip (Cristian's method).
    It stops at the first reading within ``GOOD_TRIP`` (the common case: one query, as before),
    or once the readings took ``SAMPLING_BUDGET`` together: the other threads wait for the
    measurement, and a database that answers slowly must not make them wait for three. If a
    refresh fails (database down), the last offset is kept: the worker must survive database
    errors, and the offset of a healthy host changes slowly.
    ``open_engine`` uses it; tests inject a ``FakeClock`` instead, which is one clock for all.
    """

    def __init__(self, read_db: Callable[[], datetime], *, local: Clock | None = None,
                 refresh_s: float = 30.0, monotonic: Callable[[], float] = time.monotonic,
                 samples: int = 3) -> None:
        self._read_db = read_db
        self._samples = max(1, samples)
        self._local = local or utcnow  # looked up now, not at import: a test worker may offset it
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._offset = timedelta(0)
        self._measured_at: float | None = None

    @property
    def offset(self) -> timedelta:
        """Database time minus local time, as last measured."""
        return self._offset

    def __call__(self) -> datetime:
        with self._lock:
            stale = self._measured_at is None or self._monotonic() - self._measured_at >= self._refresh_s
            if stale:
                self._measure()
            return self._local() + self._offset

    def _measure(self) -> None:
        self._measured_at = self._monotonic()
        try:
            readings = self._readings()
        except Exception as exc:  # noqa: BLE001 - keep the last offset; the next call retries soon
            log.warning("cannot read the database clock (%s); keeping offset %s", type(exc).__name__,
                        self._offset)
            self._measured_at = self._monotonic() - self._refresh_s + 1.0
            return
        self._offset = min(readings)[1]

    def _readings(self) -> list[tuple[timedelta, timedelta]]:
        """Readings until one is good enough, ``samples`` are taken or the budget is spent."""
        readings = [self._reading()]
        spent = readings[0][0]
        while len(readings) < self._samples and readings[-1][0] > GOOD_TRIP and spent < SAMPLING_BUDGET:
            readings.append(self._reading())
            spent += readings[-1][0]
        return readings

    def _reading(self) -> tuple[timedelta, timedelta]:
        """(round trip, offset) of one reading of the database clock."""
        before = self._local()
        db = self._read_db()
        trip = self._local() - before
        return trip, db - (before + trip / 2)
