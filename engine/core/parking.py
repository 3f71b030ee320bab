"""Platform-wide errors park the queue, not the attempts (issue 15 must-have 6).

When the platform rejects the engine's own credentials (HTTP 401, ``unauthorized``) or the provider
rejects the app's client credentials (``invalid_client``, Reconnect 22/24: ``provider_unauthorized``),
every attempt would fail the same way: one typo in ``ELEMENTS_USER_SECRET`` used to fail the whole
queue as ``permanent_error``. These errors are the operator's configuration error, not the attempt's.
So the worker *parks*: the failed step is left as it was (no history row, no failure counted, the
attempt stays due), the worker stops claiming for a backoff period, and ONE error line names the
setting to fix. Once the setting is fixed (a restarted worker, or the backoff running out after the
platform accepts again), the same attempts continue.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

log = logging.getLogger(__name__)

# What to fix, per error kind; the messages name the setting, never its value.
FIXES: dict[str, str] = {
    "unauthorized": "the platform rejected the engine's credentials (HTTP 401): fix ELEMENTS_USER_SECRET "
                    "and ELEMENTS_ORG_SECRET",
    "provider_unauthorized": "the provider rejected the app's client credentials (invalid_client): fix the "
                             "app's api key and secret (oauth.api.key / oauth.api.secret, --api-key / "
                             "--api-secret)",
}
INITIAL_BACKOFF_S = 60.0
MAX_BACKOFF_S = 900.0


def is_platform_wide(error: BaseException) -> bool:
    """True for the errors that no attempt can be blamed for (see the module docstring)."""
    return getattr(error, "kind", None) in FIXES


class Parking:
    """The worker's parked state: until when it claims nothing, and why. Thread-safe."""

    def __init__(self, clock: Callable[[], datetime], *, initial_s: float = INITIAL_BACKOFF_S,
                 maximum_s: float = MAX_BACKOFF_S) -> None:
        self._clock = clock
        self._initial_s = initial_s
        self._maximum_s = maximum_s
        self._lock = threading.Lock()
        self._until: datetime | None = None
        self._backoff_s = 0.0
        self.reason: str | None = None  # the last parking's message, kept after it ran out

    def park(self, error: BaseException) -> None:
        """Stop claiming for the next backoff period; the first parking logs ONE error line."""
        fix = FIXES.get(str(getattr(error, "kind", "")), "a platform-wide error")
        with self._lock:
            first = self._backoff_s == 0.0
            if self._until is not None and self._clock() < self._until:
                return  # the other steps of the same batch hit the same error: one parking
            self._backoff_s = min(self._maximum_s, self._backoff_s * 2 or self._initial_s)
            self._until = self._clock() + timedelta(seconds=self._backoff_s)
            self.reason = (f"queue parked: {fix}; no attempt was failed or charged, they continue once "
                           f"it is fixed (next try at {self._until.isoformat()})")
        if first:
            log.error("%s", self.reason)
        else:
            log.info("still %s", self.reason)

    def clear(self) -> None:
        """A step reached the platform successfully: claim normally again."""
        with self._lock:
            was_parked = self._backoff_s > 0.0
            self._until, self._backoff_s = None, 0.0
        if was_parked:
            log.info("queue unparked: the platform accepts the engine's credentials again")

    def seconds_left(self, now: datetime) -> float:
        """How long the queue stays parked from ``now`` (0 when it is not)."""
        with self._lock:
            until = self._until
        return max(0.0, (until - now).total_seconds()) if until is not None else 0.0

    @property
    def parked(self) -> bool:
        """True while steps end in a platform-wide error (until one reaches the platform again)."""
        with self._lock:
            return self._backoff_s > 0.0
