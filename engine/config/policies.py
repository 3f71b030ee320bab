"""How hard to retry: ``RetryPolicy`` (steps, from ``PROVISION_RETRY_*``) and ``RenewalPolicy``."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from engine.config.bounds import numbers_from_env
from engine.errors import InvalidInputError

_POLICY_ENV = {
    "in_process_attempts": "PROVISION_RETRY_IN_PROCESS_ATTEMPTS",
    "durable_initial": "PROVISION_RETRY_DURABLE_INITIAL_SECONDS",
    "durable_max": "PROVISION_RETRY_DURABLE_MAX_SECONDS",
    "budget": "PROVISION_RETRY_BUDGET",
}


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up; one per engine (or per element)."""

    in_process_attempts: int = 3  # tries of one HTTP call inside one step
    in_process_initial: float = 0.2  # seconds; full jitter over an exponential window
    in_process_max: float = 2.0  # cap of one in-process wait (and of an honoured Retry-After)
    durable_initial: float = 5.0  # first durable reschedule, seconds
    durable_multiplier: float = 2.0
    durable_max: float = 600.0
    budget: int = 6  # durable reschedules allowed per step before retries_exhausted

    def __post_init__(self) -> None:
        for name in ("in_process_initial", "in_process_max", "durable_initial", "durable_max",
                     "durable_multiplier"):
            value = getattr(self, name)
            # Finite too: an infinite wait overflows the due time and fails every tick (issue 16).
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value >= 0):
                raise InvalidInputError(f"RetryPolicy.{name}", f"must be a finite number >= 0, "
                                        f"got {str(value)[:40]!r}")
        for name, least in (("in_process_attempts", 1), ("budget", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InvalidInputError(f"RetryPolicy.{name}", f"must be a whole number >= {least}, "
                                        f"got {str(value)[:40]!r}")


@dataclass(frozen=True)
class RenewalPolicy:
    """How renewals retry. Our choice (documented in the README): transient failures back off
    from 1 minute, doubling to at most 1 hour, for up to 4 days after this renewal first failed (like
    Nango); an OAuth2 refresh token lives 100 days and an OAuth1 token has 29 days of Reconnect
    window left, so 4 days of trying loses nothing. A first ``invalid_grant`` is retried once after
    ``reject_confirm_s``: a worker whose lease expired mid-renewal may have rotated the token and
    be about to store it; only a second rejection fails the attempt as ``renewal_rejected``.
    """

    initial: float = 60.0
    maximum: float = 3600.0
    give_up_after: float = 4 * 86400.0
    reject_confirm_s: float = 60.0


def retry_policy_from_env(environ: Mapping[str, str] | None = None) -> RetryPolicy:
    """``RetryPolicy`` with overrides from ``PROVISION_RETRY_*`` variables (ranges: ``BOUNDS``)."""
    values = numbers_from_env(environ, _POLICY_ENV)
    policy = RetryPolicy(**values)
    if policy.durable_max < policy.durable_initial:
        raise InvalidInputError(
            "PROVISION_RETRY_DURABLE_MAX_SECONDS",
            f"must be at least PROVISION_RETRY_DURABLE_INITIAL_SECONDS ({policy.durable_initial:g}), "
            f"got {policy.durable_max:g}")
    return policy
