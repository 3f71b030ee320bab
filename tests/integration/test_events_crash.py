"""A ``provision worker`` SIGKILLed in the middle of a webhook delivery: the event is sent again by
the next worker once the dead one's lease expires; not lost, accepted once after dedup (issue 10/12)."""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
from test_crash import spawn_worker, wait_for, worker_env
from testkit import quick_config
from webhook_receiver import Answer, new_secret, receiving

from engine import Engine
from persistence.outbox import Outbox

pytestmark = [pytest.mark.slow, pytest.mark.realtime]
LEASE_S = 3.0


def test_sigkill_mid_delivery_redelivers(make_engine: Callable[..., Engine], sandbox: Any,
                                         db_url: str) -> None:
    engine = make_engine()  # no webhooks configured here: only the subprocess workers deliver
    ids = [engine.start("quickbooks", f"crash {i}", flow="quick", config=quick_config()).id for i in range(2)]
    engine.run_until_idle()
    outbox = Outbox(engine.repo.engine)
    assert outbox.counts() == {"pending": 2}
    secret = new_secret()
    release = threading.Event()
    with receiving(secret) as receiver:
        receiver.script = [Answer(200, hold=release)]  # the first send hangs until after the kill
        env = worker_env(db_url, sandbox, lease_s=LEASE_S, PROVISION_WEBHOOK_URL=receiver.url,
                         PROVISION_WEBHOOK_SECRET=secret, PROVISION_WEBHOOK_TIMEOUT_SECONDS="1")
        worker = spawn_worker(env)
        try:
            assert receiver.arrived.wait(20), "the worker never sent the webhook"
            worker.send_signal(signal.SIGKILL)  # mid-delivery: sent, answer not yet read
            worker.wait(10)
        finally:
            if worker.poll() is None:
                worker.kill()
            release.set()
        first = receiver.received[0].webhook_id
        assert outbox.counts().get("delivered", 0) == 0  # the killed worker recorded nothing
        restarted = spawn_worker(env)
        try:
            wait_for(lambda: outbox.counts() == {"delivered": 2}, 30, "both events to be delivered")
        finally:
            restarted.send_signal(signal.SIGTERM)
            assert restarted.wait(15) == 0
    sent = [r.webhook_id for r in receiver.received]
    assert sent.count(first) == 2  # sent again, not lost
    assert sorted(r.webhook_id for r in receiver.accepted()) == sorted(e.webhook_id for e in engine.events())
    assert {r.payload["data"]["attempt_id"] for r in receiver.accepted() if r.payload} == set(ids)
