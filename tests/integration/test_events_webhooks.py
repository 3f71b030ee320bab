"""Signed webhooks end to end over real HTTP (issue 10/12): a receiver on 127.0.0.1 verifies every
request with the ``standardwebhooks`` verifier; the receiver is down, then answers 500, then 429
with Retry-After; every event arrives exactly once after deduplication, in order per attempt.
Fake clock, SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from testkit import QBO, TEST_KEY, consent, quick_config
from webhook_receiver import Answer, free_port, new_secret, receiving

from engine import ElementsClient, Engine, FakeClock, RetryPolicy
from engine.clients.webhooks import WebhookSender
from engine.config import ClientSettings, WebhookSettings
from engine.core import events as ev
from engine.errors import InvalidInputError
from engine.wiring import open_engine, open_repository
from persistence.outbox import Outbox
from persistence.schema import events


@pytest.fixture
def hooked(db_url: str, sandbox: Any) -> Iterator[Callable[..., Engine]]:
    """Factory: an engine on ``db_url`` (fake clock) that sends webhooks to ``url`` with ``secret``."""
    made: list[Engine] = []

    def make(url: str, secret: str, clock: FakeClock, **settings: Any) -> Engine:
        repo = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
        client = ElementsClient(ClientSettings(base_url=sandbox.base_url, user_secret="sandbox-user-secret",
                                               org_secret="sandbox-org-secret",
                                               provider_root=f"{sandbox.root_url}/_provider"))
        hooks = WebhookSender(WebhookSettings(url=url, secret=secret, connect_timeout=1, read_timeout=2,
                                              **settings))
        engine = Engine(repo, client, clock=clock, sleep=lambda s: None, webhooks=hooks,
                        policy=RetryPolicy(in_process_attempts=1))
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def settle(engine: Engine, clock: FakeClock, step_s: float = 60, rounds: int = 200) -> None:
    """Tick, moving the fake clock on, until no event is pending."""
    for _ in range(rounds):
        engine.tick()
        if Outbox(engine.repo.engine).counts().get("pending", 0) == 0:
            return
        clock.advance(step_s)
    raise AssertionError(f"events still pending: {Outbox(engine.repo.engine).counts()}")


def test_down_then_500_then_429_every_event_once_in_order(hooked: Callable[..., Engine]) -> None:
    clock = FakeClock()
    secret, port = new_secret(), free_port()
    engine = hooked(f"http://127.0.0.1:{port}/hooks", secret, clock)
    a = engine.start("quickbooks", "oauth1", flow="oauth1", **QBO)
    b = engine.start("quickbooks", "quick", flow="quick", config=quick_config())
    engine.run_until_idle()  # the receiver is down: nothing can be delivered
    counts = Outbox(engine.repo.engine).counts()
    assert counts == {"pending": 3}
    with receiving(secret, port, clock) as receiver:
        receiver.script = [Answer(500), Answer(503), Answer(429, {"Retry-After": "600"})]
        engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or ""))
        settle(engine, clock)
    everything = engine.events(limit=1000)
    assert len(everything) == 5
    assert all(r.payload is not None for r in receiver.received)  # every signature verified
    accepted = receiver.accepted()
    assert sorted(r.webhook_id for r in accepted) == sorted(e.webhook_id for e in everything)
    assert len(receiver.received) > len(accepted)  # failures were retried, not dropped
    for attempt_id in (a.id, b.id):
        wanted = [e.webhook_id for e in everything if e.attempt_id == attempt_id]
        mine = [r for r in accepted if r.payload and r.payload["data"]["attempt_id"] == attempt_id]
        assert [r.webhook_id for r in mine] == wanted
        # Nothing of an attempt was sent before its previous event was accepted.
        sent = [r.webhook_id for r in receiver.received if r.webhook_id in wanted]
        firsts = [sent.index(w) for w in wanted]
        assert firsts == sorted(firsts)
        for earlier, later in zip(wanted, wanted[1:], strict=False):
            last_try_of_earlier = max(i for i, w in enumerate(sent) if w == earlier)
            assert sent.index(later) > last_try_of_earlier
    assert [r.payload["type"] for r in accepted if r.payload and r.payload["data"]["attempt_id"] == a.id] == [
        ev.TOKEN_ISSUED, ev.REDIRECTED, ev.CALLBACK_RECEIVED, ev.PROVISIONED]
    # Retry-After was honoured on the engine clock: the 429'd event was not resent for 600 s.
    throttled = next(i for i, r in enumerate(receiver.received) if r.status == 429)
    again = next(r for r in receiver.received[throttled + 1:]
                 if r.webhook_id == receiver.received[throttled].webhook_id)
    assert again.at - receiver.received[throttled].at >= timedelta(seconds=600)
    # The payload a receiver gets is the feed's payload.
    by_id = {e.webhook_id: e for e in everything}
    assert all(r.payload == by_id[r.webhook_id].payload for r in accepted)


def test_a_receiver_that_does_not_answer_holds_up_one_send_per_pass(hooked: Callable[..., Engine]) -> None:
    clock = FakeClock()
    engine = hooked(f"http://127.0.0.1:{free_port()}/hooks", new_secret(), clock)
    for i in range(3):
        engine.start("quickbooks", f"quick {i}", flow="quick", config=quick_config())
    engine.tick()  # three steps, then one send that gets no answer; the other two are given back
    with engine.repo.engine.connect() as conn:
        rows = conn.execute(sa.select(events.c.tries, events.c.lease_owner).order_by(events.c.seq)).all()
    assert [tuple(r) for r in rows] == [(1, None), (0, None), (0, None)]
    assert engine.deliver_events() == 0
    with engine.repo.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(events.c.tries))).scalar() == 2


def test_retry_budget_dead_letters_then_redeliver(hooked: Callable[..., Engine]) -> None:
    clock = FakeClock()
    secret = new_secret()
    with receiving(secret, clock=clock) as receiver:
        receiver.default = Answer(502)
        engine = hooked(receiver.url, secret, clock, max_tries=3)
        engine.start("quickbooks", "quick", flow="quick", config=quick_config())
        settle(engine, clock)
        assert Outbox(engine.repo.engine).counts() == {"dead": 1}
        assert [r.status for r in receiver.received] == [502, 502, 502]
        receiver.default = Answer(400)  # not retryable: dead-lettered at the first answer
        engine.start("quickbooks", "quick 2", flow="quick", config=quick_config())
        settle(engine, clock)
        assert Outbox(engine.repo.engine).counts() == {"dead": 2} and len(receiver.received) == 4
        receiver.default = Answer(204)
        assert engine.redeliver(failed=True) == 2
        settle(engine, clock)
        assert Outbox(engine.repo.engine).counts() == {"delivered": 2}
        assert len(receiver.accepted()) == 2
        assert engine.redeliver(engine.events()[0].seq) == 1  # a delivered event can be resent too
        settle(engine, clock)
        assert [r.webhook_id for r in receiver.received[-1:]] == [engine.events()[0].webhook_id]
        with pytest.raises(InvalidInputError, match="redeliver"):
            engine.redeliver()


def test_a_wrong_secret_or_a_redirect_dead_letters_at_once(hooked: Callable[..., Engine]) -> None:
    clock = FakeClock()
    with receiving(new_secret(), clock=clock) as receiver:  # it verifies with another secret: 401
        engine = hooked(receiver.url, new_secret(), clock)
        engine.start("quickbooks", "quick", flow="quick", config=quick_config())
        settle(engine, clock)
        assert [r.status for r in receiver.received] == [401] and receiver.received[0].payload is None
    secret = new_secret()
    with receiving(secret, clock=clock) as receiver:
        # If the redirect were followed, the POST would be repeated to Location: a second request.
        receiver.default = Answer(307, {"Location": receiver.url + "/elsewhere"})
        engine = hooked(receiver.url, secret, clock)
        engine.start("quickbooks", "quick 2", flow="quick", config=quick_config())
        settle(engine, clock)
        assert [r.status for r in receiver.received] == [307]
    assert Outbox(engine.repo.engine).counts() == {"dead": 2}


def test_environment_configures_webhooks_and_validates(sqlite_url: str, sandbox: Any) -> None:
    secret = new_secret()
    env = {"PROVISION_SECRET_KEY": TEST_KEY, "ELEMENTS_BASE_URL": sandbox.base_url,
           "PROVISION_WEBHOOK_URL": "http://127.0.0.1:9/hooks", "PROVISION_WEBHOOK_SECRET": secret}
    engine = open_engine(sqlite_url, environ=env)
    try:
        assert engine.dispatch.webhooks is not None
        assert engine.dispatch.webhooks.settings.url == "http://127.0.0.1:9/hooks"
        assert secret not in repr(engine.dispatch.webhooks.settings)
    finally:
        engine.close()
    for bad, field in (({"PROVISION_WEBHOOK_SECRET": "not-whsec"}, "PROVISION_WEBHOOK_SECRET"),
                       ({"PROVISION_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "PROVISION_WEBHOOK_SECRET"),
                       ({"PROVISION_WEBHOOK_URL": "ftp://x"}, "PROVISION_WEBHOOK_URL"),
                       ({"PROVISION_WEBHOOK_URL": ""}, "PROVISION_WEBHOOK_URL")):
        with pytest.raises(InvalidInputError, match=field):
            open_engine(sqlite_url, environ={**env, **bad})


def test_two_workers_never_hold_the_same_event(make_engine: Callable[..., Engine]) -> None:
    clock = FakeClock()
    engine = make_engine(clock=clock)  # no webhooks: the deliveries are claimed by hand below
    for i in range(4):
        engine.start("quickbooks", f"quick {i}", flow="quick", config=quick_config())
    engine.run_until_idle()
    outbox = Outbox(engine.repo.engine)
    lease = clock() + timedelta(seconds=30)
    first = outbox.claim(clock(), "worker-a", lease, 3)
    second = outbox.claim(clock(), "worker-b", lease, 3)
    assert len(first) == 3 and len(second) == 1
    assert not {e.seq for e in first} & {e.seq for e in second}
    assert outbox.claim(clock(), "worker-c", lease, 10) == []
    assert not outbox.mark_delivered(first[0].seq, "worker-b", now=clock(), tries=1)  # not b's lease
    later = clock() + timedelta(seconds=31)  # expired leases are taken over
    assert len(outbox.claim(later, "worker-c", later + timedelta(seconds=30), 10)) == 4
