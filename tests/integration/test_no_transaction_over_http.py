"""The engine never holds a database transaction open across an HTTP call (issue 16 item 5).

Why it matters: a worker that is stopped or hangs in an HTTP call (a slow platform, SIGSTOP) would
otherwise keep its row locks for as long, and no other worker could take its attempts over. Every
HTTP request of a whole life (start, consent, create, OAuth1 and OAuth2 renewals with their
pushes) goes out through a real adapter that, before sending, records how many transactions of
the engine's database are open; that number must be 0 for every request, on both backends.
"""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from requests.adapters import BaseAdapter
from testkit import QBO, QUICK_CONFIG, TEST_KEY, consent

from engine import ElementsClient, Engine
from engine.clock import FakeClock
from engine.config import ClientSettings
from engine.wiring import open_repository
from persistence.database import AUTOCOMMIT_OPTIONS
from states import State

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
pytestmark = [pytest.mark.clock_at(T0)]


class OpenTransactions:
    """Counts the transactions open on an engine's pool (reads in SQLite's autocommit mode excluded)."""

    def __init__(self, db: sa.Engine) -> None:
        self.open: set[int] = set()
        self.lock = threading.Lock()
        sa.event.listen(db, "begin", self._begin)
        for name in ("commit", "rollback"):
            sa.event.listen(db, name, self._end)

    def _begin(self, conn: sa.Connection) -> None:
        if not conn.get_execution_options().get(next(iter(AUTOCOMMIT_OPTIONS))):
            with self.lock:
                self.open.add(id(conn))

    def _end(self, conn: sa.Connection) -> None:
        with self.lock:
            self.open.discard(id(conn))


class Watching(BaseAdapter):
    """Sends through the client's own adapter (its deadline included), noting per request how many
    transactions were open when it left."""

    def __init__(self, real: BaseAdapter, tx: OpenTransactions) -> None:
        super().__init__()
        self.real, self.tx = real, tx
        self.seen: list[tuple[str, int]] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        self.seen.append((f"{request.method} {request.path_url.split('?')[0]}", len(self.tx.open)))
        return self.real.send(request, *args, **kwargs)

    def close(self) -> None:
        self.real.close()


def test_no_transaction_is_open_during_any_http_call(db_url: str, clock: FakeClock,
                                                     clocked_sandbox: Any) -> None:
    sim = clocked_sandbox
    repo = open_repository(db_url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    client = ElementsClient(ClientSettings(base_url=sim.base_url, user_secret="sandbox-user-secret",
                                           org_secret="sandbox-org-secret",
                                           provider_root=f"{sim.root_url}/_provider"))
    watch = Watching(client.session.get_adapter(sim.base_url), OpenTransactions(repo.engine))
    client.session.mount("http://", watch)
    engine = Engine(repo, client, clock=clock, sleep=lambda _s: None)
    try:
        ids = [engine.start("quickbooks", "Quick", flow="quick", config=QUICK_CONFIG).id]
        for flow in ("oauth1", "oauth2"):
            a = engine.start("quickbooks", f"Renewed {flow}", flow=flow, renewal="engine", **QBO)
            engine.run_until_idle()
            engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or ""))
            ids.append(a.id)
        engine.run_until_idle()
        assert all(engine.get(i).state is State.PROVISIONED for i in ids)
        for attempt_id in sorted(ids[1:], key=lambda i: engine.get(i).next_renewal_at or T0):
            before = engine.get(attempt_id)  # OAuth2 renews within the hour, OAuth1 in its window
            assert before.next_renewal_at is not None
            clock.now = before.next_renewal_at
            engine.run_until_idle()  # the renewal, then its push
            after = engine.get(attempt_id)
            assert after.state is State.PROVISIONED and after.refresh_time != before.refresh_time
    finally:
        engine.close()
    sent = [path for path, _open in watch.seen]
    assert any("/_provider" in p for p in sent) and any(p.startswith("PATCH") or p.startswith("PUT")
                                                        for p in sent), sent
    assert [(path, n) for path, n in watch.seen if n] == []
