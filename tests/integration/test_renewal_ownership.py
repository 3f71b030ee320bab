"""One owner per token over months (issue 15 must-have 3), on the project's ONE fake clock.

The engine and the sandbox read the same ``FakeClock``; the sandbox runs the platform's own background
refresh (``auto_refresh``: before every request, and ``platform_refresh()`` while the engine is down).
Both backends (``db_url``: SQLite and PostgreSQL).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest
import requests
from testkit import QBO, QUICK_CONFIG, SANDBOX_COMPANY, consent

from engine import Engine
from engine.clock import FakeClock
from sandbox import Sandbox
from sandbox import start as start_sandbox
from states import State

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
pytestmark = [pytest.mark.clock_at(T0)]
QUICK_OAUTH2 = {"oauth.api.key": "dev-consumer-key", "oauth.api.secret": "dev-consumer-secret",
                "authentication.type": "oauth2", "oauth.user.refresh_token": "AB11-first-refresh-token",
                "quickbooks.realm.id": "123146096291789", **SANDBOX_COMPANY}


@pytest.fixture
def platform(clock: FakeClock) -> Iterator[Sandbox]:
    """The sandbox on ``clock``'s time with the platform's background refresh on."""
    with start_sandbox(port=0, clock=lambda: clock().timestamp(), auto_refresh=True) as sim:
        yield sim


def run_due_times(engine: Engine, clock: FakeClock, attempt_id: str, count: int) -> None:
    """Move the clock to the attempt's next due time and run it, ``count`` times."""
    for _ in range(count):
        due = engine.get(attempt_id).next_run_at
        assert due is not None and due > clock()
        clock.now = due
        engine.run_until_idle()


def presented(platform: Sandbox, who: str | None = None) -> list[str]:
    return [token for token, by, _ in platform.refresh_presentations() if who in (None, by)]


def test_months_of_engine_owned_renewals_with_the_engine_down_in_the_middle(
        engine_on: Callable[..., Engine], db_url: str, clock: FakeClock, platform: Sandbox) -> None:
    engine = engine_on(db_url, clock=clock, sim=platform)
    a = engine.start("quickbooks", "Quick OAuth2", flow="quick", config=QUICK_OAUTH2)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED and a.renewal_owner == "engine" and a.refresh_interval_s == 3600

    # Three days of hourly renewals: the engine renews ahead of the platform every time.
    run_due_times(engine, clock, a.id, 72)
    a = engine.get(a.id)
    assert a.renewals == 72 and presented(platform, "platform") == []
    assert len(presented(platform, "client")) == 72  # exactly one refresh-token grant per due time
    assert {h.note for h in engine.history(a.id) if h.trigger == "renew"} == {"refresh-token grant"}

    # The engine is down for two months; the platform keeps refreshing the instance by itself.
    down_until = clock() + timedelta(days=61)
    while clock() < down_until:
        clock.advance(1800)
        platform.platform_refresh()
    by_platform = presented(platform, "platform")
    assert len(by_platform) > 61 * 23  # it refreshed about hourly

    # Resumed: the engine adopts the platform's newer tokens instead of presenting its dead one.
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED and a.failures == 0
    assert [h.note for h in engine.history(a.id)].count("adopted the platform's refresh") == 1
    resumed = a.renewals
    run_due_times(engine, clock, a.id, 72)

    tokens = presented(platform)
    assert len(tokens) == len(set(tokens)), "a refresh token was presented twice"
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED and a.failures == 0 and a.renewals == resumed + 72
    assert a.instance_id is not None
    instance = platform.store.instances[int(a.instance_id)]
    assert instance.valid and presented(platform, "platform") == by_platform  # the engine led again
    # No connection lost: the engine's token is the instance's, and the provider still takes it.
    held = a.secrets["user_tokens"]["oauth.user.refresh_token"]
    assert held == instance.configuration["oauth.user.refresh_token"]
    run_due_times(engine, clock, a.id, 1)
    assert engine.get(a.id).renewals == resumed + 73 and presented(platform)[-1] == held


def test_a_consent_instance_is_watched_never_refreshed_and_its_failure_needs_reauthorization(
        engine_on: Callable[..., Engine], db_url: str, clock: FakeClock, platform: Sandbox) -> None:
    engine = engine_on(db_url, clock=clock, sim=platform)
    a = engine.start("quickbooks", "Consent OAuth2", flow="oauth2", **QBO)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or ""))
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED and a.renewal_owner == "platform"

    run_due_times(engine, clock, a.id, 48)  # two days of due times (each: due + grace)
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED and a.renewals == 0 and a.failures == 0
    assert presented(platform, "client") == []  # the engine never refreshed
    assert len(presented(platform, "platform")) >= 47  # the platform refreshed at each due time
    assert a.instance_id is not None
    instance = platform.store.instances[int(a.instance_id)]
    assert a.refresh_time == int(instance.configuration["oauth.user.refresh_time"] or 0)

    # The platform fails to refresh (the user revoked the app): the engine raises the need.
    answer = requests.post(f"{platform.root_url}/_sandbox/instances/{a.instance_id}/status",
                           json={"valid": False}, timeout=5)
    assert answer.status_code == 200
    run_due_times(engine, clock, a.id, 1)
    a = engine.get(a.id)
    assert a.state is State.FAILED and a.failure_reason == "renewal_rejected"
    assert a.last_error is not None and "reauthorize" in (a.last_error.get("hint") or "")
    assert [e.type for e in engine.events()][-1] == "connection.reauthorization_required"


def test_an_oauth1_quick_company_is_renewed_by_signed_reconnect_in_its_window(
        engine_on: Callable[..., Engine], db_url: str, clock: FakeClock, platform: Sandbox) -> None:
    """Engine-owned by default; the sandbox verifies the OAuth 1.0a signature with oauthlib."""
    engine = engine_on(db_url, clock=clock, sim=platform)
    a = engine.start("quickbooks", "Quick OAuth1", flow="quick", config=QUICK_CONFIG)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED and a.renewal_owner == "engine" and a.instance_id is not None
    assert a.next_run_at == T0 + timedelta(days=151) - timedelta(minutes=15)  # inside the 30-day window
    clock.now = a.next_run_at
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED and a.renewals == 1 and a.failures == 0
    assert engine.history(a.id)[-1].note == "OAuth1 Reconnect"
    rotated = a.secrets["user_tokens"]["oauth.user.token"]
    config = platform.store.instances[int(a.instance_id or 0)].configuration
    assert rotated != QUICK_CONFIG["oauth.user.token"] and config["oauth.user.token"] == rotated
    assert config["oauth.user.token.secret"] == a.secrets["user_tokens"]["oauth.user.token.secret"]
    assert presented(platform) == []  # no refresh token anywhere: the platform refreshed nothing
