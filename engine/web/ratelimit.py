"""A per-address token bucket with a bounded table: how ``provision serve`` limits refused callbacks.

Every refused callback (forged, unknown, malformed, or rejected for its attempt) costs its client
address one token; an address whose bucket is empty gets 429 with ``Retry-After`` on ``/callback``
before the engine is asked anything. Callbacks that succeed cost nothing, so a user finishing a
consent is never limited by their own success. The table keeps at most ``max_addresses`` buckets
(least recently used dropped first), so a flood from many addresses cannot grow memory: a dropped
address starts again with a full bucket, which only ever errs on the side of letting a client in.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets per key (a client address): ``burst`` tokens, refilled at ``per_second``.

    ``clock`` is a monotonic clock in seconds (``time.monotonic`` in production, a fake in tests).
    Thread-safe: the server calls it from its worker threads. ``refused`` counts the requests
    turned away since start (for the operator's log).
    """

    def __init__(self, *, burst: int, per_second: float, max_addresses: int,
                 clock: Callable[[], float]) -> None:
        if burst < 1 or per_second <= 0 or max_addresses < 1:
            raise ValueError("burst and max_addresses must be at least 1 and per_second above 0")
        self.burst = burst
        self.per_second = per_second
        self.max_addresses = max_addresses
        self.clock = clock
        self.refused = 0
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def addresses(self) -> int:
        """How many addresses the table holds now (at most ``max_addresses``)."""
        return len(self._buckets)

    def _refill(self, key: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.per_second)
        bucket.at = now
        self._buckets.move_to_end(key)
        return bucket

    def retry_after(self, key: str) -> int | None:
        """Seconds until ``key`` may try again (at least 1), or None when it has a token left."""
        with self._lock:
            now = self.clock()
            bucket = self._refill(key, now)
            if bucket is None or bucket.tokens >= 1:
                return None
            self.refused += 1
            return max(1, math.ceil((1 - bucket.tokens) / self.per_second))

    def charge(self, key: str) -> None:
        """Take one token from ``key``'s bucket (a refused callback), creating the bucket if new."""
        with self._lock:
            now = self.clock()
            bucket = self._refill(key, now)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
                while len(self._buckets) > self.max_addresses:
                    self._buckets.popitem(last=False)  # the least recently seen address
            bucket.tokens = max(0.0, bucket.tokens - 1)
