"""``provision serve`` over real HTTP: only its routes and methods, bounded requests, no reflection,
single use, rejected callbacks recorded and logged with their reason (never shown to the customer),
no secret in its logs, and progress links that are not attempt ids.

Backends: the tests whose outcome is what the database stores run on SQLite and on PostgreSQL
(``served_on_each``, over ``db_url``): a callback applied once, its duplicate and a forgery of a
used state recorded against their attempt, and forged or unknown callbacks refused, limited and
stored nowhere (checked on every table, ``stored_rows``). The tests of HTTP handling alone stay on
SQLite (``served``): methods and routes, size limits, escaping and malformed request lines are
decided by waitress and ``CallbackApp`` before the engine or a database is asked, so a second
backend would run the same code for twice the time.
"""
from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy as sa
from testkit import QBO, consent, on_waitress, stored_rows

from engine import Engine
from engine.web.callback_app import MAX_QUERY_CHARS, MAX_REQUEST_LINE, make_app
from engine.web.ratelimit import RateLimiter
from persistence.schema import callbacks
from states import State
from states.judge import ALREADY_APPLIED

Served = tuple[Engine, str, list[float]]
BURST = 5  # refused callbacks an address may send before 429 (the limiter's clock does not move)


@contextmanager
def serving(engine: Engine, limiter: RateLimiter | None = None) -> Iterator[str]:
    """The receiver of ``engine`` under the production server (waitress), as ``provision serve``
    runs it, on a free loopback port; yields its base URL. ``limiter``: as ``make_app``'s."""
    with on_waitress(make_app(engine, limiter=limiter)) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def served(sqlite_url: str, engine_on: Callable[..., Engine]) -> Iterator[tuple[Engine, str]]:
    """The receiver on a SQLite file: for the tests of HTTP handling (see the module docstring)."""
    engine = engine_on(sqlite_url)
    with serving(engine) as base:
        yield engine, base


@pytest.fixture
def served_limited(db_url: str, engine_on: Callable[..., Engine]) -> Iterator[Served]:
    """The receiver on each backend with a ``BURST``-token limiter on a fake clock (``now[0]``, s)."""
    engine, now = engine_on(db_url), [0.0]
    limiter = RateLimiter(burst=BURST, per_second=1.0, max_addresses=100, clock=lambda: now[0])
    with serving(engine, limiter) as base:
        yield engine, base, now


@pytest.fixture
def served_on_each(db_url: str, engine_on: Callable[..., Engine]) -> Iterator[tuple[Engine, str]]:
    """The receiver on each backend: for the tests of what a callback stores."""
    engine = engine_on(db_url)
    with serving(engine) as base:
        yield engine, base


def inbox(engine: Engine) -> list[tuple[str | None, str, str | None]]:
    """The callbacks table, read with SQL (not through the repository): attempt, status, reason."""
    with engine.repo.engine.connect() as conn:
        rows = conn.execute(sa.select(callbacks.c.attempt_id, callbacks.c.status, callbacks.c.reason)
                            .order_by(callbacks.c.id)).all()
    return [(r.attempt_id, r.status, r.reason) for r in rows]


def raw(base: str, data: bytes, source: str | None = None) -> bytes:
    """Send raw bytes, return the whole answer (for requests no HTTP client would send).

    ``source``: the loopback address to send from (another client address for the rate limiter).
    """
    parts = urlsplit(base)
    assert parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=5,
                                  source_address=(source, 0) if source else None) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def redirect_to(base: str, location: str) -> str:
    """The provider's redirect, pointed at our receiver instead of the app's callback URL."""
    return f"{base}/callback?{urlsplit(location).query}"


def test_callback_applies_once_then_duplicate_and_forgeries_are_rejected(
        served_on_each: tuple[Engine, str], caplog: pytest.LogCaptureFixture) -> None:
    engine, base = served_on_each
    a = engine.start("quickbooks", "served", flow="oauth2", **QBO)
    engine.run_until_idle()
    url = redirect_to(base, consent(engine.redirect_url(engine.get(a.id)) or ""))
    assert requests.head(url, timeout=5).status_code == 200  # link checkers do not spend the code
    assert engine.get(a.id).state is State.REDIRECTED
    first = requests.get(url, timeout=5, allow_redirects=False)
    assert first.status_code == 303 and first.headers["Referrer-Policy"] == "no-referrer"
    progress = first.headers["Location"]
    assert progress.startswith("/callback/progress?t=") and a.id not in progress  # never the bare id
    page = requests.get(base + progress, timeout=5)
    assert page.status_code == 200 and "Connecting..." in page.text
    assert page.headers["Referrer-Policy"] == "no-referrer" and page.headers["Cache-Control"] == "no-store"
    assert engine.get(a.id).state is State.CALLBACK_RECEIVED
    engine.run_until_idle()
    assert "<h1>Connected</h1>" in requests.get(base + progress, timeout=5).text
    duplicate = requests.get(url, timeout=5)  # single use: a harmless duplicate, plainly worded
    assert "This link is no longer valid" in duplicate.text
    code = dict(p.split("=", 1) for p in urlsplit(url).query.split("&"))["code"]
    forged = requests.get(url.replace(f"code={code}", "code=forged"), timeout=5)
    assert forged.status_code == 400 and "This link is no longer valid" in forged.text
    for page_text in (duplicate.text, forged.text):
        for internal in ("CALLBACK_RECEIVED", "PROVISIONED", "state", "nonce", "verifier", a.id):
            assert internal not in page_text, internal
    # Recorded with its reason and logged (the reason only: no parameter values in the log).
    assert [c.reason for c in engine.repo.callbacks(a.id, status="rejected")] == [
        "attempt is PROVISIONED; its state was already used"]
    assert "callback rejected: attempt is PROVISIONED" in caplog.text
    assert code not in caplog.text
    # In the database: the three callbacks that carried the attempt's real state, one row each.
    assert inbox(engine) == [(a.id, "applied", None), (a.id, "duplicate", ALREADY_APPLIED),
                             (a.id, "rejected", "attempt is PROVISIONED; its state was already used")]


def test_forged_and_unknown_callbacks_are_limited_and_stored_nowhere(served_limited: Served) -> None:
    engine, base, now = served_limited
    a = engine.start("quickbooks", "flooded", flow="oauth2", **QBO)
    engine.run_until_idle()
    url = redirect_to(base, consent(engine.redirect_url(engine.get(a.id)) or ""))
    before = stored_rows(engine)
    # A guessed nonce for the real attempt, an unknown attempt, garbage, no state, a control
    # character, a repeated state: none matches an attempt, so none may cost the database a row.
    forged = [f"state={a.id}.guessed&code=x", f"state={a.id}", "state=00000000-0000-0000-0000-000000000000.x",
              "state=garbage&code=x", "code=x", "state=%ff%00", f"state={a.id}.x&state={a.id}.y"]
    statuses = [requests.get(f"{base}/callback?{forged[i % len(forged)]}", timeout=5).status_code
                for i in range(3 * len(forged))]
    assert statuses == [400] * BURST + [429] * (3 * len(forged) - BURST)
    assert stored_rows(engine) == before  # no inbox, history or attempt row for any of them
    assert inbox(engine) == []
    assert sum(engine.callbacks.unmatched_counts().values()) == BURST  # counted; the 429s never reached it
    # The customer, from another address, is not limited: the one callback that matches is stored.
    answer = raw(base, f"GET /callback?{urlsplit(url).query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                 .encode(), source="127.0.0.2")
    assert b" 303 " in answer.split(b"\r\n", 1)[0]
    assert engine.get(a.id).state is State.CALLBACK_RECEIVED
    assert inbox(engine) == [(a.id, "applied", None)]
    now[0] += 1.0  # a refilled token lets the first address try again (and be refused, not stored)
    assert requests.get(f"{base}/callback?state=garbage", timeout=5).status_code == 400
    assert inbox(engine) == [(a.id, "applied", None)]


def test_only_get_and_head_on_known_routes(served: tuple[Engine, str]) -> None:
    engine, base = served
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        for path in ("/callback", "/callback/progress", "/healthz", "/status"):
            resp = requests.request(method, base + path, timeout=5)
            assert resp.status_code == 405 and resp.headers["Allow"] == "GET, HEAD", (method, path)
    # The receiver is public: nothing of the operator console (or the old /status page) is here.
    engine.start("quickbooks", "Private Customer Ltd", flow="oauth2", **QBO)
    for path in ("/", "/admin", "/callbacks", "/status", "/status/x", "/attempts", "/login", "/bulk/restart",
                 "/static/console.js", "/_sandbox/requests"):
        resp = requests.get(base + path, timeout=5)
        assert resp.status_code == 404 and "Private Customer" not in resp.text, path
    assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{base}/readyz", timeout=5).json() == {"status": "ready"}


def test_sizes_are_bounded(served: tuple[Engine, str]) -> None:
    engine, base = served
    long_query = requests.get(f"{base}/callback?state={'a' * (MAX_QUERY_CHARS + 1)}", timeout=5)
    assert long_query.status_code == 414
    answer = raw(base, b"GET /callback?state=" + b"a" * MAX_REQUEST_LINE
                 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.") and b" 414 " in answer.split(b"\r\n", 1)[0]
    with_body = requests.get(f"{base}/callback?state=x", data=b"x" * 100, timeout=5)
    assert with_body.status_code == 413
    assert requests.get(f"{base}/{'p' * 2000}/callback", timeout=5).status_code == 414
    assert engine.repo.callbacks() == []  # none of these reached the engine


def test_nothing_is_reflected_unescaped(served: tuple[Engine, str]) -> None:
    engine, base = served
    a = engine.start("quickbooks", "xss", flow="oauth2", **QBO)
    engine.run_until_idle()
    payload = "<script>alert(1)</script>"
    for query in (f"state={payload}", f"state={a.id}.{payload}&code={payload}", f"{payload}={payload}",
                  f"state={a.id}.x&error={payload}"):
        resp = requests.get(
            f"{base}/callback", params=dict(p.split("=", 1) for p in query.split("&")), timeout=5
        )
        assert resp.status_code in (200, 400) and "<script" not in resp.text, query
        csp = resp.headers["Content-Security-Policy"]
        assert csp.startswith("default-src 'none'") and "script-src" not in csp and "unsafe" not in csp
    assert "<script" not in requests.get(f"{base}/status/{payload}", timeout=5).text
    assert "<script" not in requests.get(f"{base}/callback/progress?t={payload}", timeout=5).text
    assert inbox(engine) == []  # none carried the attempt's real state: nothing stored


def test_malformed_request_lines_are_logged_without_their_values(served: tuple[Engine, str],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    _, base = served
    answer = raw(
        base, b"GET /callback?code=SECRETCODE123&oauth_verifier=SECRETVERIFIER HTTP/1.1 extra\r\n\r\n"
    )
    assert b" 400 " in answer.split(b"\r\n", 1)[0]
    # waitress answers 400 itself without logging the line; whatever is logged must hold no value.
    assert "SECRETCODE123" not in caplog.text and "SECRETVERIFIER" not in caplog.text
    assert "SECRETCODE123" not in answer.decode("latin-1")

