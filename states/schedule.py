"""Pure time predicates (STYLE habit 12): renewal due times, deadlines."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

DEFAULT_MAX_LEAD_S = 15 * 60


def renewal_lead_s(interval_s: int, max_lead_s: int = DEFAULT_MAX_LEAD_S, fraction: float = 0.10) -> float:
    """How early to renew: the smaller of ``max_lead_s`` and ``fraction`` of the interval."""
    return min(float(max_lead_s), interval_s * fraction)


def next_renewal_at(refresh_time_ms: int, interval_s: int, max_lead_s: int = DEFAULT_MAX_LEAD_S) -> datetime:
    """``refresh_time + refresh_interval - lead`` as an aware UTC datetime (issue 3/6 item 1)."""
    base = datetime.fromtimestamp(refresh_time_ms / 1000, tz=timezone.utc)
    return base + timedelta(seconds=interval_s - renewal_lead_s(interval_s, max_lead_s))


def is_past(moment: datetime | None, now: datetime) -> bool:
    """True when ``moment`` is set and has been reached."""
    return moment is not None and now >= moment
