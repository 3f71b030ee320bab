"""The console's list, attempt page, actions and bulk actions over a real engine and the sandbox
(werkzeug's test client: no browser, no socket; the browser test drives the same pages)."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.fernet import Fernet
from testkit import QBO, quick_config
from werkzeug.test import Client

from engine import Engine, FakeClock
from engine.security.crypto import FernetCodec
from engine.web import console_query
from persistence.schema import attempts
from persistence.workers import beat
from states import State

ConsoleFor = Callable[..., Client]
Csrf = Callable[[str], str]
ID_LINK = re.compile(r'<a href="/attempts/([0-9a-f-]{36})">')


def ids_on(client: Client, url: str) -> list[str]:
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    body = response.get_data(as_text=True)
    assert "dev-consumer-secret" not in body  # QUICK_CONFIG's api secret never reaches a page
    return ID_LINK.findall(body.split('<div id="live"', 1)[1])


def newest_first(*groups: list[Any]) -> list[str]:
    """Ids in the list's order: newest first, then by id (attempts started together tie)."""
    every = [a for g in groups for a in g]
    return [a.id for a in sorted(every, key=lambda a: (-a.created_at.timestamp(), a.id))]


def quick(engine: Engine, name: str) -> Any:
    return engine.start("quickbooks", name, flow="quick", config=quick_config())


def test_counts_filters_and_search(web_engine: Engine, console_for: ConsoleFor, clock: FakeClock,
                                   sandbox: Any) -> None:
    client = console_for(web_engine)
    ok = [quick(web_engine, f"Good {i}") for i in range(3)]
    web_engine.run_until_idle()
    sandbox.set_faults(fails={"create_instance": {"rate": 1.0, "status": 400}})
    clock.advance(3600 * 30)
    bad = [quick(web_engine, f"Bad {i}") for i in range(2)]
    web_engine.run_until_idle()
    assert {web_engine.get(a.id).state for a in bad} == {State.FAILED}
    reason = web_engine.get(bad[0].id).failure_reason
    body = client.get("/").get_data(as_text=True)
    cards = dict((label, int(n)) for n, label in re.findall(r"<b>(\d+)</b>(\w+)</a>", body))
    assert cards["PROVISIONED"] == 3 and cards["FAILED"] == 2 and cards["total"] == 5 and cards["NEW"] == 0
    assert ids_on(client, "/") == newest_first(bad, ok)
    assert ids_on(client, "/?state=failed") == newest_first(bad)
    assert ids_on(client, f"/?reason={reason}") == newest_first(bad)
    assert ids_on(client, "/?reason=user_denied") == []
    assert ids_on(client, "/?age=gt24h") == newest_first(ok)
    assert ids_on(client, "/?age=lt24h&element=quickbooks") == newest_first(bad)
    assert ids_on(client, "/?element=hubspot") == []
    assert ids_on(client, f"/?search={ok[1].id[:6]}") == [ok[1].id]
    assert ids_on(client, "/?search=good 2") == [ok[2].id]
    assert ids_on(client, "/?view=failed") == newest_first(bad)
    for bad_query in ("state=BOGUS", "age=forever", "view=x", "search=%3Cscript%3E", "after=nonsense"):
        response = client.get(f"/?{bad_query}")
        assert response.status_code == 400 and "<script>" not in response.get_data(as_text=True), bad_query


def test_keyset_pages_cover_ties_exactly_once(web_engine: Engine, console_for: ConsoleFor,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_query, "PAGE_SIZE", 7)
    # One start_many: every attempt has the same created_at (the fake clock does not move).
    batch = web_engine.start_many([{"element": "quickbooks", "name": f"T{i:02}", "flow": "quick",
                                    "config": quick_config()} for i in range(20)])
    client = console_for(web_engine)
    seen: list[str] = []
    url = "/"
    for _ in range(5):
        body = client.get(url).get_data(as_text=True)
        seen += ID_LINK.findall(body.split('<div id="live"', 1)[1])
        nxt = re.search(r'<a href="(/\?after=[^"]+)">Next page</a>', body)
        if not nxt:
            break
        url = nxt[1].replace("&amp;", "&")
    assert len(seen) == 20 and sorted(seen) == sorted(a.id for a in batch)


def test_a_sparse_search_finds_the_oldest_match_on_page_one(
        web_engine: Engine, console_for: ConsoleFor, monkeypatch: pytest.MonkeyPatch,
        clock: FakeClock) -> None:
    monkeypatch.setattr(console_query, "PAGE_SIZE", 3)
    target = quick(web_engine, "Needle")  # the oldest: behind every page of the unfiltered list
    for i in range(8):
        clock.advance(1)
        quick(web_engine, f"Hay {i}")
    client = console_for(web_engine)
    body = client.get("/?search=needle").get_data(as_text=True)
    assert ID_LINK.findall(body.split('<div id="live"', 1)[1]) == [target.id]
    assert "1 shown of 1 matching" in body and "Next page" not in body
    assert "3 shown of 9 matching" in client.get("/").get_data(as_text=True)


def test_retrying_attempts_need_attention(web_engine: Engine, console_for: ConsoleFor, sandbox: Any) -> None:
    sandbox.set_faults(fails={"create_instance": {"rate": 1.0, "status": 503}})
    failing = quick(web_engine, "Flaky")
    healthy = web_engine.start("quickbooks", "Waiting", flow="oauth2", **QBO)
    web_engine.run_until_idle()
    a = web_engine.get(failing.id)
    assert a.state is State.NEW and a.failures == 1
    client = console_for(web_engine)
    assert ids_on(client, "/?view=retrying") == [failing.id]
    assert ids_on(client, "/?view=attention") == [failing.id]
    assert web_engine.get(healthy.id).state is State.REDIRECTED
    listing = client.get("/").get_data(as_text=True)
    assert '<span class="retrying">NEW (retrying)</span>' in listing
    assert re.search(r"<b>1</b>retrying</a>", listing)
    page = client.get(f"/attempts/{failing.id}").get_data(as_text=True)
    assert "<dt>next retry</dt>" in page and "unavailable" in page
    assert "<dt>renewal owner</dt><dd>engine</dd>" in page  # quick: the engine renews (DESIGN §7)
    redirected = client.get(f"/attempts/{healthy.id}").get_data(as_text=True)
    consent = web_engine.redirect_url(web_engine.get(healthy.id))
    assert consent and "<dt>consent URL</dt>" in redirected and "<dt>consent deadline</dt>" in redirected
    assert consent.replace("&", "&amp;") in redirected
    assert "<dt>renewal owner</dt><dd>platform</dd>" in redirected  # a consent flow: the platform does


def test_actions_are_confirmed_recorded_and_offered_only_where_they_apply(
        web_engine: Engine, console_for: ConsoleFor, csrf: Csrf) -> None:
    client = console_for(web_engine)
    a = quick(web_engine, "Stopped Co")
    page = client.get(f"/attempts/{a.id}").get_data(as_text=True)
    assert f'href="/attempts/{a.id}/cancel"' in page
    assert f'href="/attempts/{a.id}/restart"' not in page and "/reauthorize" not in page
    confirm = client.get(f"/attempts/{a.id}/cancel").get_data(as_text=True)
    assert "(NEW) stops where it is and becomes FAILED (cancelled)" in confirm and "Yes, cancel" in confirm
    assert web_engine.get(a.id).state is State.NEW  # asking changed nothing
    assert client.post(f"/attempts/{a.id}/cancel", data={"csrf": csrf(confirm)}).status_code == 303
    assert web_engine.get(a.id).state is State.FAILED
    # A connection is not cancelled (that would orphan its instance): no button, and a POST is refused.
    live = quick(web_engine, "Live Co")
    web_engine.run_until_idle()
    page = client.get(f"/attempts/{live.id}").get_data(as_text=True)
    assert f'href="/attempts/{live.id}/cancel"' not in page
    assert f'href="/attempts/{live.id}/disconnect"' in page
    refused = client.post(f"/attempts/{live.id}/cancel", data={"csrf": csrf(confirm)})
    assert refused.status_code == 409 and web_engine.get(live.id).state is State.PROVISIONED
    # A quick-flow attempt has no consent to repeat: no reauthorize button, and a POST is refused.
    page = client.get(f"/attempts/{a.id}").get_data(as_text=True)
    assert "/reauthorize" not in page and f'href="/attempts/{a.id}/restart"' in page
    refused = client.post(f"/attempts/{a.id}/reauthorize", data={"csrf": csrf(confirm)})
    assert refused.status_code == 409 and "does not apply" in refused.get_data(as_text=True)
    # Disconnect (issue 10/12) asks first and says the instance is deleted; asking changes nothing.
    asked = client.get(f"/attempts/{a.id}/disconnect")
    assert asked.status_code == 200 and "is DELETED" in asked.get_data(as_text=True)
    assert web_engine.get(a.id).state is State.FAILED
    client.post(f"/attempts/{a.id}/restart", data={"csrf": csrf(confirm)})
    history = web_engine.history(a.id)
    assert [(h.trigger, h.note) for h in history[-2:]] == [("fail", "operator:local"),
                                                          ("restart", "operator:local")]
    timeline = client.get(f"/attempts/{a.id}").get_data(as_text=True)
    assert timeline.count("<td>operator:local</td>") == 2


def test_bulk_restart_has_a_dry_run_then_acts_on_the_selection(
        web_engine: Engine, console_for: ConsoleFor, csrf: Csrf, sandbox: Any) -> None:
    sandbox.set_faults(fails={"create_instance": {"rate": 1.0, "status": 400}})
    failed = web_engine.start_many([{"element": "quickbooks", "name": f"F{i}", "flow": "quick",
                                     "config": quick_config()} for i in range(12)])
    web_engine.run_until_idle()
    sandbox.set_faults()
    client = console_for(web_engine)
    assert "Bulk actions" not in client.get("/").get_data(as_text=True)  # no filter: no bulk
    listing = client.get("/?state=FAILED").get_data(as_text=True)
    assert 'href="/bulk/restart?state=FAILED"' in listing
    refused = client.get("/bulk/restart?state=NEW")
    assert refused.status_code == 409
    dry = client.get("/bulk/restart?state=FAILED").get_data(as_text=True)
    assert "Dry run: 12 attempts would be affected" in dry and "Nothing has changed yet" in dry
    assert {web_engine.get(a.id).state for a in failed} == {State.FAILED}
    # The selection changes between the dry run and the confirmation: nothing is done.
    extra = quick(web_engine, "Late")
    sandbox.set_faults(fails={"create_instance": {"rate": 1.0, "status": 400}})
    web_engine.run_until_idle()
    sandbox.set_faults()
    changed = client.post("/bulk/restart", data={"state": "FAILED", "csrf": csrf(dry), "expected": "12"})
    assert changed.status_code == 409 and "13 attempts match now" in changed.get_data(as_text=True)
    assert web_engine.get(extra.id).state is State.FAILED
    done = client.post("/bulk/restart", data={"state": "FAILED", "csrf": csrf(dry), "expected": "13"})
    assert "Restart: 13 done, 0 skipped" in done.get_data(as_text=True)
    web_engine.run_until_idle()
    assert {web_engine.get(a.id).state for a in [*failed, extra]} == {State.PROVISIONED}
    assert {web_engine.history(a.id)[-2].note for a in failed} == {"operator:local"}


def test_every_read_is_a_bounded_page(web_engine: Engine, console_for: ConsoleFor, clock: FakeClock,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Fast with 100,000 attempts: the console reads rows only through ``Engine.find`` with a LIMIT
    (one page and one more row), never the whole list; the counts are COUNT(*) in the database."""
    for batch in range(3):  # start_many: 500 attempts share one created_at
        clock.advance(60)
        web_engine.start_many([{"element": "quickbooks", "name": f"B{batch}-{i}", "flow": "quick",
                                "config": quick_config()} for i in range(500)])
    reads: list[tuple[int, int]] = []
    real_find = web_engine.find

    def counting_find(*args: Any, **kw: Any) -> list[Any]:
        rows = real_find(*args, **kw)
        reads.append((kw["limit"], len(rows)))
        return rows

    def no_list(*args: Any, **kw: Any) -> list[Any]:
        raise AssertionError("the console filters in SQL: Engine.list is not used")

    monkeypatch.setattr(web_engine, "find", counting_find)
    monkeypatch.setattr(web_engine, "list", no_list)
    client = console_for(web_engine)
    for url in ("/", "/?state=NEW", "/?view=attention", "/?search=b1-17", "/?reason=cancelled"):
        reads.clear()
        assert client.get(url).status_code == 200, url
        assert [limit for limit, _ in reads] == [console_query.PAGE_SIZE + 1], (url, reads)
    assert "50 shown of 1500 matching" in client.get("/").get_data(as_text=True)
    assert "11 shown of 11 matching" in client.get("/?search=b1-17").get_data(as_text=True)


def test_quarantined_attempt_needs_attention(web_engine: Engine, console_for: ConsoleFor) -> None:
    """A row sealed under another key is listed under "needs attention" and its page says why."""
    bad = quick(web_engine, "Sealed elsewhere")
    foreign = FernetCodec([Fernet.generate_key()]).seal({"config": quick_config()})
    with web_engine.repo.engine.begin() as conn:
        conn.execute(attempts.update().where(attempts.c.id == bad.id).values(secrets=foreign))
    web_engine.run_until_idle()
    client = console_for(web_engine)
    assert ids_on(client, "/?view=attention") == [bad.id]
    page = client.get(f"/attempts/{bad.id}").get_data(as_text=True)
    assert "unreadable_secrets" in page and "needs operator action" in page


def test_attempt_page_shows_live_workers(web_engine: Engine, console_for: ConsoleFor) -> None:
    attempt = quick(web_engine, "Watched")
    client = console_for(web_engine)
    assert "No live worker" in client.get(f"/attempts/{attempt.id}").get_data(as_text=True)
    beat(web_engine.repo.engine, "host-a:42:feed", host="host-a", pid=42, role="worker",
         key_ids=("0badc0de",), leases=3)
    page = client.get(f"/attempts/{attempt.id}").get_data(as_text=True)
    assert "host-a:42:feed" in page and "0badc0de" in page and "<h2" in page and "Workers" in page
