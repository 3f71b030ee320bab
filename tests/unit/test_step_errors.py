"""Error paths: what a handler lets through, and the decision the engine's pure classifiers make of it.

The handler raises; ``engine.core.retry.decide_on_error`` (steps before PROVISIONED) and
``decide_on_renewal_error`` (PROVISIONED) turn the error into RetryLater or Fail. The random jitter
is pinned to the low end of its window so every ``at`` is exact.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pytest
from unit.fakes import T0, FakeClient, FakePorts, RenewalRejectedError, make_attempt, ms

from engine.config import RenewalPolicy, RetryPolicy
from engine.core.retry import decide_on_error, decide_on_renewal_error
from engine.errors import (
    BadRequestError,
    ForbiddenError,
    InvalidDatabaseError,
    ProvisionError,
    RateLimitedError,
    ServiceUnavailableError,
)
from states.attempt import Attempt
from states.decisions import Fail, RetryLater
from states.handlers import HANDLERS
from states.model import FailureReason, Flow, State


class LowJitter(random.Random):
    """Always the lower bound of a jitter window."""

    def uniform(self, a: float, b: float) -> float:
        return a


def raised_by(attempt: Attempt, ports: FakePorts) -> ProvisionError:
    """Run ``attempt``'s handler and return the ``ProvisionError`` it let through."""
    with pytest.raises(ProvisionError) as raised:
        HANDLERS[attempt.state](attempt, ports)
    return raised.value


def new_oauth1(client: FakeClient, error: ProvisionError) -> Attempt:
    client.script("request_token", error)
    return make_attempt(State.NEW, Flow.OAUTH1)


def renewing(client: FakeClient, error: ProvisionError, *, failures: int = 0,
             flow: Flow = Flow.OAUTH2, failing_since: datetime | None = None) -> Attempt:
    if flow is Flow.OAUTH2:
        client.script("refresh_oauth2", error)
        tokens = {"oauth.user.token": "at-1", "oauth.user.refresh_token": "rt-1"}
    else:
        client.script("reconnect_oauth1", error)
        tokens = {"oauth.user.token": "tok-1", "oauth.user.token.secret": "sec-1"}
    # Engine-owned and on time (inside the lead, before the platform's own due time).
    return make_attempt(State.PROVISIONED, flow, instance_id="42", refresh_interval_s=3600,
                        refresh_time=ms(T0 - timedelta(seconds=3240)), next_renewal_at=T0, failures=failures,
                        renewal_failing_since=failing_since, secrets={"user_tokens": tokens},
                        renewal_owner="engine")


def on_error(error: ProvisionError, failures: int = 0) -> RetryLater | Fail:
    return decide_on_error(error, failures=failures, policy=RetryPolicy(), now=T0, rng=LowJitter())


def on_renewal_error(error: ProvisionError, attempt: Attempt, *,
                     now_after_due: float = 0) -> RetryLater | Fail:
    return decide_on_renewal_error(error, attempt=attempt, policy=RenewalPolicy(),
                                   now=T0 + timedelta(seconds=now_after_due), rng=LowJitter())


def info(error: ProvisionError, **extra: Any) -> dict[str, Any]:
    return {**error.to_dict(), **extra}


# --- steps before PROVISIONED --------------------------------------------------------------------


def test_a_transient_error_is_rescheduled_with_backoff(client: FakeClient, ports: FakePorts) -> None:
    error = raised_by(new_oauth1(client, ServiceUnavailableError("HTTP 503", status=503)), ports)
    assert on_error(error) == RetryLater(T0 + timedelta(seconds=2.5), info(error))  # 5 s window, half jitter
    assert on_error(error, failures=3) == RetryLater(T0 + timedelta(seconds=20), info(error))  # 40 s window


def test_retry_after_is_a_floor(client: FakeClient, ports: FakePorts) -> None:
    error = raised_by(new_oauth1(client, RateLimitedError("HTTP 429", retry_after=30)), ports)
    assert on_error(error) == RetryLater(T0 + timedelta(seconds=30), info(error))


def test_a_spent_budget_fails_as_retries_exhausted(client: FakeClient, ports: FakePorts) -> None:
    error = raised_by(new_oauth1(client, ServiceUnavailableError("HTTP 503")), ports)
    assert on_error(error, failures=6) == Fail(FailureReason.RETRIES_EXHAUSTED, info(error, attempts=7))


@pytest.mark.parametrize(("error", "reason"), [
    (BadRequestError("apiKey missing", status=400), FailureReason.PERMANENT_ERROR),
    (ForbiddenError("app disabled", status=403), FailureReason.PERMANENT_ERROR),
    (InvalidDatabaseError("invalid_database", status=400), FailureReason.INVALID_DATABASE),
])
def test_a_permanent_error_fails_at_once(client: FakeClient, ports: FakePorts, error: ProvisionError,
                                         reason: FailureReason) -> None:
    raised = raised_by(new_oauth1(client, error), ports)
    assert raised is error and on_error(raised) == Fail(reason, info(error))


# --- PROVISIONED ---------------------------------------------------------------------------------


def test_a_transient_renewal_failure_backs_off_from_a_minute(client: FakeClient, ports: FakePorts) -> None:
    error = ServiceUnavailableError("HTTP 503", status=503)
    first = renewing(client, error)
    assert on_renewal_error(raised_by(first, ports), first) == RetryLater(
        T0 + timedelta(seconds=30), info(error))
    later = renewing(client, error, failures=3)
    assert on_renewal_error(raised_by(later, ports), later) == RetryLater(
        T0 + timedelta(seconds=240), info(error))  # 8-minute window


def test_transient_renewal_failures_give_up_four_days_after_the_first_failure(client: FakeClient,
                                                                              ports: FakePorts) -> None:
    error = ServiceUnavailableError("HTTP 503")
    attempt = renewing(client, error, failures=90, failing_since=T0 + timedelta(days=1))
    raised = raised_by(attempt, ports)
    assert isinstance(on_renewal_error(raised, attempt, now_after_due=4 * 86400), RetryLater)
    assert on_renewal_error(raised, attempt, now_after_due=5 * 86400) == Fail(
        FailureReason.RETRIES_EXHAUSTED, info(error, attempts=91))


def test_the_first_failure_of_a_long_overdue_renewal_is_retried(client: FakeClient, ports: FakePorts) -> None:
    """Issue 16 item 4: the budget no longer counts from the due time."""
    error = ServiceUnavailableError("HTTP 503")
    attempt = renewing(client, error)
    assert isinstance(on_renewal_error(raised_by(attempt, ports), attempt, now_after_due=30 * 86400),
                      RetryLater)


@pytest.mark.parametrize(("flow", "message"), [
    (Flow.OAUTH2, "provider answered invalid_grant"),
    (Flow.OAUTH1, "Reconnect error 270: The OAuth access token has expired."),
])
def test_a_rejected_renewal_is_confirmed_once_then_fails(client: FakeClient, ports: FakePorts,
                                                         flow: Flow, message: str) -> None:
    """A worker whose lease expired may be about to store a rotated token: confirm after a minute."""
    error = RenewalRejectedError(message, status=400)
    first = renewing(client, error, flow=flow)
    assert on_renewal_error(raised_by(first, ports), first) == RetryLater(
        T0 + timedelta(seconds=60), info(error))
    again = renewing(client, error, flow=flow, failures=1)
    assert on_renewal_error(raised_by(again, ports), again) == Fail(
        FailureReason.RENEWAL_REJECTED, info(error))


def test_a_permanent_renewal_error_fails_at_once(client: FakeClient, ports: FakePorts) -> None:
    error = ForbiddenError("app disabled", status=403)
    attempt = renewing(client, error)
    assert on_renewal_error(raised_by(attempt, ports), attempt) == Fail(
        FailureReason.PERMANENT_ERROR, info(error))
