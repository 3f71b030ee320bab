"""The renewal budget counts from this renewal's first failure, not from its due time (issue 16 item 4).

Before, the 4-day budget counted from ``next_renewal_at``: a worker back from a 5-day outage, or an
imported token that was already long overdue, failed ``retries_exhausted`` on its first 503 although
its refresh token was still good. Time travels on one FakeClock shared by engine and sandbox.
The consent attempts here are engine-owned (``renewal="engine"``): a platform-owned one is only
watched, and the budget governs the engine's own renewals.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from testkit import QBO, QUICK_CONFIG, consent

from engine import Engine
from engine.clock import FakeClock
from states import State

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
pytestmark = [pytest.mark.clock_at(T0), pytest.mark.sandbox_on_clock]
UNAVAILABLE = {"provider_token": {"rate": 1.0, "status": 503}}


def fail_for(engine: Engine, attempt_id: str, clock: FakeClock, span: timedelta) -> None:
    """Let the provider answer 503 to every renewal try for ``span`` of fake time."""
    end = clock() + span
    while clock() < end:
        engine.run_until_idle()
        a = engine.get(attempt_id)
        assert a.state is State.PROVISIONED, a.failure_reason
        assert a.next_run_at is not None
        clock.now = max(a.next_run_at, clock())


def recovers(engine: Engine, sandbox: Any, attempt_id: str, clock: FakeClock) -> None:
    sandbox.set_faults()
    a = engine.get(attempt_id)
    assert a.renewal_failing_since is not None
    renewals = a.renewals
    assert a.next_run_at is not None
    clock.now = a.next_run_at
    engine.run_until_idle()
    a = engine.get(attempt_id)
    assert a.state is State.PROVISIONED and a.renewals == renewals + 1
    assert a.renewal_failing_since is None  # reset by the success: the next renewal gets a new budget


def test_a_five_day_worker_outage_still_gets_its_retries(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any) -> None:
    engine = make_engine(clock=clock)
    a = engine.start("quickbooks", "Outage", flow="oauth2", renewal="engine", **QBO)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or ""))
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED and a.next_run_at is not None
    sandbox.set_faults(fails=UNAVAILABLE)
    clock.now = a.next_run_at + timedelta(days=5)  # the workers were down for 5 days
    back = clock()
    fail_for(engine, a.id, clock, timedelta(hours=6))
    assert engine.get(a.id).renewal_failing_since == back
    recovers(engine, sandbox, a.id, clock)


def test_the_budget_still_ends_four_days_after_the_first_failure(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any) -> None:
    engine = make_engine(clock=clock)
    a = engine.start("quickbooks", "Gives up", flow="oauth2", renewal="engine", **QBO)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or ""))
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.next_run_at is not None
    sandbox.set_faults(fails=UNAVAILABLE)
    clock.now = first = a.next_run_at + timedelta(days=10)
    while engine.get(a.id).state is State.PROVISIONED:
        engine.run_until_idle()
        nxt = engine.get(a.id).next_run_at
        if nxt is None:
            break
        clock.now = nxt
    a = engine.get(a.id)
    assert a.failure_reason == "retries_exhausted"
    assert timedelta(days=4) <= clock() - first <= timedelta(days=4, hours=1)


def test_an_imported_long_overdue_token_gets_its_retries(
        make_engine: Callable[..., Engine], clock: FakeClock, sandbox: Any) -> None:
    # A QuickBooks OAuth1 token granted 170 days ago: its renewal fell due 19 days ago (151-day
    # interval) and the Reconnect window (the last 30 days of 180) is open.
    granted_ms = int((T0 - timedelta(days=170)).timestamp() * 1000)
    engine = make_engine(clock=clock)
    a = engine.start("quickbooks", "Imported", flow="quick",
                     config={**QUICK_CONFIG, "oauth.user.refresh_time": str(granted_ms)})
    sandbox.set_faults(fails=UNAVAILABLE)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED, a.failure_reason
    assert a.next_renewal_at is not None and a.next_renewal_at < T0 - timedelta(days=18)
    fail_for(engine, a.id, clock, timedelta(hours=3))
    recovers(engine, sandbox, a.id, clock)
