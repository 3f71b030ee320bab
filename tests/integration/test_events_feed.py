"""The events outbox end to end (issue 10/12): one event per committed transition, the cursor feed,
hooks, and PostgreSQL's commit-ordered sequence. Real sandbox over HTTP, SQLite and PostgreSQL."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet
from testkit import QBO, TEST_KEY, consent, listening, quick_config

from engine import Engine, FakeClock
from engine.cli.events import run_feed
from engine.cli.main import main as cli_main
from engine.core import events as ev
from engine.core.events import Event
from engine.errors import InvalidInputError
from engine.security.crypto import FernetCodec
from persistence.schema import attempts
from states import State

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
PROVISION = str(Path(sys.executable).with_name("provision"))


def all_history(engine: Engine, ids: list[str]) -> set[tuple[str, int]]:
    return {(i, h.seq) for i in ids for h in engine.history(i)}


def assert_type_filters_agree(engine: Engine) -> None:
    """``events(types=...)`` is the whole feed filtered by type, for every type, in every page size."""
    everything = engine.events(limit=10_000)
    for kind in (*ev.EVENT_TYPES, (ev.PROVISIONED, ev.RECOVERED), (ev.REDIRECTED, ev.FAILED)):
        wanted = {kind} if isinstance(kind, str) else set(kind)
        expected = [e.seq for e in everything if e.type in wanted]
        assert [e.seq for e in engine.events(limit=10_000, types=kind)] == expected, kind
        for limit in (1, 2):
            pages: list[int] = []
            cursor = 0
            while True:
                page = engine.events(after=cursor, limit=limit, types=kind)
                assert len(page) <= limit and page.cursor >= (page[-1].seq if page else cursor)
                pages += [e.seq for e in page]
                cursor = page.cursor
                if len(page) < limit:
                    break
            assert pages == expected, (kind, limit)
            assert cursor == everything[-1].seq  # read to the end, whatever the last match


def oauth(engine: Engine, flow: str, decision: str = "approve", renewal: str | None = None) -> str:
    a = engine.start("quickbooks", f"{flow} {decision}", flow=flow, renewal=renewal, **QBO)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or "", decision=decision))
    engine.run_until_idle()
    return a.id


def test_every_committed_transition_has_exactly_one_event_in_sequence(
        make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    ids = [oauth(engine, "oauth1"), oauth(engine, "oauth2"), oauth(engine, "oauth1", "deny")]
    ids.append(engine.start("quickbooks", "quick", flow="quick", config=quick_config()).id)
    engine.run_until_idle()
    engine.cancel(engine.start("quickbooks", "cancelled", flow="oauth2", **QBO).id)
    ids.append(engine.list(State.FAILED, limit=1)[0].id)
    feed = engine.events(limit=1000)
    assert [e.seq for e in feed] == sorted({e.seq for e in feed})  # strictly increasing
    assert {(e.attempt_id, e.data["history_seq"]) for e in feed} == all_history(engine, ids)
    by_attempt = {i: [e.type for e in feed if e.attempt_id == i] for i in ids}
    assert by_attempt[ids[0]] == [ev.TOKEN_ISSUED, ev.REDIRECTED, ev.CALLBACK_RECEIVED, ev.PROVISIONED]
    assert by_attempt[ids[1]] == [ev.REDIRECTED, ev.CALLBACK_RECEIVED, ev.PROVISIONED]
    assert by_attempt[ids[2]] == [ev.TOKEN_ISSUED, ev.REDIRECTED, ev.FAILED]
    assert by_attempt[ids[3]] == [ev.PROVISIONED]
    assert by_attempt[ids[4]] == [ev.FAILED]
    provisioned = [e for e in feed if e.type == ev.PROVISIONED]
    assert all(e.data["instance_id"] == engine.get(e.attempt_id).instance_id for e in provisioned)
    denied = next(e for e in feed if e.attempt_id == ids[2] and e.type == ev.FAILED)
    assert denied.data["reason"] == "user_denied" and "new attempt" in denied.data["hint"]
    cancelled = next(e for e in feed if e.attempt_id == ids[4])
    assert cancelled.data["reason"] == "cancelled" and cancelled.data["previous_state"] == "NEW"
    payload = provisioned[0].payload
    assert set(payload) == {"type", "timestamp", "data"} and payload["timestamp"].endswith("Z")
    assert {"attempt_id", "customer", "element", "name", "state", "reason", "hint", "instance_id"} <= set(
        payload["data"])
    json.dumps([e.payload for e in feed])  # JSON-ready
    assert_type_filters_agree(engine)


def test_feed_resumes_from_a_cursor(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    oauth(engine, "oauth1")
    everything = engine.events(limit=1000)
    pages: list[Event] = []
    cursor = 0
    while page := engine.events(after=cursor, limit=2):
        pages.extend(page)
        cursor = page[-1].seq
    assert [e.seq for e in pages] == [e.seq for e in everything] and len(everything) == 4
    assert engine.events(after=cursor) == []
    later = oauth(engine, "oauth2")  # a consumer that stopped at `cursor` sees exactly what came after
    assert [e.attempt_id for e in engine.events(after=cursor)] == [later] * 3
    with pytest.raises(InvalidInputError, match="after"):
        engine.events(after=-1)


def test_the_consent_url_travels_with_the_redirect_while_it_is_usable(
        make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    seen: list[Event] = []
    engine.subscribe(seen.append, types=[ev.REDIRECTED])
    a = engine.start("quickbooks", "consent", flow="oauth2", **QBO)
    engine.run_until_idle()
    url = engine.redirect_url(engine.get(a.id))
    assert url and [e.data["consent_url"] for e in seen] == [url]
    assert engine.events()[-1].data["consent_url"] == url
    engine.handle_callback(consent(url))
    assert engine.events()[0].data["consent_url"] is None  # spent: the attempt moved on



def reading(statements: list[str]) -> list[str]:
    """``statements`` less those that give new events their position (PostgreSQL: migration 0012)."""
    return [s for s in statements if "position IS NULL" not in s and "events_position" not in s]

def test_a_page_of_redirects_looks_up_its_consent_urls_in_one_query(
        make_engine: Callable[..., Engine]) -> None:
    # Before, each redirect event read its attempt on its own: the feed's cost per attempt, not
    # per page (0.9 ms of CPU per redirect on PostgreSQL in bench/engine_bench.py's driver).
    engine = make_engine()
    waiting = [engine.start("quickbooks", f"waiting {i}", flow="oauth2", **QBO).id for i in range(5)]
    moved_on = engine.start("quickbooks", "moved on", flow="oauth2", **QBO).id
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(moved_on)) or ""))
    statements: list[str] = []
    with listening(engine.repo.engines, before_cursor_execute=lambda *a: statements.append(a[2])):
        feed = engine.events(limit=1000)
    reads = [s for s in reading(statements) if " ".join(s.split()).upper().startswith("SELECT")]
    assert len(reads) == 2, reads  # the page, then the attempts of its waiting redirects
    urls = {e.attempt_id: e.data["consent_url"] for e in feed if e.type == ev.REDIRECTED}
    assert urls == {**{i: engine.redirect_url(engine.get(i)) for i in waiting}, moved_on: None}
    assert len(set(urls.values())) == len(waiting) + 1 and all(urls[i] for i in waiting)


def test_a_feed_of_redirects_reads_only_redirect_rows(make_engine: Callable[..., Engine],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # An application that hands consent URLs to users follows only attempt.redirected: the
    # database filters the other transitions out instead of the reader building and dropping them.
    engine = make_engine()
    ids = [oauth(engine, "oauth1") for _ in range(3)]
    waiting = engine.start("quickbooks", "waiting", flow="oauth2", **QBO).id
    engine.run_until_idle()
    assert len(engine.events(limit=1000)) == 13
    outbox = engine.dispatch.outbox
    read, fetched = outbox.read_matching, []

    def counted(*args: Any, **kwargs: Any) -> Any:  # passes every call through, counting rows
        rows, end = read(*args, **kwargs)
        fetched.append(len(rows))
        return rows, end

    monkeypatch.setattr(outbox, "read_matching", counted)
    statements: list[str] = []
    with listening(engine.repo.engines, before_cursor_execute=lambda *a: statements.append(a[2])):
        feed = engine.events(limit=1000, types=ev.REDIRECTED)
    assert [e.attempt_id for e in feed] == [*ids, waiting] and {e.type for e in feed} == {ev.REDIRECTED}
    assert [e.data["consent_url"] is not None for e in feed] == [False] * 3 + [True]
    # The page of redirects (with the feed's end, in the same statement), then the consent URL.
    assert fetched == [4] and len(reading(statements)) == 2
    assert feed.cursor == 13


def test_a_reader_of_a_rare_type_resumes_past_the_events_it_looked_at(
        make_engine: Callable[..., Engine]) -> None:
    # Following connection.reauthorization_required (or attempt.failed) on a busy system: each read
    # must start after what the last one looked at, not after the last match, or it would scan
    # every event since that match again, on every poll.
    engine = make_engine()
    oauth(engine, "oauth1")
    page = engine.events(types=ev.FAILED)
    assert page == [] and page.cursor == 4
    oauth(engine, "oauth2")
    denied = oauth(engine, "oauth2", "deny")
    page = engine.events(after=page.cursor, types=ev.FAILED)
    assert [(e.attempt_id, e.seq) for e in page] == [(denied, 9)] and page.cursor == 9
    assert engine.events(after=page.cursor, types=[ev.FAILED]).cursor == 9
    whole = engine.events(after=2, limit=3)  # without types, the cursor is the last event's
    assert [e.seq for e in whole] == [3, 4, 5] and whole.cursor == 5
    assert engine.events(after=9).cursor == 9
    with pytest.raises(InvalidInputError, match="unknown event types"):
        engine.events(types=["attempt.exploded"])
    with pytest.raises(InvalidInputError, match="none given"):
        engine.events(types=[])


def test_a_redirect_whose_secrets_no_key_opens_does_not_stop_the_feed(
        make_engine: Callable[..., Engine]) -> None:
    # Before, the feed (and the hooks, and the webhooks) raised at that event on every read.
    engine = make_engine()
    good = engine.start("quickbooks", "readable", flow="oauth2", **QBO).id
    bad = engine.start("quickbooks", "sealed elsewhere", flow="oauth2", **QBO).id
    engine.run_until_idle()
    foreign = FernetCodec([Fernet.generate_key()]).seal(engine.get(bad).secrets)
    with engine.repo.engine.begin() as conn:
        conn.execute(attempts.update().where(attempts.c.id == bad).values(secrets=foreign))
    urls = {e.attempt_id: e.data["consent_url"] for e in engine.events(limit=1000) if e.type == ev.REDIRECTED}
    assert urls == {good: engine.redirect_url(engine.get(good)), bad: None} and urls[good]


def test_renewal_rejection_and_recovery_are_connection_events(
        db_url: str, engine_on: Callable[..., Engine], clock: FakeClock, clocked_sandbox: Any) -> None:
    # The engine and the simulator share one fake clock (tests/conftest.py: one fake-clock mechanism).
    sandbox = clocked_sandbox
    engine = engine_on(db_url, clock=clock, sim=sandbox)
    attempt_id = oauth(engine, "oauth2", renewal="engine")  # the engine's own refresh is what fails here

    def due() -> datetime:
        when = engine.get(attempt_id).next_run_at
        assert when is not None
        return when

    clock.now = due()
    engine.run_until_idle()  # one renewal
    a = engine.get(attempt_id)
    stolen = a.secrets["user_tokens"]["oauth.user.refresh_token"]
    assert requests.post(f"{sandbox.root_url}/_provider/oauth2/tokens/bearer",
                         auth=(QBO["api_key"], QBO["api_secret"]),
                         data={"grant_type": "refresh_token", "refresh_token": stolen}, timeout=5).ok
    for _ in range(2):  # a first invalid_grant is confirmed once before the attempt fails
        clock.now = due()
        engine.run_until_idle()
    assert engine.get(attempt_id).failure_reason == "renewal_rejected"
    engine.reauthorize(attempt_id)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(attempt_id)) or ""))
    engine.run_until_idle()
    types = [e.type for e in engine.events()]
    assert types == [ev.REDIRECTED, ev.CALLBACK_RECEIVED, ev.PROVISIONED, ev.RENEWED,
                     ev.REAUTHORIZATION_REQUIRED, ev.RESTARTED, ev.REDIRECTED, ev.CALLBACK_RECEIVED,
                     ev.RECOVERED]
    required = engine.events()[4]
    assert required.data["reason"] == "renewal_rejected" and "reauthorize" in required.data["hint"]
    assert required.data["instance_id"] == engine.get(attempt_id).instance_id is not None
    # PROVISIONED, RENEWED and RECOVERED all reach PROVISIONED: the type filter tells them apart.
    assert_type_filters_agree(engine)


def test_hooks_run_after_the_commit_and_a_raising_hook_affects_nothing(
        make_engine: Callable[..., Engine], caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine()
    calls: list[tuple[str, int]] = []

    def record(event: Event) -> None:
        # After the commit: the transition is already readable from another connection.
        calls.append((event.type, engine.get(event.attempt_id).history_seq - event.data["history_seq"]))

    def explode(event: Event) -> None:
        raise RuntimeError(f"hook bug on {event.type}")

    engine.subscribe(explode)
    engine.subscribe(record, types=[ev.PROVISIONED, ev.FAILED])
    unsubscribe = engine.subscribe(explode, types=ev.REDIRECTED)
    unsubscribe()
    with caplog.at_level(logging.ERROR, logger="engine.core.delivery"):
        ok = oauth(engine, "oauth1")
        denied = oauth(engine, "oauth2", "deny")
    assert engine.get(ok).state is State.PROVISIONED and engine.get(denied).failure_reason == "user_denied"
    assert calls == [(ev.PROVISIONED, 0), (ev.FAILED, 0)]
    failures = [r for r in caplog.records if "event hook" in r.getMessage()]
    assert len(failures) == 6 and all(r.exc_info for r in failures)  # every event, each logged once
    with pytest.raises(InvalidInputError, match="unknown event types"):
        engine.subscribe(record, types=["attempt.exploded"])


def test_each_engine_runs_hooks_for_its_own_commits_only(make_engine: Callable[..., Engine]) -> None:
    first, second = make_engine(), make_engine()
    seen: dict[str, list[str]] = {"first": [], "second": []}
    first.subscribe(lambda e: seen["first"].append(e.attempt_id))
    second.subscribe(lambda e: seen["second"].append(e.attempt_id))
    a = first.start("quickbooks", "first", flow="quick", config=quick_config())
    first.run_until_idle()
    b = second.start("quickbooks", "second", flow="quick", config=quick_config())
    second.run_until_idle()
    first.run_until_idle()
    assert seen == {"first": [a.id], "second": [b.id]}


def test_cli_events_json_follow_and_redeliver(make_engine: Callable[..., Engine], db_url: str,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine()
    oauth(engine, "oauth1")
    monkeypatch.setenv("PROVISION_DB_URL", db_url)
    monkeypatch.setenv("PROVISION_SECRET_KEY", TEST_KEY)
    capsys.readouterr()
    assert cli_main(["--json", "events", "--after", "1", "--limit", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [e["seq"] for e in out["events"]] == [2, 3] and out["last_seq"] == 3
    assert out["events"][0]["type"] == ev.REDIRECTED and out["events"][0]["id"].startswith("msg_")
    assert cli_main(["events"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and ev.PROVISIONED in lines[-1]
    # --follow prints what commits while it runs (stopped here after four lines).
    printed: list[str] = []
    stop = threading.Event()

    def out_fn(line: str) -> None:
        printed.append(line)
        if len(printed) == 4:
            stop.set()

    args = argparse.Namespace(after=3, limit=100, follow=True, json=True, types=None)
    follower = threading.Thread(target=run_feed, args=(args, engine, out_fn, stop))
    follower.start()
    oauth(engine, "oauth2")
    follower.join(20)
    assert not follower.is_alive()
    assert [json.loads(p)["seq"] for p in printed] == [4, 5, 6, 7]
    assert cli_main(["--json", "events", "redeliver", "2"]) == 0
    assert json.loads(capsys.readouterr().out) == {"requeued": 1}
    assert cli_main(["events", "redeliver", "--failed"]) == 0
    assert "0 events queued" in capsys.readouterr().out
    assert cli_main(["events", "redeliver", "999"]) == 2
    assert "no event with sequence number 999" in capsys.readouterr().err
    assert cli_main(["--json", "events", "--type", ev.REDIRECTED, "--type", ev.PROVISIONED]) == 0
    only = json.loads(capsys.readouterr().out)
    assert [e["type"] for e in only["events"]] == [ev.REDIRECTED, ev.PROVISIONED] * 2
    assert only["last_seq"] == only["events"][-1]["seq"] == 7
    assert cli_main(["--json", "events", "--type", ev.FAILED]) == 0
    assert json.loads(capsys.readouterr().out) == {"events": [], "last_seq": 7}
    assert cli_main(["events", "--type", "attempt.exploded"]) == 2
    err = capsys.readouterr().err
    assert "--type" in err and "attempt.exploded" in err and ev.REDIRECTED in err


@pytest.mark.realtime
def test_provision_events_follow_prints_new_events_and_stops_on_sigterm(
        engine_on: Callable[..., Engine], sqlite_url: str) -> None:
    engine = engine_on(sqlite_url)
    env = {**os.environ, "PROVISION_DB_URL": sqlite_url, "PROVISION_SECRET_KEY": TEST_KEY}
    proc = subprocess.Popen([PROVISION, "--json", "events", "--follow"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        a = engine.start("quickbooks", "follow", flow="quick", config=quick_config())
        engine.run_until_idle()
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert line["type"] == ev.PROVISIONED and line["data"]["attempt_id"] == a.id and line["seq"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
