"""Every step before PROVISIONED, driven with a recording fake client: the exact decision and calls."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from unit.fakes import QBO_CONFIG, T0, Call, FakeClient, FakePorts, Token, make_attempt, ms

from engine.clock import FakeClock
from engine.errors import ApiTimeoutError, ProviderRejectedError, ServiceUnavailableError
from states.decisions import Advance, Fail, RetryLater, WaitForCallback
from states.handlers import (
    HANDLERS,
    handle_callback_received,
    handle_new,
    handle_redirected,
    handle_token_issued,
)
from states.model import FailureReason, Flow, State, Trigger
from states.ports import StepSettings

TAG = "provision-attempt-att-1"
QBO_INTERVAL = 13_046_400
QUICK_CONFIG = {**QBO_CONFIG, "oauth.user.token": "qyprd-user-token",
                "oauth.user.token.secret": "user-token-secret", "quickbooks.realm.id": "123146096291789"}
APP_PARAMS = {"apiKey": "dev-consumer-key", "apiSecret": "dev-consumer-secret",
              "callbackUrl": "https://app.example.com/cb"}
OAUTH1_CALLBACK = {"oauth_token": "rt-1", "realmId": "123146096291789", "oauth_verifier": "v-1",
                   "state": "att-1.nonce-1", "dataSource": "QBO"}


def redirect(url: str) -> Advance:
    """The decision of a first redirect at ``T0``: the default 30-minute wait for the user."""
    deadline = T0 + timedelta(minutes=30)
    return Advance(Trigger.REDIRECT,
                   changes={"state_nonce_hash": "digest(att-1.nonce-1)", "deadline_at": deadline},
                   secrets={"redirect_url": url}, next_run_at=deadline)


def test_every_live_state_has_a_handler() -> None:
    assert set(HANDLERS) == {State.NEW, State.TOKEN_ISSUED, State.REDIRECTED, State.CALLBACK_RECEIVED,
                             State.PROVISIONED, State.DISCONNECTING}


# --- NEW -----------------------------------------------------------------------------------------


def test_new_oauth1_asks_for_a_request_token(client: FakeClient, ports: FakePorts) -> None:
    client.script("request_token", Token("rt-1", "rts-1"))
    decision = handle_new(make_attempt(State.NEW, Flow.OAUTH1), ports)
    assert decision == Advance(
        Trigger.ISSUE_TOKEN,
        changes={"request_token_hash": "digest(rt-1)"},
        secrets={"request_token": "rt-1", "request_token_secret": "rts-1"},
        next_run_at=T0,  # the redirect step is due at once
    )
    assert client.calls == [Call("request_token", ("quickbooks",), {
        "api_key": "dev-consumer-key", "api_secret": "dev-consumer-secret",
        "callback_url": "https://app.example.com/cb"})]


def test_new_oauth1_retries_a_transient_failure_in_process(client: FakeClient, clock: FakeClock) -> None:
    ports = FakePorts(client, clock, max_tries=3)
    client.script("request_token", ServiceUnavailableError("HTTP 503"), Token("rt-2", "rts-2"))
    decision = handle_new(make_attempt(State.NEW, Flow.OAUTH1), ports)
    assert isinstance(decision, Advance) and decision.secrets["request_token"] == "rt-2"
    assert [c.method for c in client.calls] == ["request_token", "request_token"]
    assert client.calls[0] == client.calls[1] and ports.try_numbers == [1, 2]


def test_new_oauth1_lets_a_permanent_error_through(client: FakeClient, clock: FakeClock) -> None:
    ports = FakePorts(client, clock, max_tries=3)
    client.script("request_token", ProviderRejectedError("bad consumer key"))
    with pytest.raises(ProviderRejectedError):
        handle_new(make_attempt(State.NEW, Flow.OAUTH1), ports)
    assert ports.try_numbers == [1]  # never retried in process


def test_new_oauth2_redirects_with_scope_and_a_30_minute_deadline(client: FakeClient,
                                                                  ports: FakePorts) -> None:
    client.script("oauth_url", "https://consent.example/1")
    assert handle_new(make_attempt(State.NEW, Flow.OAUTH2), ports) == redirect("https://consent.example/1")
    assert client.calls == [Call("oauth_url", ("quickbooks", {
        **APP_PARAMS, "scope": "com.intuit.quickbooks.accounting", "authentication.type": "oauth2",
        "state": "att-1.nonce-1"}))]


def test_new_oauth2_honours_the_attempts_wait_then_the_settings(client: FakeClient, clock: FakeClock) -> None:
    client.script("oauth_url", "u1", "u2")
    ports = FakePorts(client, clock, settings=StepSettings(callback_wait_s=600))
    own = handle_new(make_attempt(State.NEW, Flow.OAUTH2, element="sfdc", callback_wait_s=120), ports)
    default = handle_new(make_attempt(State.NEW, Flow.OAUTH2, element="sfdc"), ports)
    assert isinstance(own, Advance) and own.changes["deadline_at"] == T0 + timedelta(seconds=120)
    assert isinstance(default, Advance) and default.next_run_at == T0 + timedelta(seconds=600)
    # sfdc has no extra URL parameters; each redirect gets a fresh nonce.
    assert [c.args[1]["state"] for c in client.calls] == ["att-1.nonce-1", "att-1.nonce-2"]
    assert "scope" not in client.calls[0].args[1]


def test_new_oauth2_passes_a_configured_scope(client: FakeClient, ports: FakePorts) -> None:
    client.script("oauth_url", "u")
    handle_new(make_attempt(State.NEW, Flow.OAUTH2, element="sfdc",
                            config={**QBO_CONFIG, "scope": "api refresh_token"}), ports)
    assert client.calls[0].args[1]["scope"] == "api refresh_token"


def _quick_body(config: dict[str, Any], *, tags: list[str] | None = None) -> dict[str, Any]:
    return {"element": {"key": "quickbooks"},
            "configuration": {"quickbooks.datasource": "QBO", **config},
            "tags": tags or [TAG], "name": "Acme books", "externalAuthentication": "initial"}


def _instance(instance_id: int, **config: Any) -> dict[str, Any]:
    return {"id": instance_id, "token": f"inst-token-{instance_id}", "configuration": config}


def test_new_quick_creates_the_instance_and_schedules_renewal(client: FakeClient, ports: FakePorts) -> None:
    granted = ms(T0 - timedelta(days=1))
    client.script("create_instance", _instance(
        42, **{"oauth.user.token": "qyprd-user-token", "oauth.user.token.secret": "user-token-secret",
               "oauth.user.refresh_interval": str(QBO_INTERVAL), "oauth.user.refresh_time": str(granted),
               "oauth.user.refresh_token": ""}))  # empty tokens are not kept
    attempt = make_attempt(State.NEW, Flow.QUICK, config=QUICK_CONFIG, tags=("team-a",))
    decision = handle_new(attempt, ports)
    due = T0 - timedelta(days=1) + timedelta(seconds=QBO_INTERVAL) - timedelta(minutes=15)
    assert decision == Advance(
        Trigger.QUICK_PROVISION,
        changes={"instance_id": "42", "refresh_time": granted, "refresh_interval_s": QBO_INTERVAL,
                 "next_renewal_at": due},
        secrets={"instance_token": "inst-token-42", "push_pending": False,
                 "user_tokens": {"oauth.user.token": "qyprd-user-token",
                                 "oauth.user.token.secret": "user-token-secret"}},
        next_run_at=due,
    )
    body = _quick_body({**QUICK_CONFIG, "oauth.user.refresh_interval": str(QBO_INTERVAL),
                        "oauth.user.refresh_time": str(ms(T0))}, tags=["team-a", TAG])
    assert client.calls == [Call("create_instance", (body,))]  # a first run does not look the tag up


def test_new_quick_falls_back_to_the_request_when_the_answer_has_no_configuration(
        client: FakeClient, ports: FakePorts) -> None:
    client.script("create_instance", {"id": 5})
    config = {**QUICK_CONFIG, "oauth.user.refresh_interval": "8640000"}
    decision = handle_new(make_attempt(State.NEW, Flow.QUICK, config=config), ports)
    assert isinstance(decision, Advance)
    assert decision.changes == {"instance_id": "5", "refresh_time": ms(T0), "refresh_interval_s": 8_640_000,
                                "next_renewal_at": T0 + timedelta(seconds=8_640_000 - 900)}
    assert decision.secrets == {"instance_token": None, "user_tokens": {}, "push_pending": False}


def test_a_repeated_quick_step_adopts_the_instance_tagged_for_it(client: FakeClient,
                                                                 ports: FakePorts) -> None:
    client.script("find_instances_by_tag", [_instance(9), _instance(7)])
    decision = handle_new(make_attempt(State.NEW, Flow.QUICK, config=QUICK_CONFIG, runs=2), ports)
    assert isinstance(decision, Advance) and decision.trigger is Trigger.QUICK_PROVISION
    assert decision.changes["instance_id"] == "7"  # the same pick on every worker
    assert decision.secrets["instance_token"] == "inst-token-7"
    assert decision.note == "adopted instance 7 found by tag"
    assert client.calls == [Call("find_instances_by_tag", (TAG,))]  # and no second POST


def test_a_repeated_quick_step_creates_when_nothing_is_tagged(client: FakeClient, ports: FakePorts) -> None:
    client.script("find_instances_by_tag", [])
    client.script("create_instance", _instance(8))
    decision = handle_new(make_attempt(State.NEW, Flow.QUICK, config=QUICK_CONFIG, runs=2), ports)
    assert isinstance(decision, Advance) and decision.changes["instance_id"] == "8" and decision.note is None
    assert [c.method for c in client.calls] == ["find_instances_by_tag", "create_instance"]


def test_a_timed_out_create_is_looked_up_after_the_settle_time(client: FakeClient, clock: FakeClock) -> None:
    """POST /instances timed out: no in-process retry (the platform may still commit it); the step
    records when it was sent, and its next run, a settle time later, adopts the instance by tag."""
    ports = FakePorts(client, clock, max_tries=3, settings=StepSettings(create_settle_s=90))
    client.script("create_instance", ApiTimeoutError("read timed out"))
    attempt = make_attempt(State.NEW, Flow.QUICK, config=QUICK_CONFIG)
    first = handle_new(attempt, ports)
    assert isinstance(first, RetryLater) and first.at == T0 + timedelta(seconds=90)
    assert first.secrets == {"create_sent_at": T0.isoformat()}
    assert [c.method for c in client.calls] == ["create_instance"] and ports.try_numbers == [1]
    clock.advance(90)
    client.script("find_instances_by_tag", [_instance(11)])
    again = make_attempt(State.NEW, Flow.QUICK, config=QUICK_CONFIG, runs=2,
                         secrets={"create_sent_at": T0.isoformat()})
    decision = handle_new(again, ports)
    assert isinstance(decision, Advance) and decision.changes["instance_id"] == "11"
    assert decision.note == "adopted instance 11 found by tag"
    assert [c.method for c in client.calls] == ["create_instance", "find_instances_by_tag"]


# --- TOKEN_ISSUED and REDIRECTED -------------------------------------------------------------------


def test_token_issued_redirects_with_the_request_token(client: FakeClient, ports: FakePorts) -> None:
    client.script("oauth_url", "https://consent.example/oauth1")
    attempt = make_attempt(State.TOKEN_ISSUED, Flow.OAUTH1,
                           secrets={"request_token": "rt-1", "request_token_secret": "rts-1"})
    assert handle_token_issued(attempt, ports) == redirect("https://consent.example/oauth1")
    assert client.calls == [Call("oauth_url", ("quickbooks", {
        **APP_PARAMS, "requestToken": "rt-1", "state": "att-1.nonce-1"}))]


def test_redirected_waits_until_the_deadline_then_fails(client: FakeClient, clock: FakeClock,
                                                        ports: FakePorts) -> None:
    deadline = T0 + timedelta(seconds=60)
    attempt = make_attempt(State.REDIRECTED, Flow.OAUTH2, deadline_at=deadline)
    assert handle_redirected(attempt, ports) == WaitForCallback(deadline)
    clock.advance(59)
    assert handle_redirected(attempt, ports) == WaitForCallback(deadline)
    clock.advance(1)  # the deadline itself is too late
    assert handle_redirected(attempt, ports) == Fail(FailureReason.CALLBACK_TIMEOUT, {
        "kind": "callback_timeout", "message": "no callback before the deadline",
        "hint": "Start a new attempt (or `provision restart ID`) and ask the user to consent in time."})
    assert client.calls == []


# --- CALLBACK_RECEIVED -----------------------------------------------------------------------------


def _oauth1_received(**columns: Any) -> Any:
    return make_attempt(State.CALLBACK_RECEIVED, Flow.OAUTH1, secrets={
        "callback": OAUTH1_CALLBACK, "request_token": "rt-1", "request_token_secret": "rts-1"}, **columns)


OAUTH1_BODY = {
    "element": {"key": "quickbooks"},
    "providerData": {"oauth_token": "rt-1", "realmId": "123146096291789", "oauth_verifier": "v-1",
                     "secret": "rts-1", "state": "att-1.nonce-1", "dataSource": "QBO"},
    "configuration": {"filter.response.nulls": True, **QBO_CONFIG},
    "tags": [TAG],
    "name": "Acme books",
}


def test_callback_received_oauth1_creates_the_instance(client: FakeClient, ports: FakePorts) -> None:
    granted = ms(T0) - 5_000  # the platform's grant time wins over ours
    client.script("create_instance", _instance(
        42, **{"oauth.user.token": "access-1", "oauth.user.token.secret": "access-secret-1",
               "oauth.user.refresh_interval": str(QBO_INTERVAL), "oauth.user.refresh_time": str(granted),
               "oauth.api.secret": "dev-consumer-secret"}))
    decision = handle_callback_received(_oauth1_received(), ports)
    due = T0 - timedelta(seconds=5) + timedelta(seconds=QBO_INTERVAL - 900)
    assert decision == Advance(
        Trigger.PROVISION,
        changes={"instance_id": "42", "refresh_time": granted, "refresh_interval_s": QBO_INTERVAL,
                 "next_renewal_at": due, "realm_id": "123146096291789"},
        secrets={"instance_token": "inst-token-42", "push_pending": False,
                 "user_tokens": {"oauth.user.token": "access-1",
                                 "oauth.user.token.secret": "access-secret-1"}},
        next_run_at=due,
    )
    assert client.calls == [Call("create_instance", (OAUTH1_BODY,))]


def test_callback_received_oauth2_sends_the_code_and_uses_the_elements_interval(
        client: FakeClient, ports: FakePorts) -> None:
    client.script("create_instance", _instance(
        3, **{"oauth.user.token": "at-1", "oauth.user.refresh_token": "rt-1"}))
    attempt = make_attempt(State.CALLBACK_RECEIVED, Flow.OAUTH2, element="sfdc",
                           secrets={"callback": {"code": "c-1", "state": "att-1.nonce-1"}})
    decision = handle_callback_received(attempt, ports)
    assert decision == Advance(
        Trigger.PROVISION,
        changes={"instance_id": "3", "refresh_time": ms(T0), "refresh_interval_s": 3600,
                 "next_renewal_at": T0 + timedelta(seconds=3600 - 360)},
        secrets={"instance_token": "inst-token-3", "push_pending": False,
                 "user_tokens": {"oauth.user.token": "at-1", "oauth.user.refresh_token": "rt-1"}},
        next_run_at=T0 + timedelta(seconds=3240),
    )
    assert client.calls == [Call("create_instance", ({
        "element": {"key": "sfdc"}, "providerData": {"code": "c-1"}, "configuration": QBO_CONFIG,
        "tags": [TAG], "name": "Acme books"},))]


def test_an_element_without_an_interval_is_provisioned_without_a_renewal(
        client: FakeClient, ports: FakePorts) -> None:
    client.script("create_instance", {"id": 6, "token": "t"})
    attempt = make_attempt(State.CALLBACK_RECEIVED, Flow.OAUTH1, element="acme-erp",
                           secrets={"callback": OAUTH1_CALLBACK, "request_token_secret": "rts-1"})
    decision = handle_callback_received(attempt, ports)
    assert isinstance(decision, Advance)
    assert decision.changes == {"instance_id": "6", "refresh_time": ms(T0), "realm_id": "123146096291789"}
    assert decision.next_run_at is None


def test_a_repeated_callback_step_adopts_the_tagged_instance(client: FakeClient, ports: FakePorts) -> None:
    client.script("find_instances_by_tag", [_instance(42)])
    decision = handle_callback_received(_oauth1_received(runs=2), ports)
    assert isinstance(decision, Advance) and decision.trigger is Trigger.PROVISION
    assert decision.changes["instance_id"] == "42" and decision.note == "adopted instance 42 found by tag"
    assert client.calls == [Call("find_instances_by_tag", (TAG,))]


def test_verifier_already_used_on_a_repeat_adopts_what_the_earlier_try_created(
        client: FakeClient, ports: FakePorts) -> None:
    """The lease was taken over after the first try's POST: the tag lookup raced its commit."""
    client.script("find_instances_by_tag", [], [_instance(42)])
    client.script("create_instance", ProviderRejectedError("oauth_problem=token_rejected"))
    decision = handle_callback_received(_oauth1_received(runs=2), ports)
    assert isinstance(decision, Advance) and decision.changes["instance_id"] == "42"
    assert decision.note == "adopted instance 42 found by tag"
    assert client.calls == [Call("find_instances_by_tag", (TAG,)), Call("create_instance", (OAUTH1_BODY,)),
                            Call("find_instances_by_tag", (TAG,))]


def test_verifier_already_used_on_a_first_run_is_the_providers_verdict(
        client: FakeClient, ports: FakePorts) -> None:
    client.script("create_instance", ProviderRejectedError("oauth_problem=token_rejected"))
    with pytest.raises(ProviderRejectedError):
        handle_callback_received(_oauth1_received(), ports)
    assert [c.method for c in client.calls] == ["create_instance"]  # no lookup: nothing ran before


def test_verifier_already_used_with_nothing_to_adopt_is_raised(client: FakeClient, ports: FakePorts) -> None:
    client.script("find_instances_by_tag", [], [])
    client.script("create_instance", ProviderRejectedError("oauth_problem=token_rejected"))
    with pytest.raises(ProviderRejectedError):
        handle_callback_received(_oauth1_received(runs=2), ports)
    assert [c.method for c in client.calls] == ["find_instances_by_tag", "create_instance",
                                                "find_instances_by_tag"]


def test_other_errors_on_a_repeat_are_not_taken_for_a_used_verifier(client: FakeClient,
                                                                    ports: FakePorts) -> None:
    client.script("find_instances_by_tag", [])
    client.script("create_instance", ServiceUnavailableError("HTTP 503"))
    with pytest.raises(ServiceUnavailableError):
        handle_callback_received(_oauth1_received(runs=2), ports)
    assert [c.method for c in client.calls] == ["find_instances_by_tag", "create_instance"]


def test_reauthorize_reauthenticates_the_existing_instance_with_put(client: FakeClient,
                                                                    ports: FakePorts) -> None:
    client.script("update_instance", {"id": 42, "configuration": {
        "oauth.user.token": "at-2", "oauth.user.refresh_token": "rt-2",
        "oauth.user.refresh_interval": "3600", "oauth.user.refresh_time": str(ms(T0))}})
    # The instance still shows the rejected tokens (valid false): nothing changed, so PUT.
    client.script("get_instance", {"id": 42, "valid": False, "configuration": {
        "oauth.user.token": "at-1", "oauth.user.refresh_time": str(ms(T0) - 1)}})
    attempt = make_attempt(State.CALLBACK_RECEIVED, Flow.OAUTH2, instance_id="42", runs=2,
                           refresh_time=ms(T0) - 1, secrets={
        "callback": {"code": "c-2", "realmId": "123146096291789"}, "instance_token": "inst-token-42",
        "reauth_sent_at": T0.isoformat()})
    decision = handle_callback_received(attempt, ports)
    assert decision == Advance(
        Trigger.PROVISION,
        changes={"instance_id": "42", "refresh_time": ms(T0), "refresh_interval_s": 3600,
                 "next_renewal_at": T0 + timedelta(seconds=3240), "realm_id": "123146096291789"},
        secrets={"instance_token": "inst-token-42",  # the PUT answer has none: keep ours
                 "user_tokens": {"oauth.user.token": "at-2", "oauth.user.refresh_token": "rt-2"},
                 "push_pending": False, "reauth_sent_at": None},
        next_run_at=T0 + timedelta(seconds=3240),
        note="re-authenticated instance 42",
    )
    body = {"element": {"key": "quickbooks"}, "providerData": {"code": "c-2", "realmId": "123146096291789"},
            "configuration": {"authentication.type": "oauth2", **QBO_CONFIG}, "tags": [TAG],
            "name": "Acme books"}
    # Same instance, new consent: no tag lookup and no POST, even on a repeat.
    assert client.calls == [Call("get_instance", ("42",), {}),
                            Call("update_instance", ("42", body), {"method": "PUT", "reauthenticate": True})]


def test_a_realm_held_by_a_live_attempt_fails_the_step_before_any_platform_call(
        client: FakeClient, ports: FakePorts) -> None:
    ports.realm_holders["123146096291789"] = "live-attempt-7"
    decision = handle_callback_received(_oauth1_received(), ports)
    assert isinstance(decision, Fail) and decision.reason is FailureReason.DUPLICATE_CONNECTION
    assert decision.changes == {"realm_id": "123146096291789"}
    assert decision.error is not None and decision.error["live_attempt"] == "live-attempt-7"
    assert "live-attempt-7" in decision.error["message"] and "--replace" in decision.error["hint"]
    assert client.calls == []  # no instance created, not even a tag look-up


def test_the_attempt_it_replaces_may_hold_the_realm(client: FakeClient, ports: FakePorts) -> None:
    ports.realm_holders["123146096291789"] = "old-attempt"
    client.script("create_instance", _instance(42))
    attempt = replace(_oauth1_received(), replaces="old-attempt")
    decision = handle_callback_received(attempt, ports)
    assert isinstance(decision, Advance) and decision.changes["realm_id"] == "123146096291789"


def test_a_quick_attempt_whose_realm_another_live_attempt_took_fails_before_any_platform_call(
        client: FakeClient, ports: FakePorts) -> None:
    # A restarted quick attempt: meanwhile another attempt took its (stale) claim over.
    ports.realm_holders["123146096291789"] = "live-attempt-7"
    attempt = make_attempt(State.NEW, Flow.QUICK, config=QUICK_CONFIG, realm_id="123146096291789")
    decision = handle_new(attempt, ports)
    assert isinstance(decision, Fail) and decision.reason is FailureReason.DUPLICATE_CONNECTION
    assert decision.error is not None and decision.error["live_attempt"] == "live-attempt-7"
    assert client.calls == []


def test_a_quick_attempt_holding_its_realm_is_provisioned(client: FakeClient, ports: FakePorts) -> None:
    client.script("create_instance", _instance(42))
    attempt = make_attempt(State.NEW, Flow.QUICK, config=QUICK_CONFIG, realm_id="123146096291789")
    assert isinstance(handle_new(attempt, ports), Advance)
    assert ports.realm_holders == {"123146096291789": attempt.id}
