"""Issue 18 must-have 6: the scrape-time gauges (due backlog and its age, live workers), renewal
lateness by mode and webhook deliveries, scraped over real HTTP from the worker's metrics listener,
after real steps against the sandbox; SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from scrapekit import scrape, worker_listener
from testkit import QBO, SANDBOX_COMPANY, TEST_KEY, consent, quick_config
from webhook_receiver import Answer, new_secret, receiving

from engine import Engine, FakeClock, RetryPolicy
from engine.clients.webhooks import WebhookSender
from engine.config import WebhookSettings
from engine.wiring import open_engine
from persistence.outbox import Outbox
from persistence.schema import attempts, workers
from persistence.workers import beat
from sandbox import Sandbox
from sandbox import start as start_sandbox
from states import State

QUICK_OAUTH2 = {"oauth.api.key": "dev-consumer-key", "oauth.api.secret": "dev-consumer-secret",
                "authentication.type": "oauth2", "oauth.user.refresh_token": "AB11-first-refresh-token",
                "quickbooks.realm.id": "123146096291789", **SANDBOX_COMPANY}
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
pytestmark = [pytest.mark.clock_at(T0)]


def _metrics() -> Any:
    from engine.web.metrics import Metrics
    return Metrics(registry=CollectorRegistry())


def test_due_backlog_its_age_and_live_workers_on_the_database_clock(db_url: str, sandbox: Sandbox) -> None:
    metrics = _metrics()
    env = {"PROVISION_SECRET_KEY": TEST_KEY, "ELEMENTS_BASE_URL": sandbox.base_url}
    engine = open_engine(db_url, environ=env, migrate=True, observer=metrics)  # the database clock
    try:
        ids = [engine.start("quickbooks", f"Backlog {i}", flow="quick", config=quick_config()).id
               for i in range(4)]
        now = engine.now()
        with engine.repo.engine.begin() as conn:  # one due 2 minutes ago; an older one leased; one later
            conn.execute(attempts.update().where(attempts.c.id == ids[0])
                         .values(next_run_at=now - timedelta(seconds=120)))
            conn.execute(attempts.update().where(attempts.c.id == ids[1])
                         .values(next_run_at=now - timedelta(seconds=900), lease_owner="elsewhere",
                                 lease_expires_at=now + timedelta(hours=1)))
            conn.execute(attempts.update().where(attempts.c.id == ids[2])
                         .values(next_run_at=now + timedelta(hours=1)))
        with worker_listener(engine, metrics) as url:
            first = scrape(url)
            assert first[("provision_queue_depth", (("state", "NEW"),))] == 4
            assert first[("provision_due_backlog", (("state", "NEW"),))] == 2  # not leased, not later
            assert 120 <= first[("provision_due_backlog_age_seconds", ())] < 180
            assert first[("provision_live_workers", (("role", "worker"),))] == 0  # no heartbeat yet

            assert engine.heartbeat is not None and engine.heartbeat.after_tick(engine.worker_id, 0)
            beat(engine.repo.engine, "dead-console", host="h", pid=1, role="console", key_ids=("k",),
                 leases=0)
            with engine.repo.engine.begin() as conn:  # a console whose heartbeat stopped a day ago
                conn.execute(workers.update().where(workers.c.worker_id == "dead-console")
                             .values(last_tick_at=now - timedelta(days=1)))
            engine.run_until_idle()  # the due ones run: the backlog empties, its age is 0
            second = scrape(url)
            assert second[("provision_live_workers", (("role", "worker"),))] == 1
            assert ("provision_live_workers", (("role", "console"),)) not in second
            assert second.get(("provision_due_backlog", (("state", "NEW"),)), 0) == 0
            assert second[("provision_due_backlog_age_seconds", ())] == 0
            assert sum(v for (name, _), v in second.items() if name == "provision_transitions_total") >= 2
    finally:
        engine.close()


@pytest.fixture
def platform(clock: FakeClock) -> Iterator[Sandbox]:
    """The sandbox on ``clock``'s time with the platform's own refresh on."""
    with start_sandbox(port=0, clock=lambda: clock().timestamp(), auto_refresh=True) as sim:
        yield sim


def _run_late(engine: Engine, clock: FakeClock, attempt_id: str, late_s: float) -> None:
    """Run the attempt's next due step ``late_s`` seconds after it was due (and what follows it)."""
    due = engine.get(attempt_id).next_run_at
    assert due is not None
    clock.now = due + timedelta(seconds=late_s)
    engine.run_until_idle()


def test_renewal_lateness_by_mode(engine_on: Callable[..., Engine], db_url: str, clock: FakeClock,
                                  platform: Sandbox) -> None:
    metrics = _metrics()
    engine = engine_on(db_url, clock=clock, sim=platform, observer=metrics)
    owned = engine.start("quickbooks", "Engine renews", flow="quick", config=QUICK_OAUTH2)
    watched = engine.start("quickbooks", "Platform renews", flow="oauth2", **QBO)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(watched.id)) or ""))
    engine.run_until_idle()
    assert engine.get(owned.id).state is engine.get(watched.id).state is State.PROVISIONED
    with worker_listener(engine, metrics) as url:
        assert scrape(url).get(("provision_renewal_lateness_seconds_count", (("mode", "oauth2"),)), 0) == 0
        for _ in range(3):  # past the follow-up duplicate check (not a renewal): renewals and pushes
            _run_late(engine, clock, owned.id, 42)
        renewed = engine.get(owned.id).renewals
        _run_late(engine, clock, watched.id, 7)
        got = scrape(url)
    assert renewed >= 1
    assert got[("provision_renewal_lateness_seconds_count", (("mode", "oauth2"),))] == renewed
    assert got[("provision_renewal_lateness_seconds_sum", (("mode", "oauth2"),))] == 42 * renewed
    assert got[("provision_renewal_lateness_seconds_count", (("mode", "platform"),))] >= 1
    assert got[("provision_renewal_lateness_seconds_bucket", (("le", "5.0"), ("mode", "oauth2")))] == 0
    assert got[("provision_renewal_lateness_seconds_bucket", (("le", "60.0"), ("mode", "oauth2")))] == renewed


def test_webhook_deliveries_retries_and_dead_letters_are_counted(
        engine_on: Callable[..., Engine], db_url: str, clock: FakeClock) -> None:
    metrics = _metrics()
    secret = new_secret()
    with receiving(secret, clock=clock) as receiver:
        receiver.script = [Answer(503)]  # the first send is retried, the rest delivered
        engine = engine_on(db_url, clock=clock, observer=metrics, policy=RetryPolicy(in_process_attempts=1))
        engine.dispatch.webhooks = WebhookSender(WebhookSettings(url=receiver.url, secret=secret,
                                                                 connect_timeout=1, read_timeout=2))
        engine.start("quickbooks", "Delivered", flow="quick", config=quick_config())
        _settle(engine, clock)
        receiver.default = Answer(410)  # gone: dead-lettered at once
        engine.start("quickbooks", "Refused", flow="quick", config=quick_config())
        _settle(engine, clock)
        with worker_listener(engine, metrics) as url:
            got = scrape(url)
    counts = Outbox(engine.repo.engine).counts()
    assert counts["delivered"] >= 1 and counts["dead"] >= 1
    assert got[("provision_webhook_deliveries_total", (("outcome", "delivered"),))] == counts["delivered"]
    assert got[("provision_webhook_deliveries_total", (("outcome", "dead_lettered"),))] == counts["dead"]
    assert got[("provision_webhook_deliveries_total", (("outcome", "retried"),))] == 1
    assert got[("provision_webhook_delivery_duration_seconds_count", ())] == len(receiver.received)
    assert len(receiver.received) == counts["delivered"] + counts["dead"] + 1


def _settle(engine: Engine, clock: FakeClock) -> None:
    for _ in range(50):
        engine.tick()
        if Outbox(engine.repo.engine).counts().get("pending", 0) == 0:
            return
        clock.advance(60)
    raise AssertionError("webhook events still pending")


def test_queries_are_one_each(db_url: str, sandbox: Sandbox) -> None:
    """Each gauge costs one statement per scrape (the brief: cheap enough to scrape every 15 s)."""
    metrics = _metrics()
    env = {"PROVISION_SECRET_KEY": TEST_KEY, "ELEMENTS_BASE_URL": sandbox.base_url}
    engine = open_engine(db_url, environ=env, migrate=True, observer=metrics)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    try:
        metrics.watch(engine)
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
        metrics.exposition()
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    finally:
        engine.close()
    assert len(statements) == 3, statements  # queue depth, due backlog (with its age), live workers
