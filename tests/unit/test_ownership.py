"""One owner per token (DESIGN §7), quick OAuth2 starts and queue parking, at unit level."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from unit.fakes import T0, Call, FakeClient, FakePorts, Tokens, make_attempt, ms

from engine.clock import FakeClock
from engine.core.intake import validate_start
from engine.core.parking import Parking, is_platform_wide
from engine.core.starts import new_attempt, validate_items
from engine.errors import InvalidInputError, MissingConfigurationError, ProvisionError
from states.attempt import Attempt
from states.decisions import Advance, Fail, Stay
from states.model import FailureReason, Flow, State, Trigger
from states.ownership import REAUTHORIZE_HINT, watch_grace_s
from states.payloads import quick_body
from states.renewal import handle_provisioned

TOKENS = {"oauth.user.token": "at-1", "oauth.user.refresh_token": "rt-1"}
QUICK_OAUTH2 = {"oauth.api.key": "k", "oauth.api.secret": "s", "authentication.type": "oauth2",
                "oauth.user.refresh_token": "rt-1", "quickbooks.realm.id": "123"}


def attempt_at(flow: Flow, refresh_time: Any, owner: str | None, **config: str) -> Attempt:
    cfg = {**QUICK_OAUTH2, **config} if flow is Flow.QUICK else None
    return make_attempt(State.PROVISIONED, flow, config=cfg, instance_id="42", refresh_interval_s=3600,
                        refresh_time=ms(refresh_time), next_renewal_at=T0, renewal_owner=owner,
                        secrets={"user_tokens": dict(TOKENS)})


def instance(refresh_time: Any, **fields: Any) -> dict[str, Any]:
    return {"id": 42, "valid": True, "disabled": False, **fields, "configuration": {
        "oauth.user.refresh_time": str(ms(refresh_time)), "oauth.user.refresh_interval": "3600",
        "oauth.user.refresh_token": "rt-platform", "oauth.user.token": "at-platform"}}


# --- watching (platform-owned) --------------------------------------------------------------------

def test_a_watched_instance_refreshed_on_time_is_looked_at_again_after_its_next_due_time(
        client: FakeClient, ports: FakePorts) -> None:
    refreshed = T0 - timedelta(minutes=5)
    client.script("get_instance", instance(refreshed))
    due = refreshed + timedelta(hours=1)
    assert handle_provisioned(attempt_at(Flow.OAUTH2, T0 - timedelta(hours=1), None), ports) == Stay(
        changes={"refresh_time": ms(refreshed), "next_renewal_at": due},
        next_run_at=due + timedelta(seconds=360))
    assert client.calls == [Call("get_instance", ("42",))]  # watched, never refreshed


def test_a_refresh_time_that_stopped_advancing_needs_reauthorization(client: FakeClient,
                                                                     ports: FakePorts) -> None:
    stale = T0 - timedelta(hours=1, seconds=361)  # due an hour later, plus the grace, has passed
    client.script("get_instance", instance(stale))
    decision = handle_provisioned(attempt_at(Flow.OAUTH1, stale, None), ports)
    assert isinstance(decision, Fail) and decision.reason is FailureReason.RENEWAL_REJECTED
    assert decision.error is not None and decision.error["hint"] == REAUTHORIZE_HINT
    assert "did not refresh instance 42" in decision.error["message"]


def test_a_watch_run_at_its_deadline_decides_instead_of_looking_again_now(client: FakeClient,
                                                                           ports: FakePorts) -> None:
    # The watch is scheduled AT the deadline: a Stay due at that same instant would be due again at
    # once, and the step would run again and again without time moving (a livelock on a fake clock).
    at_deadline = T0 - timedelta(hours=1, seconds=360)
    client.script("get_instance", instance(at_deadline))
    decision = handle_provisioned(attempt_at(Flow.OAUTH2, at_deadline, None), ports)
    assert isinstance(decision, Fail) and decision.reason is FailureReason.RENEWAL_REJECTED


@pytest.mark.parametrize(("fields", "words"), [({"valid": False}, "no longer valid"),
                                                ({"disabled": True}, "is disabled")])
def test_an_invalid_or_disabled_watched_instance_needs_reauthorization(
        client: FakeClient, ports: FakePorts, fields: dict[str, bool], words: str) -> None:
    client.script("get_instance", instance(T0, **fields))
    decision = handle_provisioned(attempt_at(Flow.OAUTH2, T0, None), ports)
    assert isinstance(decision, Fail) and decision.error and words in decision.error["message"]


def test_the_watch_grace_is_a_tenth_of_the_interval_between_5_minutes_and_an_hour() -> None:
    assert [watch_grace_s(s) for s in (600, 3600, 86400, 13_046_400)] == [300, 360, 3600, 3600]


# --- engine-owned OAuth2: ahead of the platform, or adopting its refresh ---------------------------

def test_on_time_the_engine_refreshes_without_reading_the_instance(client: FakeClient,
                                                                   ports: FakePorts) -> None:
    client.script("refresh_oauth2", Tokens("at-2", "rt-2"))
    decision = handle_provisioned(attempt_at(Flow.QUICK, T0 - timedelta(seconds=3240), None), ports)
    assert isinstance(decision, Advance) and decision.note == "refresh-token grant"
    assert [c.method for c in client.calls] == ["refresh_oauth2"]


def test_late_the_engine_adopts_the_platforms_newer_tokens(client: FakeClient, ports: FakePorts) -> None:
    refreshed = T0 - timedelta(minutes=10)
    client.script("get_instance", instance(refreshed))
    decision = handle_provisioned(attempt_at(Flow.QUICK, T0 - timedelta(hours=3), "engine"), ports)
    due = refreshed + timedelta(seconds=3240)
    assert decision == Advance(
        Trigger.RENEW, changes={"refresh_time": ms(refreshed), "next_renewal_at": due, "renewals": 1},
        secrets={"user_tokens": {"oauth.user.token": "at-platform",
                                 "oauth.user.refresh_token": "rt-platform"}, "push_pending": False},
        next_run_at=due, note="adopted the platform's refresh")
    assert [c.method for c in client.calls] == ["get_instance"]  # the dead token is never presented


def test_late_but_the_platform_did_not_refresh_the_engine_refreshes(client: FakeClient,
                                                                   ports: FakePorts) -> None:
    old = T0 - timedelta(hours=3)
    client.script("get_instance", {**instance(old), "configuration": {
        "oauth.user.refresh_time": str(ms(old)), "oauth.user.refresh_token": "rt-1"}})
    client.script("refresh_oauth2", Tokens("at-2", "rt-2"))
    decision = handle_provisioned(attempt_at(Flow.QUICK, old, "engine"), ports)
    assert isinstance(decision, Advance) and decision.note == "refresh-token grant"
    assert [c.method for c in client.calls] == ["get_instance", "refresh_oauth2"]


# --- quick OAuth2 starts ----------------------------------------------------------------------------

def start(**config: str) -> Any:
    return validate_start(element="quickbooks", name="x", flow="quick", api_key=None, api_secret=None,
                          callback_url=None, tags=(), config=config, idempotency_key=None,
                          callback_wait_s=None)


def test_quick_starts_need_the_entries_of_their_authentication_type() -> None:
    with pytest.raises(MissingConfigurationError) as oauth2:
        start(**{"oauth.api.key": "k", "oauth.api.secret": "s", "authentication.type": "OAuth2"})
    assert oauth2.value.missing == ["oauth.user.refresh_token", "quickbooks.realm.id"]
    with pytest.raises(MissingConfigurationError) as oauth1:
        start(**{"oauth.api.key": "k", "oauth.api.secret": "s", "quickbooks.realm.id": "1"})
    assert oauth1.value.missing == ["oauth.user.token", "oauth.user.token.secret"]
    with pytest.raises(InvalidInputError, match="authentication.type must be oauth1 or oauth2"):
        start(**{**QUICK_OAUTH2, "authentication.type": "basic"})
    req = start(**QUICK_OAUTH2)  # an access token is optional
    assert req.renewal_owner.value == "engine" and req.config["authentication.type"] == "oauth2"


def test_the_quick_oauth2_body_has_the_oauth2_interval() -> None:
    body = quick_body(make_attempt(State.NEW, Flow.QUICK, config=QUICK_OAUTH2), T0)
    assert body["externalAuthentication"] == "initial"
    assert body["configuration"]["oauth.user.refresh_interval"] == "3600"
    assert body["configuration"]["oauth.user.refresh_token"] == "rt-1"


@pytest.mark.parametrize(("flow", "renewal", "owner"), [
    ("oauth1", None, "platform"), ("oauth2", None, "platform"), ("quick", None, "engine"),
    ("oauth2", "engine", "engine"), ("quick", "platform", "platform")])
def test_the_renewal_owner_defaults_by_flow_and_is_settable(flow: str, renewal: str | None,
                                                            owner: str) -> None:
    config = QUICK_OAUTH2 if flow == "quick" else {"oauth.api.key": "k", "oauth.api.secret": "s",
                                                   "oauth.callback.url": "https://app.example.com/cb"}
    req = validate_start(element="quickbooks", name="x", flow=flow, api_key=None, api_secret=None,
                         callback_url=None, tags=(), config=config, idempotency_key=None,
                         callback_wait_s=None, renewal=renewal)
    assert req.renewal_owner.value == owner


def test_an_unknown_renewal_owner_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="renewal: must be engine or platform"):
        validate_start(element="quickbooks", name="x", flow="quick", api_key=None, api_secret=None,
                       callback_url=None, tags=(), config=QUICK_OAUTH2, idempotency_key=None,
                       callback_wait_s=None, renewal="both")


# --- parking ---------------------------------------------------------------------------------------

class Rejected(ProvisionError):
    def __init__(self, kind: str) -> None:
        super().__init__("HTTP 401")
        self.kind = kind


def test_parking_backs_off_logs_once_and_clears(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(T0)
    parking = Parking(clock, initial_s=60, maximum_s=200)
    assert is_platform_wide(Rejected("unauthorized")) and is_platform_wide(Rejected("provider_unauthorized"))
    assert not is_platform_wide(Rejected("not_found"))
    with caplog.at_level(logging.INFO, logger="engine.core.parking"):
        parking.park(Rejected("unauthorized"))
        parking.park(Rejected("unauthorized"))  # the same batch: still one parking
        assert parking.seconds_left(clock()) == 60
        clock.advance(60)
        parking.park(Rejected("unauthorized"))
        assert parking.seconds_left(clock()) == 120
        clock.advance(120)
        parking.park(Rejected("unauthorized"))
        assert parking.seconds_left(clock()) == 200  # capped
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "ELEMENTS_USER_SECRET" in errors[0].getMessage()
    assert parking.parked and parking.reason and "no attempt was failed" in parking.reason
    parking.clear()
    assert not parking.parked and parking.seconds_left(clock()) == 0


def test_start_many_items_take_a_renewal_owner_too() -> None:
    items = [{"element": "quickbooks", "name": "a", "flow": "quick", "config": QUICK_OAUTH2,
              "renewal": "platform"},
             {"element": "quickbooks", "name": "b", "flow": "quick", "config": QUICK_OAUTH2}]
    owners = [new_attempt(r, T0).renewal_owner for r in validate_items(items)]
    assert owners == ["platform", "engine"]
    with pytest.raises(InvalidInputError, match=r"items\[0\]\.renewal"):
        validate_items([{**items[0], "renewal": "nobody"}])
