"""Retry policies as data, turned into tenacity objects by one factory (DESIGN §5, STYLE 3-4).

Two layers: a transient error is first retried in-process (tenacity: exponential backoff with
full jitter, Retry-After honoured), then the step is durably rescheduled through ``next_run_at``
with a growing delay, and once the attempt's budget is spent it fails as ``retries_exhausted``.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from engine.config import RenewalPolicy, RetryPolicy
from engine.errors import ProvisionError
from states.decisions import Fail, RetryLater
from states.model import FailureReason

T = TypeVar("T")


def _retryable(policy: RetryPolicy) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if not (isinstance(exc, ProvisionError) and exc.transient):
            return False
        after = getattr(exc, "retry_after", None)
        # A server asking for a long pause gets it durably, not by blocking this worker thread.
        return after is None or after <= policy.in_process_max

    return check


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    jitter = wait_random_exponential(multiplier=policy.in_process_initial, max=policy.in_process_max)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        if after is not None:
            return float(after)
        return float(jitter(state))

    return wait


def retrying(
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None],
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> Retrying:
    """The tenacity ``Retrying`` for one step's HTTP call; ``sleep`` is injected (tests record waits)."""
    return Retrying(
        stop=stop_after_attempt(policy.in_process_attempts),
        wait=_wait(policy),
        retry=retry_if_exception(_retryable(policy)),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


def call_with_retries(retryer: Retrying, fn: Callable[[int], T]) -> T:
    """Run ``fn(try_number)`` under ``retryer``; the try number lets a step act differently on repeats."""
    for attempt in retryer:
        with attempt:
            result = fn(attempt.retry_state.attempt_number)
        if not attempt.retry_state.outcome or not attempt.retry_state.outcome.failed:
            return result
    raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover


def durable_delay(policy: RetryPolicy, failures: int, retry_after: float | None, rng: random.Random) -> float:
    """Seconds until the next durable try after ``failures`` consecutive failed steps (full jitter)."""
    window = min(policy.durable_max, policy.durable_initial * policy.durable_multiplier ** max(failures, 0))
    delay = rng.uniform(window / 2, window)  # half jitter keeps a floor so storms spread but still back off
    return max(delay, retry_after or 0.0)


def decide_on_error(
    error: ProvisionError, *, failures: int, policy: RetryPolicy, now: datetime, rng: random.Random
) -> RetryLater | Fail:
    """What to do with a step that raised ``error`` after in-process retries (pure, STYLE 12)."""
    info: dict[str, Any] = error.to_dict()
    if not error.transient:
        reason = (
            FailureReason.INVALID_DATABASE
            if error.kind == "invalid_database"
            else FailureReason.PERMANENT_ERROR
        )
        return Fail(reason, info)
    if failures >= policy.budget:
        info["attempts"] = failures + 1
        return Fail(FailureReason.RETRIES_EXHAUSTED, info)
    delay = durable_delay(policy, failures, getattr(error, "retry_after", None), rng)
    return RetryLater(now + timedelta(seconds=delay), info)


def decide_on_renewal_error(
    error: ProvisionError, *, attempt: Any, policy: RenewalPolicy, now: datetime, rng: random.Random
) -> RetryLater | Fail:
    """What to do when a PROVISIONED step (renewal, push or check) raised ``error``."""
    info: dict[str, Any] = error.to_dict()
    if error.kind == "renewal_rejected":
        if attempt.failures == 0:
            return RetryLater(now + timedelta(seconds=policy.reject_confirm_s), info)
        return Fail(FailureReason.RENEWAL_REJECTED, info)
    if not error.transient:
        return Fail(FailureReason.PERMANENT_ERROR, info)
    # The budget counts from this renewal's first failure, not from when it fell due: an
    # imported, long-overdue token or a worker back from a long outage still gets its retries
    # (issue 16 item 4). The runner stores ``renewal_failing_since`` with the first RetryLater.
    since = attempt.renewal_failing_since or now
    if (now - since).total_seconds() >= policy.give_up_after:
        info["attempts"] = attempt.failures + 1
        return Fail(FailureReason.RETRIES_EXHAUSTED, info)
    window = min(policy.maximum, policy.initial * 2 ** attempt.failures)
    after = getattr(error, "retry_after", None) or 0.0
    return RetryLater(now + timedelta(seconds=max(rng.uniform(window / 2, window), after)), info)
