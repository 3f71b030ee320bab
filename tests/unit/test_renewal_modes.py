"""The PROVISIONED step in each renewal mode, with a recording fake client (DESIGN §7)."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from unit.fakes import (
    T0,
    Call,
    FakeClient,
    FakePorts,
    Reconnect,
    RenewalRejectedError,
    Tokens,
    make_attempt,
    ms,
)

from engine.clock import FakeClock
from engine.errors import ServiceUnavailableError
from states.attempt import Attempt
from states.decisions import Advance, Fail, Stay
from states.handlers import HANDLERS, handle_provisioned_or_check
from states.model import FailureReason, Flow, State, Trigger
from states.renewal import REAUTHORIZE_HINT, handle_provisioned, renewal_mode

QBO_INTERVAL = 13_046_400


def provisioned(flow: Flow, user_tokens: dict[str, Any], **columns: Any) -> Attempt:
    """An engine-owned attempt in PROVISIONED whose renewal is due now (``T0``)."""
    fields: dict[str, Any] = {"instance_id": "42", "refresh_interval_s": 3600,
                              "refresh_time": ms(T0 - timedelta(seconds=3240)), "next_renewal_at": T0,
                              "renewals": 2, "renewal_owner": "engine"}
    fields.update(columns)
    return make_attempt(State.PROVISIONED, flow, secrets={"user_tokens": user_tokens,
                                                          "instance_token": "inst-token-42"}, **fields)


def applied(attempt: Attempt, decision: Advance | Stay) -> Attempt:
    """``attempt`` as the engine leaves it after committing ``decision``."""
    return replace(attempt, **decision.changes, secrets={**attempt.secrets, **decision.secrets})


OAUTH2_TOKENS = {"oauth.user.token": "at-1", "oauth.user.refresh_token": "rt-1"}
OAUTH1_TOKENS = {"oauth.user.token": "tok-1", "oauth.user.token.secret": "sec-1"}


@pytest.mark.parametrize(("flow", "tokens", "mode"), [
    (Flow.OAUTH2, OAUTH2_TOKENS, "oauth2"),
    (Flow.OAUTH2, {"oauth.user.token": "at-1"}, "platform"),  # no refresh token: the platform refreshes
    (Flow.OAUTH1, OAUTH1_TOKENS, "oauth1"),
    (Flow.QUICK, OAUTH1_TOKENS, "oauth1"),
    (Flow.OAUTH1, {"oauth.user.token": "tok-1"}, "platform"),  # a token without its secret
    (Flow.OAUTH1, {**OAUTH2_TOKENS}, "platform"),  # a refresh token outside the OAuth2 flow
    (Flow.QUICK, {}, "platform"),
    (Flow.QUICK, OAUTH2_TOKENS, "platform"),  # an OAuth1 quick start (no authentication.type)
])
def test_renewal_mode(flow: Flow, tokens: dict[str, str], mode: str) -> None:
    assert renewal_mode(provisioned(flow, tokens)) == mode


@pytest.mark.parametrize(("flow", "owner", "mode"), [
    (Flow.OAUTH2, None, "platform"),  # consent flows: the platform owns renewal by default
    (Flow.OAUTH1, None, "platform"),
    (Flow.QUICK, None, "oauth2"),  # quick: the engine owns it by default
    (Flow.QUICK, "platform", "platform"),
    (Flow.OAUTH2, "engine", "oauth2"),
])
def test_the_owner_decides_before_the_tokens(flow: Flow, owner: str | None, mode: str) -> None:
    tokens = OAUTH2_TOKENS if flow is not Flow.OAUTH1 else OAUTH1_TOKENS
    attempt = provisioned(flow, tokens, renewal_owner=owner)
    attempt.secrets["config"] = {"authentication.type": "oauth2"} if flow is Flow.QUICK else {}
    assert renewal_mode(attempt) == mode


def test_provisioned_is_the_renewal_handler() -> None:
    # Wrapped by the follow-up duplicate check (states/exactly_once.py), which delegates when none is due.
    assert HANDLERS[State.PROVISIONED] is handle_provisioned_or_check


def test_oauth2_refresh_grant_stores_the_rotated_token_then_pushes_it(client: FakeClient,
                                                                      ports: FakePorts) -> None:
    attempt = provisioned(Flow.OAUTH2, {**OAUTH2_TOKENS, "oauth.user.token.expires": "3600"})
    client.script("refresh_oauth2", Tokens("at-2", "rt-2"))
    renewed = handle_provisioned(attempt, ports)
    due = T0 + timedelta(seconds=3600 - 360)
    rotated = {"oauth.user.token": "at-2", "oauth.user.refresh_token": "rt-2",
               "oauth.user.token.expires": "3600"}
    assert renewed == Advance(
        Trigger.RENEW,
        changes={"refresh_time": ms(T0), "next_renewal_at": due, "renewals": 3},
        secrets={"user_tokens": rotated, "push_pending": True},  # committed before any push
        next_run_at=T0,
        note="refresh-token grant",
    )
    assert client.calls == [Call("refresh_oauth2", ("dev-consumer-key", "dev-consumer-secret", "rt-1"))]
    assert attempt.secrets["user_tokens"]["oauth.user.refresh_token"] == "rt-1"  # the input is not mutated

    # The next run of the step pushes the rotated tokens to the instance, and nothing else.
    assert isinstance(renewed, Advance)
    client.script("update_instance", {"id": 42})
    pushed = handle_provisioned(applied(attempt, renewed), ports)
    assert pushed == Stay(secrets={"push_pending": False}, next_run_at=due)
    assert client.calls[1:] == [Call("update_instance", ("42", {"configuration": {
        **rotated, "oauth.user.refresh_time": str(ms(T0))}}))]


def test_a_failed_push_is_retried_without_refreshing_again(client: FakeClient, ports: FakePorts) -> None:
    attempt = provisioned(Flow.OAUTH2, OAUTH2_TOKENS)
    attempt.secrets["push_pending"] = True
    client.script("update_instance", ServiceUnavailableError("HTTP 503"), {"id": 42})
    with pytest.raises(ServiceUnavailableError):
        handle_provisioned(attempt, ports)
    assert handle_provisioned(attempt, ports) == Stay(secrets={"push_pending": False}, next_run_at=T0)
    # Only the push is repeated: the token is never rotated twice.
    assert [c.method for c in client.calls] == ["update_instance", "update_instance"]


def test_oauth1_reconnect_inside_the_window_renews(client: FakeClient, ports: FakePorts) -> None:
    granted = T0 - timedelta(seconds=QBO_INTERVAL - 900)
    attempt = provisioned(Flow.OAUTH1, OAUTH1_TOKENS, refresh_interval_s=QBO_INTERVAL,
                          refresh_time=ms(granted))
    client.script("reconnect_oauth1", Reconnect(0, token="tok-2", secret="sec-2"))
    renewed = handle_provisioned(attempt, ports)
    assert renewed == Advance(
        Trigger.RENEW,
        changes={"refresh_time": ms(T0), "next_renewal_at": T0 + timedelta(seconds=QBO_INTERVAL - 900),
                 "renewals": 3},
        secrets={"user_tokens": {"oauth.user.token": "tok-2", "oauth.user.token.secret": "sec-2"},
                 "push_pending": True},
        next_run_at=T0,
        note="OAuth1 Reconnect",
    )
    # OAuth 1.0a signing needs the consumer secret and the token secret beside key and token.
    assert client.calls == [
        Call("reconnect_oauth1", ("dev-consumer-key", "dev-consumer-secret", "tok-1", "sec-1"))]


def test_oauth1_reconnect_outside_the_window_waits_for_it(client: FakeClient, ports: FakePorts) -> None:
    """Intuit 212 (too early): wait until 30 days before the 180-day expiry, plus an hour."""
    attempt = provisioned(Flow.QUICK, OAUTH1_TOKENS, refresh_time=ms(T0 - timedelta(days=100)))
    client.script("reconnect_oauth1", Reconnect(212, "Token Refresh Window Out of Bounds"))
    assert handle_provisioned(attempt, ports) == Stay(next_run_at=T0 + timedelta(days=50, hours=1))


@pytest.mark.parametrize("refresh_time", [ms(T0 - timedelta(days=160)), None])
def test_oauth1_212_when_our_records_say_the_window_is_open_fails(
        client: FakeClient, ports: FakePorts, refresh_time: int | None) -> None:
    attempt = provisioned(Flow.OAUTH1, OAUTH1_TOKENS, refresh_time=refresh_time)
    client.script("reconnect_oauth1", Reconnect(212, "Token Refresh Window Out of Bounds"))
    assert handle_provisioned(attempt, ports) == Fail(FailureReason.RENEWAL_REJECTED, {
        "kind": "renewal_rejected", "message": "Reconnect error 212: Token Refresh Window Out of Bounds",
        "hint": "Intuit says we are outside the Reconnect window although our records say otherwise; "
                + REAUTHORIZE_HINT})


def test_oauth1_reconnect_any_other_answered_code_fails(client: FakeClient, ports: FakePorts) -> None:
    client.script("reconnect_oauth1", Reconnect(24, "Invalid App Token"))
    decision = handle_provisioned(provisioned(Flow.OAUTH1, OAUTH1_TOKENS), ports)
    assert isinstance(decision, Fail) and decision.reason is FailureReason.RENEWAL_REJECTED
    assert decision.error is not None and decision.error["message"] == "Reconnect error 24: Invalid App Token"


def test_platform_managed_instance_is_watched(client: FakeClient, clock: FakeClock, ports: FakePorts) -> None:
    attempt = provisioned(Flow.OAUTH1, {}, refresh_interval_s=QBO_INTERVAL)
    client.script("get_instance", {"id": 42, "valid": True}, {"id": 42})
    assert handle_provisioned(attempt, ports) == Stay(next_run_at=T0 + timedelta(seconds=QBO_INTERVAL))
    clock.advance(10)
    no_interval = replace(attempt, refresh_interval_s=None)  # an hour when we know no interval
    assert handle_provisioned(no_interval, ports) == Stay(next_run_at=T0 + timedelta(seconds=3610))
    assert client.calls == [Call("get_instance", ("42",)), Call("get_instance", ("42",))]


def test_an_invalid_platform_managed_instance_needs_reauthorization(client: FakeClient,
                                                                    ports: FakePorts) -> None:
    client.script("get_instance", {"id": 42, "valid": False})
    assert handle_provisioned(provisioned(Flow.OAUTH2, {"oauth.user.token": "at-1"}), ports) == Fail(
        FailureReason.RENEWAL_REJECTED,
        {"kind": "renewal_rejected", "message": "instance 42 is no longer valid", "hint": REAUTHORIZE_HINT})


@pytest.mark.parametrize(("flow", "tokens", "method"), [
    (Flow.OAUTH2, OAUTH2_TOKENS, "refresh_oauth2"),
    (Flow.OAUTH1, OAUTH1_TOKENS, "reconnect_oauth1"),
    (Flow.QUICK, {}, "get_instance"),
])
def test_a_rejection_from_the_provider_is_raised_untouched(
        client: FakeClient, ports: FakePorts, flow: Flow, tokens: dict[str, str], method: str) -> None:
    """invalid_grant / Reconnect 270: the engine, not the handler, decides (see test_step_errors)."""
    rejection = RenewalRejectedError("provider answered invalid_grant", status=400)
    client.script(method, rejection)
    with pytest.raises(RenewalRejectedError) as raised:
        handle_provisioned(provisioned(flow, tokens), ports)
    assert raised.value is rejection and [c.method for c in client.calls] == [method]


def test_a_transient_refresh_failure_is_retried_in_process(client: FakeClient, clock: FakeClock) -> None:
    ports = FakePorts(client, clock, max_tries=3)
    client.script("refresh_oauth2", ServiceUnavailableError("HTTP 503"), Tokens("at-2", "rt-2"))
    decision = handle_provisioned(provisioned(Flow.OAUTH2, OAUTH2_TOKENS), ports)
    assert isinstance(decision, Advance)
    assert decision.secrets["user_tokens"]["oauth.user.refresh_token"] == "rt-2"
    assert ports.try_numbers == [1, 2] and client.calls[0] == client.calls[1]
