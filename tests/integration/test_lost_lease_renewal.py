"""Lost-lease recovery is a complete renewal (issue 16 item 5), with real worker processes.

Worker A renews (the provider rotates the token), reads the answer, and is SIGSTOPped while its
commit waits for the SQLite write lock (held by the test for a moment). Its lease expires;
worker B claims the attempt and presents the old token, which the provider rejects (B
schedules the confirmation). A is SIGCONTed: its transition is discarded (lease lost), and
``merge_secrets`` keeps the rotated token. Before, only the token was kept, not
``refresh_time``/``next_renewal_at``: the attempt renewed again at once and an OAuth1 Reconnect
answered 212 and failed an attempt that held a valid fresh token. Now the token is saved with its
schedule and pushed to the instance at once. The attempts are engine-owned (``renewal="engine"``):
a platform-owned consent attempt is only watched and never calls the provider.

Why A is stopped at its commit and not while the answer is in flight: the transport's per-call
deadline (``engine.clients.transport``) discards an answer read after the deadline, so a worker
stopped in flight loses the answer: that is the window that cannot be closed (README, reliability).
PostgreSQL cannot hold A at its commit the same way (A's UPDATE would run on the server and keep
the row locked, so B could never take over); ``test_renewal_lost_lease.py`` covers the same
recovery on both backends in-process.
"""
from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from test_crash import spawn_worker, wait_for, worker_env
from testkit import QBO, consent

from engine import Engine
from persistence.schema import attempts
from sandbox import start as start_sandbox
from states import State

pytestmark = [pytest.mark.slow, pytest.mark.realtime]
DAY = 86400.0


class ShiftedSandbox:
    """The simulator on real time plus ``offset`` seconds (the worker processes run on real time)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.sim = start_sandbox(port=0, now=lambda: time.time() + self.offset)


@pytest.fixture
def shifted() -> Iterator[ShiftedSandbox]:
    s = ShiftedSandbox()
    try:
        yield s
    finally:
        s.sim.stop()


def tokens_valid(sim: Any, tokens: dict[str, Any]) -> bool:
    if "oauth.user.refresh_token" in tokens:
        record = sim.store.refresh_tokens.get(tokens["oauth.user.refresh_token"])
    else:
        record = sim.store.access_tokens.get(tokens["oauth.user.token"])
    return record is not None and bool(record.valid)


@pytest.mark.parametrize("flow", ["oauth1", "oauth2"])
def test_a_worker_stopped_mid_renewal_keeps_a_complete_renewal(
        sqlite_url: str, engine_on: Callable[..., Engine], shifted: ShiftedSandbox, flow: str) -> None:
    db_url = sqlite_url
    sim = shifted.sim
    engine = engine_on(db_url, sim=sim)
    a = engine.start("quickbooks", f"Stopped {flow}", flow=flow, renewal="engine", **QBO)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or ""))
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED and a.instance_id and a.refresh_time
    if flow == "oauth1":
        shifted.offset = 151 * DAY  # the provider's time enters the Reconnect window
    with engine.repo.engine.begin() as conn:  # the renewal falls due now (instead of in 151 days)
        conn.execute(attempts.update().where(attempts.c.id == a.id)
                     .values(next_run_at=datetime.now(timezone.utc)))
    sim.set_faults(delays={"provider_token": 0.6})  # held after the rotation; < 1 s read timeout
    env = worker_env(db_url, sim, lease_s=3.0)

    def renewals() -> list[dict[str, Any]]:
        return [r for r in sim.requests() if r["endpoint"] == "provider_token"]

    before = len(renewals())
    first = spawn_worker(env)
    second = None
    try:
        wait_for(lambda: len(renewals()) > before, 20, "worker A to call the provider")
        lock = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # A's commit will wait for this write lock
        time.sleep(1.2)  # realtime: the held answer (0.6 s) reaches A, which now waits to commit
        first.send_signal(signal.SIGSTOP)  # the provider has rotated; A has not committed
        lock.execute("ROLLBACK")
        lock.close()
        second = spawn_worker(env)
        wait_for(lambda: engine.get(a.id).failures >= 1, 20, "worker B to present the old token")
        first.send_signal(signal.SIGCONT)

        def consistent() -> bool:
            now = engine.get(a.id)
            pushed = sim.store.instances[int(a.instance_id or 0)].configuration
            return (now.refresh_time != a.refresh_time and not now.secrets.get("push_pending")
                    and pushed.get("oauth.user.token") == now.secrets["user_tokens"]["oauth.user.token"])

        wait_for(consistent, 20, "the rotated token saved with its schedule and pushed")
        time.sleep(1.0)  # realtime test: let a wrongly scheduled second renewal happen, if any
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(15) == 0, (proc.stderr.read() if proc.stderr else b"").decode()[-2000:]
    now = engine.get(a.id)
    assert now.state is State.PROVISIONED, now.last_error
    assert now.failures == 0 and now.renewal_failing_since is None
    assert now.next_renewal_at is not None and now.next_renewal_at > datetime.now(timezone.utc)
    assert now.next_run_at == now.next_renewal_at  # not renewed again at once
    assert tokens_valid(sim, now.secrets["user_tokens"])
    assert len(renewals()) == before + 2  # A's rotation and B's rejected try; no third renewal
