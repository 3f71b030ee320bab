"""The one injectable clock (STYLE habit 2): production uses the system UTC time."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

Clock = Callable[[], datetime]


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
