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
On PostgreSQL A's renewal commit is one autocommit statement. The test holds the attempt's row
lock (an open transaction, as an operator's psql session or another frozen worker would), so A's
UPDATE waits, and A is stopped while it waits. Before, when the lock went, A's queued UPDATE
committed whenever A woke up, and until then nobody could take over (the claim skips locked
rows). Now ``lock_timeout`` ends the wait after ``PROVISION_DB_TRANSACTION_IDLE_SECONDS`` (half the
lease by default), B claims the attempt after the lease, and A's commit, retried when A wakes,
finds its lease lost. ``test_a_stopped_worker_holding_a_transaction_frees_its_rows_after_the_bound``
covers the other half: a stopped process idle inside its transaction is ended by the server
(``idle_in_transaction_session_timeout``), which releases its row locks.
"""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from test_crash import spawn_worker, wait_for, worker_env
from testkit import QBO, consent

from engine import Engine
from persistence.schema import attempts
from sandbox import start as start_sandbox
from states import State

pytestmark = [pytest.mark.slow, pytest.mark.realtime]
DAY = 86400.0
LEASE_S = 3.0


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


@contextmanager
def commits_held(db_url: str, attempt_id: str) -> Iterator[None]:
    """Make a worker's commit of ``attempt_id`` wait: SQLite's write lock, or PostgreSQL's row lock."""
    if db_url.startswith("sqlite"):
        lock = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        return
    admin = sa.create_engine(db_url)  # no idle bound of its own: it holds the lock as long as told
    try:
        with admin.connect() as conn, conn.begin():
            conn.execute(sa.select(attempts.c.id).where(attempts.c.id == attempt_id).with_for_update())
            yield  # the transaction rolls back on exit, releasing the row
    finally:
        admin.dispose()


@pytest.mark.parametrize("flow", ["oauth1", "oauth2"])
def test_a_worker_stopped_mid_renewal_keeps_a_complete_renewal(
        db_url: str, engine_on: Callable[..., Engine], shifted: ShiftedSandbox, flow: str) -> None:
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
    env = worker_env(db_url, sim, lease_s=LEASE_S)

    def renewals() -> list[dict[str, Any]]:
        return [r for r in sim.requests() if r["endpoint"] == "provider_token"]

    before = len(renewals())
    first = spawn_worker(env)
    second = None
    try:
        wait_for(lambda: len(renewals()) > before, 20, "worker A to call the provider")
        with commits_held(db_url, a.id):  # A's commit will wait for this lock
            time.sleep(1.2)  # realtime: the held answer (0.6 s) reaches A, which now waits to commit
            first.send_signal(signal.SIGSTOP)  # the provider has rotated; A has not committed
            if db_url.startswith("postgresql"):  # A's waiting UPDATE runs into its lock_timeout
                time.sleep(LEASE_S / 2 + 0.5)  # the default bound: half the lease
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
    if flow == "oauth2":  # the rotated token was never presented: no renewal ran after A's
        presented = [token for token, _who, _at in sim.refresh_presentations()]
        assert now.secrets["user_tokens"]["oauth.user.refresh_token"] not in presented
        # B's takeover presents A's spent token once more (rejected, then confirmed); nothing else repeats.
        assert len(presented) == len(set(presented)) + 1
    # The next renewal, with the token A saved, is accepted by the provider.
    if flow == "oauth1":
        shifted.offset += 151 * DAY  # the provider's time enters the new token's Reconnect window
    with engine.repo.engine.begin() as conn:
        conn.execute(attempts.update().where(attempts.c.id == a.id)
                     .values(next_run_at=datetime.now(timezone.utc)))
    sim.set_faults()
    engine.run_until_idle()
    renewed = engine.get(a.id)
    assert renewed.state is State.PROVISIONED and renewed.failures == 0, renewed.last_error
    assert renewed.refresh_time != now.refresh_time and len(renewals()) == before + 3
    assert tokens_valid(sim, renewed.secrets["user_tokens"])


HOLDER = """
import sys
from engine.config import open_database
db = open_database(sys.argv[1], transaction_idle_s=float(sys.argv[3]))
with db.connect() as conn:
    conn.exec_driver_sql("BEGIN")
    conn.exec_driver_sql("SELECT id FROM attempts WHERE id = %(id)s FOR UPDATE", {"id": sys.argv[2]})
    print("locked", flush=True)
    sys.stdin.readline()  # SIGSTOPped here, inside its transaction
    try:
        conn.exec_driver_sql("COMMIT")
        print("committed", flush=True)
    except Exception as exc:
        print("ended:", type(exc).__name__, flush=True)
"""


@pytest.mark.postgres
def test_a_stopped_worker_holding_a_transaction_frees_its_rows_after_the_bound(
        pg_schema_url: str, engine_on: Callable[..., Engine]) -> None:
    """A process stopped inside a transaction (its row locks held) is ended by the server after
    the bound, so that workers can claim the rows again; before, they were skipped until it woke."""
    engine = engine_on(pg_schema_url)
    a = engine.start("quickbooks", "Frozen holder", flow="oauth2", renewal="engine", **QBO)
    bound_s = 1.0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, pg_schema_url, a.id, str(bound_s)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        holder.send_signal(signal.SIGSTOP)
        assert engine.repo.claim_due(engine.now(), "w-probe", engine.now(), 10) == []  # locked: skipped
        wait_for(lambda: bool(engine.repo.claim_due(engine.now(), "w-probe", engine.now(), 10)),
                 bound_s + 10, "the server to end the frozen session and free the row")
    finally:
        holder.send_signal(signal.SIGCONT)
        out, err = holder.communicate(b"\n", timeout=15)
    assert out.strip().startswith(b"ended:"), (out, err[-2000:])  # its transaction was rolled back
