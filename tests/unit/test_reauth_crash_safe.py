"""The re-authentication PUT is crash-safe (issue 16 item 7): marker first, look before a repeat PUT."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from unit.fakes import T0, FakeClient, FakePorts, make_attempt, ms

from engine.clock import FakeClock
from engine.errors import ApiTimeoutError
from states.decisions import Advance, Stay
from states.handlers import handle_callback_received
from states.model import Flow, State, Trigger
from states.reauth import REAUTH_SENT_AT, already_reauthenticated

OLD_REFRESH = ms(T0 - timedelta(days=90))  # the attempt's tokens: those the provider rejected
CALLBACK = {"code": "c-2", "realmId": "123146096291789"}


def _attempt(**secrets: Any) -> Any:
    return make_attempt(State.CALLBACK_RECEIVED, Flow.OAUTH2, instance_id="42", runs=2,
                        refresh_time=OLD_REFRESH,
                        secrets={"callback": CALLBACK, "instance_token": "inst-token-42", **secrets})


def _instance(*, valid: bool, refresh_time: int, token: str) -> dict[str, Any]:
    return {"id": 42, "valid": valid, "token": "inst-token-42", "configuration": {
        "oauth.user.token": token, "oauth.user.refresh_token": f"r-{token}",
        "oauth.user.refresh_interval": "3600", "oauth.user.refresh_time": str(refresh_time)}}


def test_the_first_run_records_the_marker_and_calls_nothing(clock: FakeClock) -> None:
    client = FakeClient()
    decision = handle_callback_received(_attempt(), FakePorts(client, clock))
    assert decision == Stay(secrets={REAUTH_SENT_AT: T0.isoformat()}, next_run_at=T0)
    assert client.calls == []  # the code is not spent before the marker is committed


def test_a_repeat_after_a_put_that_landed_adopts_instead_of_putting_again(clock: FakeClock) -> None:
    client = FakeClient().script("get_instance", _instance(valid=True, refresh_time=ms(T0), token="at-2"))
    decision = handle_callback_received(_attempt(**{REAUTH_SENT_AT: T0.isoformat()}),
                                        FakePorts(client, clock))
    assert isinstance(decision, Advance) and decision.trigger is Trigger.PROVISION
    assert decision.changes["refresh_time"] == ms(T0)
    assert decision.secrets["user_tokens"] == {"oauth.user.token": "at-2",
                                               "oauth.user.refresh_token": "r-at-2"}
    assert decision.secrets[REAUTH_SENT_AT] is None
    assert decision.note == "adopted instance 42, re-authenticated by an earlier try"
    assert [c.method for c in client.calls] == ["get_instance"]  # no PUT with the spent code


def test_a_repeat_with_nothing_changed_puts(clock: FakeClock) -> None:
    client = (FakeClient()
              .script("get_instance", _instance(valid=False, refresh_time=OLD_REFRESH, token="at-1"))
              .script("update_instance", _instance(valid=True, refresh_time=ms(T0), token="at-2")))
    decision = handle_callback_received(_attempt(**{REAUTH_SENT_AT: T0.isoformat()}),
                                        FakePorts(client, clock))
    assert isinstance(decision, Advance) and decision.note == "re-authenticated instance 42"
    assert decision.secrets["user_tokens"]["oauth.user.token"] == "at-2"
    assert [c.method for c in client.calls] == ["get_instance", "update_instance"]
    assert client.calls[1].kwargs == {"method": "PUT", "reauthenticate": True}


def test_an_in_process_retry_after_a_timed_out_put_looks_again(clock: FakeClock) -> None:
    client = (FakeClient()
              .script("get_instance", _instance(valid=False, refresh_time=OLD_REFRESH, token="at-1"),
                      _instance(valid=True, refresh_time=ms(T0), token="at-2"))
              .script("update_instance", ApiTimeoutError("read timeout")))
    decision = handle_callback_received(_attempt(**{REAUTH_SENT_AT: T0.isoformat()}),
                                        FakePorts(client, clock, max_tries=2))
    assert isinstance(decision, Advance) and decision.secrets["user_tokens"]["oauth.user.token"] == "at-2"
    assert [c.method for c in client.calls] == ["get_instance", "update_instance", "get_instance"]


def test_the_signal_needs_newer_tokens_on_a_valid_instance() -> None:
    attempt = _attempt()
    assert not already_reauthenticated(attempt, _instance(valid=True, refresh_time=OLD_REFRESH, token="x"))
    assert not already_reauthenticated(attempt, _instance(valid=False, refresh_time=ms(T0), token="x"))
    unreadable = {"id": 42, "configuration": {"oauth.user.refresh_time": "n/a"}}
    assert not already_reauthenticated(attempt, unreadable)
    newer = _instance(valid=True, refresh_time=OLD_REFRESH + 1, token="x")
    assert already_reauthenticated(attempt, newer)
