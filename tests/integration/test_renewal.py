"""Token renewal timers across simulated months: one FakeClock is the engine's and the sandbox's time."""
from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests
from testkit import QBO, QUICK_CONFIG, consent

from engine import CallbackRejectedError, Engine
from engine.clock import FakeClock
from states import State, invalid_step
from states.schedule import next_renewal_at, renewal_lead_s

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
pytestmark = [pytest.mark.clock_at(T0), pytest.mark.sandbox_on_clock]


def provision(engine: Engine, flow: str, element: str = "quickbooks", renewal: str = "engine") -> Any:
    """A consent-flow attempt taken to PROVISIONED; engine-owned unless ``renewal`` says otherwise
    (the engine's own renewal is what most tests here exercise; see test_renewal_ownership.py)."""
    a = engine.start(element, f"Renew {flow}", flow=flow, renewal=renewal, **QBO)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or ""))
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED
    return a


def instance_config(sandbox: Any, instance_id: str) -> dict[str, Any]:
    return dict(sandbox.store.instances[int(instance_id)].configuration)


def pushes(sandbox: Any) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["endpoint"] == "update_instance"]


def test_lead_margin_rule() -> None:
    assert renewal_lead_s(13_046_400) == 900  # 15 minutes for long intervals
    assert renewal_lead_s(3600) == 360  # 10% of an hour
    assert next_renewal_at(0, 3600) == datetime(1970, 1, 1, 0, 54, tzinfo=timezone.utc)


def test_quickbooks_oauth1_151_day_schedule(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any) -> None:
    engine = make_engine(clock=clock)
    a = provision(engine, "oauth1")
    due = T0 + timedelta(days=151) - timedelta(minutes=15)
    assert a.refresh_interval_s == 13_046_400 and a.next_renewal_at == due and a.next_run_at == due
    old_token = instance_config(sandbox, a.instance_id)["oauth.user.token"]
    clock.now = due - timedelta(seconds=1)
    assert engine.tick().claimed == 0
    clock.now = due
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.renewals == 1 and a.state is State.PROVISIONED
    assert a.next_renewal_at == due + timedelta(days=151) - timedelta(minutes=15)
    [push] = pushes(sandbox)
    assert a.instance_id is not None
    cfg = instance_config(sandbox, a.instance_id)
    assert cfg["oauth.user.token"] != old_token
    assert cfg["oauth.user.refresh_time"] == str(int(due.timestamp() * 1000))
    assert push["body"]["configuration"]["oauth.user.token"] == cfg["oauth.user.token"]
    rows = engine.history(a.id)
    assert [h.trigger for h in rows][-1] == "renew"
    assert invalid_step((h.trigger, h.source, h.dest) for h in rows) is None
    # And again 151 days later: the schedule repeats from each renewal.
    clock.now = a.next_renewal_at
    engine.run_until_idle()
    assert engine.get(a.id).renewals == 2


def test_reconnect_waits_for_the_30_day_window(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any) -> None:
    """A 100-day interval asks too early: Intuit answers 212, we wait for the window (day 150)."""
    engine = make_engine(clock=clock)
    cfg = {**QUICK_CONFIG, "oauth.user.refresh_interval": str(100 * 86400),
           "oauth.user.refresh_time": str(int(T0.timestamp() * 1000))}
    a = engine.start("quickbooks", "Early", flow="quick", config=cfg)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.next_run_at is not None
    clock.now = a.next_run_at
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.renewals == 0 and a.state is State.PROVISIONED
    assert a.next_run_at == T0 + timedelta(days=150, hours=1)  # the window opens 30 days before expiry
    clock.now = a.next_run_at
    engine.run_until_idle()
    assert engine.get(a.id).renewals == 1


def test_expired_oauth1_token_is_rejected_after_confirmation(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any) -> None:
    engine = make_engine(clock=clock)
    granted = T0 - timedelta(days=200)  # Intuit error 270: token expired
    cfg = {**QUICK_CONFIG, "oauth.user.refresh_time": str(int(granted.timestamp() * 1000))}
    a = engine.start("quickbooks", "Expired", flow="quick", config=cfg)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED and a.failures == 1  # first rejection waits for confirmation
    assert a.next_run_at is not None
    clock.now = a.next_run_at
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.FAILED and a.failure_reason == "renewal_rejected"
    assert a.last_error and "270" in a.last_error["message"] and "reauthorize" in a.last_error["hint"]


def test_hourly_oauth2_renewals_over_a_week(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any) -> None:
    engine = make_engine(clock=clock)
    a = provision(engine, "oauth2")
    end = T0 + timedelta(days=7)
    while True:
        nxt = engine.get(a.id).next_run_at
        assert nxt is not None
        if nxt > end:
            break
        clock.now = nxt
        engine.run_until_idle()
    a = engine.get(a.id)
    expected = int((end - T0).total_seconds() // (3600 - 360))
    assert a.renewals == expected == 186 and a.state is State.PROVISIONED
    stored = a.secrets["user_tokens"]["oauth.user.refresh_token"]
    # The last rotated refresh token is the one the provider accepts (none was lost).
    assert sandbox.store.refresh_tokens[stored].valid
    assert a.instance_id is not None
    assert instance_config(sandbox, a.instance_id)["oauth.user.refresh_token"] == stored
    assert len([h for h in engine.history(a.id) if h.trigger == "renew"]) == 186


def test_two_workers_race_for_one_renewal(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any) -> None:
    first, second = make_engine(clock=clock), make_engine(clock=clock)
    a = provision(first, "oauth2")
    clock.now = a.next_run_at
    barrier = threading.Barrier(2)
    reports: list[Any] = []

    def tick(engine: Engine) -> None:
        barrier.wait()
        reports.append(engine.tick())

    threads = [threading.Thread(target=tick, args=(e,)) for e in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The second tick either finds the attempt leased (claims nothing) or, if the first worker has
    # already committed the renewal, claims the follow-up push step. Either way exactly one renews:
    renew_steps = [r for rep in reports for r in rep.results if r.dest is State.PROVISIONED
                   and r.outcome == "advanced"]
    assert len(renew_steps) == 1
    refreshes = [r for r in sandbox.requests() if r["endpoint"] == "provider_token"]
    assert len(refreshes) == 1
    a = first.get(a.id)
    assert a.renewals == 1
    assert [h.trigger for h in first.history(a.id)].count("renew") == 1
    assert sandbox.store.refresh_tokens[a.secrets["user_tokens"]["oauth.user.refresh_token"]].valid


def test_rotated_token_survives_a_lost_lease(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker A rotates the refresh token, stalls past its lease, B takes over: nothing is lost."""
    a_engine, b_engine = make_engine(clock=clock), make_engine(clock=clock)
    att = provision(a_engine, "oauth2")
    clock.now = att.next_run_at
    b_reports: list[Any] = []
    real_commit = a_engine.repo.apply  # where every step result is written

    def stalled_commit(*args: Any, **kw: Any) -> bool:
        if not b_reports:  # only the renewal's commit stalls, not A's recovery write after it
            clock.advance(a_engine.settings.lease_s + 1)  # A stalls; its lease expires
            b_reports.append(b_engine.tick())  # B claims and tries the old (already rotated) token
        return real_commit(*args, **kw)

    monkeypatch.setattr(a_engine.repo, "apply", stalled_commit)
    report = a_engine.tick()
    assert [r.outcome for r in report.results] == ["lost"]
    assert [r.outcome for r in b_reports[0].results] == ["retry"]  # invalid_grant, not yet a rejection
    att = a_engine.get(att.id)
    rotated = att.secrets["user_tokens"]["oauth.user.refresh_token"]
    assert sandbox.store.refresh_tokens[rotated].valid  # A's rotated token was kept
    assert att.next_run_at is not None
    clock.now = att.next_run_at
    b_engine.run_until_idle()
    att = b_engine.get(att.id)
    assert att.state is State.PROVISIONED and att.renewals == 1
    assert [h.trigger for h in b_engine.history(att.id)].count("renew") == 1


def test_rejected_renewal_then_reauthorize_the_same_instance(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any) -> None:
    engine = make_engine(clock=clock)
    a = provision(engine, "oauth2")
    # Someone else uses (and so rotates away) our refresh token: the provider will refuse ours.
    stolen = a.secrets["user_tokens"]["oauth.user.refresh_token"]
    r = requests.post(
        f"{sandbox.root_url}/_provider/oauth2/tokens/bearer",
        auth=(QBO["api_key"], QBO["api_secret"]),
        data={"grant_type": "refresh_token", "refresh_token": stolen},
        timeout=5,
    )
    assert r.status_code == 200
    clock.now = a.next_run_at
    engine.run_until_idle()
    nxt = engine.get(a.id).next_run_at
    assert nxt is not None
    clock.now = nxt
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.FAILED and a.failure_reason == "renewal_rejected"
    engine.reauthorize(a.id)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or ""))
    engine.run_until_idle()
    a2 = engine.get(a.id)
    assert a2.state is State.PROVISIONED and a2.instance_id == a.instance_id
    reauth = [r for r in pushes(sandbox) if r["method"] == "PUT"]
    assert len(reauth) == 1 and reauth[0]["query"].get("reAuthenticate") == ["true"]
    assert "code" in reauth[0]["body"]["providerData"]
    assert len(engine.client.find_instances_by_tag(a.instance_tag)) == 1
    assert invalid_step((h.trigger, h.source, h.dest) for h in engine.history(a.id)) is None
    # Recorded as its own trigger, not as a restart (issue 18 item 5).
    assert ("reauthorize", "FAILED", "NEW") in [(h.trigger, h.source, h.dest) for h in engine.history(a.id)]
    assert "restart" not in [h.trigger for h in engine.history(a.id)]


def test_platform_managed_instance_is_checked_for_validity(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(clock=clock)
    a = provision(engine, "oauth1", renewal="platform")
    # The platform manages the tokens: we only watch the instance, after its due time plus a grace.
    clock.now = a.next_run_at
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED and a.renewals == 0
    assert a.next_renewal_at is not None and a.instance_id is not None
    assert a.next_run_at == a.next_renewal_at + timedelta(hours=1)
    sandbox.store.instances[int(a.instance_id)].valid = False
    clock.now = a.next_run_at
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.FAILED and a.failure_reason == "renewal_rejected"


def test_transient_renewal_failures_back_off_then_give_up_after_four_days(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any) -> None:
    engine = make_engine(clock=clock)
    a = provision(engine, "oauth2")
    due = a.next_run_at
    sandbox.set_faults(fails={"provider_token": {"rate": 1.0, "status": 503}})
    clock.now = due
    delays = []
    while engine.get(a.id).state is State.PROVISIONED:
        before = clock()
        engine.run_until_idle()
        nxt = engine.get(a.id).next_run_at
        if nxt is None:
            break
        delays.append((nxt - before).total_seconds())
        clock.now = nxt
    a = engine.get(a.id)
    assert a.failure_reason == "retries_exhausted" and (clock() - due) >= timedelta(days=4)
    assert 30 <= delays[0] <= 60  # first retry after 30-60 s (1 minute, half jitter)
    assert max(delays) <= 3600 and max(delays) >= 1800  # backed off up to the 1-hour cap
    assert all(d >= 30 for d in delays)
    assert len(delays) < 150  # about 4 days at <= 1 hour per try, not a retry storm


def test_callback_deadline_expires_on_the_fake_clock(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any) -> None:
    """Default 30 minutes; a per-attempt override at start; a late callback changes nothing."""
    engine = make_engine(clock=clock)
    default = engine.start("sfdc", "Default wait", flow="oauth2", **QBO)
    short = engine.start("sfdc", "Short wait", flow="oauth2", callback_wait_s=120, **QBO)
    engine.run_until_idle()
    late = consent(engine.redirect_url(engine.get(short.id)) or "")
    assert engine.get(default.id).deadline_at == T0 + timedelta(minutes=30)
    clock.now = T0 + timedelta(seconds=120)
    engine.run_until_idle()
    assert engine.get(short.id).failure_reason == "callback_timeout"
    assert engine.get(default.id).state is State.REDIRECTED
    clock.now = T0 + timedelta(minutes=30)
    engine.run_until_idle()
    assert engine.get(default.id).failure_reason == "callback_timeout"
    before = engine.history(short.id)
    with pytest.raises(CallbackRejectedError, match="deadline passed"):
        engine.handle_callback(late)
    assert engine.history(short.id) == before


def test_lead_margin_is_configurable(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any) -> None:
    from engine import EngineSettings

    engine = make_engine(clock=clock, settings=EngineSettings(renewal_max_lead_s=3600))
    a = provision(engine, "oauth1")
    # 10% of 151 days is far more than an hour, so the configured hour is the lead.
    assert a.next_renewal_at == T0 + timedelta(days=151) - timedelta(hours=1)
