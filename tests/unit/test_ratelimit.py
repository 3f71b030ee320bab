"""``engine.web.ratelimit.RateLimiter``: per-address token buckets in a bounded LRU table."""
from __future__ import annotations

import pytest

from engine.web.ratelimit import RateLimiter


class Tick:
    """A monotonic fake clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_refused_after_its_burst_and_refilled_over_time() -> None:
    tick = Tick()
    limiter = RateLimiter(burst=3, per_second=0.5, max_addresses=10, clock=tick)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.charge("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 2  # one token at 0.5/s
    assert limiter.retry_after("10.0.0.2") is None  # others are not affected
    tick.now += 1.9
    assert limiter.retry_after("10.0.0.1") == 1
    tick.now += 0.1
    assert limiter.retry_after("10.0.0.1") is None
    assert limiter.refused == 2
    tick.now += 3600
    for _ in range(3):  # the bucket never holds more than the burst
        limiter.charge("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") is not None


def test_the_table_is_bounded_dropping_the_least_recently_seen() -> None:
    tick = Tick()
    limiter = RateLimiter(burst=1, per_second=0.01, max_addresses=100, clock=tick)
    limiter.charge("keep")
    for i in range(10_000):
        limiter.charge(f"10.{i // 256}.{i % 256}.1")
        if i % 50 == 0:
            assert limiter.retry_after("keep") is not None  # seen recently: kept
    assert limiter.addresses == 100
    assert limiter.retry_after("10.0.0.1") is None  # dropped long ago: starts again with a full bucket


@pytest.mark.parametrize("kw", [{"burst": 0}, {"per_second": 0.0}, {"max_addresses": 0}])
def test_nonsense_limits_are_refused(kw: dict[str, float]) -> None:
    args = {"burst": 1, "per_second": 1.0, "max_addresses": 1, **kw}
    with pytest.raises(ValueError, match="at least 1"):
        RateLimiter(burst=int(args["burst"]), per_second=args["per_second"],
                    max_addresses=int(args["max_addresses"]), clock=Tick())
