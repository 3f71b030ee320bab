"""Exactly one instance after ambiguous creates, late duplicates and cancels (issue 16 item 8), pure."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from unit.fakes import QBO_CONFIG, T0, Call, FakeClient, FakePorts, make_attempt

from engine.clock import FakeClock
from engine.errors import ApiConnectionError, ApiTimeoutError
from states.decisions import Advance, RetryLater, Stay
from states.exactly_once import create_in_flight
from states.handlers import handle_callback_received, handle_new, handle_provisioned_or_check
from states.model import Flow, State, Trigger
from states.ports import StepSettings

QUICK = {**QBO_CONFIG, "oauth.user.token": "t", "oauth.user.token.secret": "s", "quickbooks.realm.id": "1"}
SETTLE = 60
TAG = "provision-attempt-att-1"


def _ports(client: FakeClient, clock: FakeClock) -> FakePorts:
    return FakePorts(client, clock, max_tries=3, settings=StepSettings(create_settle_s=SETTLE))


def _instance(instance_id: int) -> dict[str, Any]:
    return {"id": instance_id, "token": f"inst-{instance_id}", "configuration": {}, "tags": [TAG]}


def test_a_reset_after_sending_is_ambiguous_too(client: FakeClient, clock: FakeClock) -> None:
    ports = _ports(client, clock)
    client.script("create_instance", ApiConnectionError("answer broken off (ProtocolError)"))
    attempt = make_attempt(State.CALLBACK_RECEIVED, Flow.OAUTH2, secrets={"callback": {"code": "c"}})
    decision = handle_callback_received(attempt, ports)
    assert isinstance(decision, RetryLater) and decision.error["ambiguous_create"] is True
    assert decision.error["kind"] == "connection"
    assert decision.at == T0 + timedelta(seconds=SETTLE) and ports.try_numbers == [1]


def test_no_second_post_and_no_look_up_before_the_settle_time(client: FakeClient, clock: FakeClock) -> None:
    ports = _ports(client, clock)
    clock.advance(SETTLE - 1)
    attempt = make_attempt(State.NEW, Flow.QUICK, config=QUICK, runs=2,
                           secrets={"create_sent_at": T0.isoformat()})
    decision = handle_new(attempt, ports)
    assert isinstance(decision, RetryLater) and decision.error["kind"] == "create_settling"
    assert decision.at == T0 + timedelta(seconds=SETTLE)
    assert client.calls == []


def test_after_the_settle_time_an_empty_look_up_posts_again_and_schedules_a_check(
        client: FakeClient, clock: FakeClock) -> None:
    ports = _ports(client, clock)
    clock.advance(SETTLE)
    client.script("find_instances_by_tag", [])
    client.script("create_instance", _instance(7))
    attempt = make_attempt(State.NEW, Flow.QUICK, config=QUICK, runs=2,
                           secrets={"create_sent_at": T0.isoformat()})
    decision = handle_new(attempt, ports)
    assert isinstance(decision, Advance) and decision.changes["instance_id"] == "7"
    assert [c.method for c in client.calls] == ["find_instances_by_tag", "create_instance"]
    check_at = T0 + timedelta(seconds=2 * SETTLE)
    assert decision.secrets["create_sent_at"] is None
    assert decision.secrets["duplicate_check_at"] == check_at.isoformat()
    assert decision.next_run_at == check_at  # before the renewal, months away


def test_a_clean_first_create_schedules_no_check(client: FakeClient, clock: FakeClock) -> None:
    client.script("create_instance", _instance(7))
    decision = handle_new(make_attempt(State.NEW, Flow.QUICK, config=QUICK), _ports(client, clock))
    assert isinstance(decision, Advance)
    assert "duplicate_check_at" not in decision.secrets and "create_sent_at" not in decision.secrets


def test_the_follow_up_check_deletes_a_late_duplicate_and_keeps_the_adopted_one(
        client: FakeClient, clock: FakeClock) -> None:
    ports = _ports(client, clock)
    renewal = T0 + timedelta(days=30)
    attempt = make_attempt(State.PROVISIONED, Flow.QUICK, config=QUICK, instance_id="7",
                           next_renewal_at=renewal, secrets={"duplicate_check_at": T0.isoformat()})
    client.script("find_instances_by_tag", [_instance(7), _instance(9)])
    client.script("delete_instance", None)
    decision = handle_provisioned_or_check(attempt, ports)
    assert decision == Advance(Trigger.REMOVE_DUPLICATE, secrets={"duplicate_check_at": None},
                               next_run_at=renewal,
                               note=f"deleted duplicate instance 9 tagged {TAG}; kept 7")
    assert client.calls[-1] == Call("delete_instance", ("9",))


def test_the_follow_up_check_finding_only_the_adopted_one_just_clears_itself(
        client: FakeClient, clock: FakeClock) -> None:
    renewal = T0 + timedelta(days=30)
    attempt = make_attempt(State.PROVISIONED, Flow.QUICK, config=QUICK, instance_id="7",
                           next_renewal_at=renewal, secrets={"duplicate_check_at": T0.isoformat()})
    client.script("find_instances_by_tag", [_instance(7)])
    decision = handle_provisioned_or_check(attempt, _ports(client, clock))
    assert decision == Stay(secrets={"duplicate_check_at": None}, next_run_at=renewal)


def test_a_failed_check_tries_again_a_settle_time_later(client: FakeClient, clock: FakeClock) -> None:
    attempt = make_attempt(State.PROVISIONED, Flow.QUICK, config=QUICK, instance_id="7",
                           next_renewal_at=T0 + timedelta(days=30),
                           secrets={"duplicate_check_at": T0.isoformat()})
    client.script("find_instances_by_tag", *[ApiTimeoutError("slow")] * 3)
    decision = handle_provisioned_or_check(attempt, _ports(client, clock))
    later = T0 + timedelta(seconds=SETTLE)
    assert decision == Stay(secrets={"duplicate_check_at": later.isoformat()}, next_run_at=later)


def test_cancel_marks_a_create_that_may_be_in_flight() -> None:
    leased = make_attempt(State.NEW, Flow.QUICK, config=QUICK, runs=1, lease_owner="w1")
    marker = create_in_flight(leased, T0)
    assert marker is not None and marker.secrets == {"create_sent_at": T0.isoformat()}
    assert TAG in marker.note and "restart" in marker.note
    never_claimed = make_attempt(State.NEW, Flow.QUICK, config=QUICK, runs=0)
    assert create_in_flight(never_claimed, T0) is None
    oauth_new = make_attempt(State.NEW, Flow.OAUTH2, runs=1, lease_owner="w1")
    assert create_in_flight(oauth_new, T0) is None  # its NEW step never creates
