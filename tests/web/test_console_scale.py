"""The console's filters run in SQL (issue 18 must-have 2, "fast with 100,000 attempts").

A SQLite file is seeded with 100,000 attempts in bulk (one executemany through SQLAlchemy Core, not
the API). The rows each filter must find are the OLDEST ones, far beyond the first 2,000 that the
old console read before filtering in Python: a filtered page must still show them, with exact
counts and working keyset paging. Correctness only; timings come from bench/console_query.py.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from testkit import TEST_KEY
from werkzeug.test import Client

from engine import Engine, FakeClock
from engine.clients.elements import ElementsClient
from engine.config import ClientSettings, ConsoleSettings
from engine.web.console import make_console
from engine.wiring import open_repository
from persistence.quarantine import QUARANTINE_ERROR
from persistence.schema import attempts
from states.model import State

ROWS = 100_000
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
ID_LINK = re.compile(r'<a href="/attempts/([0-9a-f-]{36})">')


def row(n: int, created: datetime, **values: Any) -> dict[str, Any]:
    """One attempts row as the repository writes it (no secrets: none are needed to list it)."""
    return {"id": str(uuid.UUID(int=n)), "idempotency_key": None, "element_key": "quickbooks",
            "flow": "quick", "name": f"Hay {n}", "tags": [], "state": State.PROVISIONED.value, "version": 1,
            "history_seq": 1, "runs": 1, "created_at": created, "updated_at": created, "next_run_at": None,
            "failures": 0, "renewals": 0, "customer": f"c{n % 997}", "failure_reason": None, "health": None,
            "health_reason": None, "last_error": None, **values}  # every row the same keys: one executemany


def seed(engine: Engine) -> dict[str, list[str]]:
    """100,000 rows; the special ones are the oldest. Returns their ids, newest first."""
    special: dict[str, list[str]] = {"acme": [], "retrying": [], "denied": [], "unhealthy": [], "needle": [],
                                     "quarantined": []}
    rows = []
    extra: dict[str, Any]
    for n in range(ROWS):
        created = NOW - timedelta(days=30) + timedelta(seconds=n)  # n = 0 is the oldest
        kind, extra = "hay", {}
        if n < 60:
            kind, extra = "acme", {"customer": "acme-oldest"}
        elif n < 65:
            kind, extra = "retrying", {"state": State.NEW.value, "failures": 2, "next_run_at": NOW}
        elif n < 68:
            kind, extra = "denied", {"state": State.FAILED.value, "failure_reason": "user_denied"}
        elif n < 70:
            kind, extra = "unhealthy", {"health": "unhealthy", "health_reason": "instance_missing"}
        elif n == 70:
            kind, extra = "needle", {"name": "The Needle Company"}
        elif n == 71:
            kind, extra = "quarantined", {"state": State.NEW.value, "last_error": QUARANTINE_ERROR}
        if kind != "hay":
            special[kind].insert(0, str(uuid.UUID(int=n)))
        rows.append(row(n, created, **extra))
    with engine.repo.engine.begin() as conn:
        conn.execute(attempts.insert(), rows)
    return special


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Engine, dict[str, list[str]]]]:
    """One seeded database for the module (seeding takes seconds); no platform is called."""
    url = f"sqlite:///{tmp_path_factory.mktemp('scale') / 'p.db'}"
    repo = open_repository(url, migrate=True, environ={"PROVISION_SECRET_KEY": TEST_KEY})
    engine = Engine(repo, ElementsClient(ClientSettings(
        base_url="http://127.0.0.1:9/elements/api-v2", user_secret="unused", org_secret="unused")),
                    clock=FakeClock(NOW))
    special = seed(engine)
    yield engine, special
    engine.close()


def ids_on(client: Client, url: str) -> tuple[list[str], str]:
    body = client.get(url).get_data(as_text=True)
    return ID_LINK.findall(body.split('<div id="live"', 1)[1]), body


@pytest.mark.slow
def test_filters_find_rows_far_beyond_the_first_2000(seeded: tuple[Engine, dict[str, list[str]]]) -> None:
    engine, special = seeded
    client = Client(make_console(engine, ConsoleSettings()))
    first, body = ids_on(client, "/?customer=acme-oldest")
    assert first == special["acme"][:50] and "50 shown of 60 matching" in body
    nxt = re.search(r'<a href="(/\?[^"]+)">Next page</a>', body)
    assert nxt is not None
    second, body = ids_on(client, nxt[1].replace("&amp;", "&"))
    assert second == special["acme"][50:] and "Next page" not in body

    assert ids_on(client, "/?view=retrying")[0] == special["retrying"]
    assert ids_on(client, "/?reason=user_denied")[0] == special["denied"]
    assert ids_on(client, "/?view=failed&reason=user_denied")[0] == special["denied"]
    assert ids_on(client, "/?view=unhealthy")[0] == special["unhealthy"]
    assert ids_on(client, "/?search=needle")[0] == special["needle"]
    assert ids_on(client, f"/?search={special['needle'][0]}")[0] == special["needle"]  # an id (prefix)
    attention, body = ids_on(client, "/?view=attention")
    assert sorted(attention) == sorted(special["retrying"] + special["denied"] + special["unhealthy"]
                                       + special["quarantined"])
    assert "11 shown of 11 matching" in body
    listing = client.get("/").get_data(as_text=True)
    assert re.search(r"<b>5</b>retrying</a>", listing) and re.search(r"<b>2</b>unhealthy</a>", listing)
    assert f"50 shown of {ROWS} matching" in listing
    # Age: the seeded rows span 100,000 s after NOW - 30 days; all older than 7 days.
    assert f"50 shown of {ROWS} matching" in client.get("/?age=gt7d").get_data(as_text=True)
    assert "0 shown of 0 matching" in client.get("/?age=lt24h").get_data(as_text=True)
    dry = client.get("/bulk/restart?state=FAILED&reason=user_denied").get_data(as_text=True)
    assert "Dry run: 3 attempts would be affected" in dry
