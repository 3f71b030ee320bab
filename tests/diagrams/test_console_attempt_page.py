"""The console's attempt page and list (what the old public /status page showed) through werkzeug's
test ``Client`` over a real engine on SQLite: fields, timeline, diagram, escaping, no secrets."""
from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from werkzeug.test import Client

from engine.config import ConsoleSettings
from engine.core.facade import Engine
from engine.web.console import make_console
from states.attempt import Attempt

StartQuick = Callable[..., Attempt]
Walk = Callable[[str, Sequence[tuple[str, str, str, float, dict[str, Any]]]], Attempt]
SECRET = "s3cr3t-never-in-a-diagram"  # conftest's QUICK_CONFIG api secret
HOSTILE = "<script>alert(1)</script>"
DENIED = {"kind": "user_denied", "message": "provider redirected with error=access_denied",
          "hint": "The user did not approve; start a new attempt if they want to connect."}


@pytest.fixture
def client(engine: Engine) -> Client:
    return Client(make_console(engine, ConsoleSettings()))


def text(client: Client, url: str, status: int = 200, **kw: Any) -> str:
    response = client.get(url, **kw)
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = response.get_data(as_text=True)
    assert SECRET not in body
    return body


def no_dot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **kw: None)


def test_index_lists_newest_first_with_counts(client: Client, start_quick: StartQuick, walk: Walk) -> None:
    first, second, third = start_quick("First"), start_quick("Second"), start_quick("Third")
    walk(second.id, [("quick_provision", "NEW", "PROVISIONED", 2, {})])
    body = text(client, "/")
    ids = re.findall(r'<a href="/attempts/([0-9a-f-]{36})">', body)
    assert ids == [third.id, second.id, first.id]
    counts = dict((label, n) for n, label in re.findall(r"<b>(\d+)</b>(\w+)</a>", body))
    assert {k: counts[k] for k in ("NEW", "TOKEN_ISSUED", "REDIRECTED", "CALLBACK_RECEIVED", "PROVISIONED",
                                   "FAILED", "total")} == {
        "NEW": "2", "TOKEN_ISSUED": "0", "REDIRECTED": "0", "CALLBACK_RECEIVED": "0", "PROVISIONED": "1",
        "FAILED": "0", "total": "3"}


def test_attempt_page_shows_fields_timeline_and_mermaid_without_dot(
        client: Client, start_quick: StartQuick, walk: Walk, monkeypatch: pytest.MonkeyPatch) -> None:
    no_dot(monkeypatch)
    attempt = start_quick("Acme")
    error = {**DENIED, "secret": SECRET}  # a stray field: the page shows only kind, message and hint
    walk(attempt.id, [("fail", "NEW", "FAILED", 30, {"note": "user_denied", "error": error})])
    body = text(client, f"/attempts/{attempt.id}")
    for label, shown in (("id", attempt.id), ("element / flow", "quickbooks / quick"),
                         ("failure reason", "user_denied"), ("created", "2026-03-01T12:00:01Z")):
        assert f"<dt>{label}</dt><dd>{shown}</dd>" in body, label
    assert "<h1>Attempt Acme</h1>" in body and '<dd><span class="FAILED">FAILED</span></dd>' in body
    row = re.search(r'<table class="timeline">.*?<tbody>(.*?)</tbody>', body, re.S)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row[1], re.S)
    assert cells[:8] == ["1", "2026-03-01T12:00:31Z", "fail", "NEW", '<span class="FAILED">FAILED</span>',
                         "5 ms", "failed", "1"]
    assert "user_denied - provider redirected with error=access_denied" in cells[8]
    assert "The user did not approve" in cells[8] and cells[9] == "user_denied"
    # no dot: the Mermaid source, escaped, in a <pre>
    pre = re.search(r"<pre>(.*?)</pre>", body, re.S)
    assert pre and "stateDiagram-v2" in pre[1]
    assert "NEW --&gt; FAILED: 1. fail 12:00:31: user_denied" in pre[1]
    assert "<svg" not in body and "is not installed" in body


def test_attempt_page_inlines_the_svg_with_dot(need_dot: str, client: Client, start_quick: StartQuick,
                                               walk: Walk) -> None:
    attempt = start_quick()
    walk(attempt.id, [("quick_provision", "NEW", "PROVISIONED", 3, {"tries": 2})])
    body = text(client, f"/attempts/{attempt.id}")
    diagram = re.search(r'<div class="diagram" id="diagram">(.*?)</div>', body, re.S)
    assert diagram and diagram[1].startswith("<svg") and diagram[1].rstrip().endswith("</svg>")
    assert "1. quick_provision 12:00:04 (2 tries)" in diagram[1] and "<?xml" not in body
    response = client.get(f"/attempts/{attempt.id}/diagram.svg")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert "(current)" in response.get_data(as_text=True)


def test_diagram_files_without_dot(client: Client, start_quick: StartQuick,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    no_dot(monkeypatch)
    attempt = start_quick()
    missing = text(client, f"/attempts/{attempt.id}/diagram.svg", 503)
    assert "apt-get install graphviz" in missing and "--format mermaid" in missing
    response = client.get(f"/attempts/{attempt.id}/diagram.mmd")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    assert 'state "NEW (current)" as NEW' in response.get_data(as_text=True)


def test_hostile_values_are_escaped(client: Client, start_quick: StartQuick, walk: Walk,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    no_dot(monkeypatch)
    attempt = start_quick(HOSTILE)
    error = {"kind": "x", "message": HOSTILE, "hint": HOSTILE}
    walk(attempt.id, [("fail", "NEW", "FAILED", 1, {"note": HOSTILE, "error": error})])
    for url in ("/", f"/attempts/{attempt.id}", f"/attempts/{attempt.id}/restart",
                "/bulk/restart?state=FAILED"):
        body = text(client, url)
        assert "<script>" not in body.replace('<script src="/static/console.js"></script>', "")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_hostile_values_are_escaped_in_the_svg(need_dot: str, client: Client, start_quick: StartQuick,
                                               walk: Walk) -> None:
    attempt = start_quick(HOSTILE)
    walk(attempt.id, [("fail", "NEW", "FAILED", 1, {"note": HOSTILE})])
    for url in (f"/attempts/{attempt.id}", f"/attempts/{attempt.id}/diagram.svg"):
        assert "<script>" not in text(client, url).replace('<script src="/static/console.js"></script>', "")


def test_unknown_attempt_is_a_404_page(client: Client) -> None:
    body = text(client, "/attempts/00000000-0000-4000-8000-000000000000", 404)
    assert "no attempt with id" in body and "<h1>404 Not Found</h1>" in body
    assert "404" in text(client, "/attempts/" + "x" * 300, 404)
    assert "404" in text(client, f"/attempts/{HOSTILE}/diagram.svg", 404)
    text(client, "/elsewhere", 404)


def test_reading_changes_nothing_and_writing_needs_post(client: Client, engine: Engine,
                                                        start_quick: StartQuick) -> None:
    attempt = start_quick()
    for method in ("PUT", "DELETE", "PATCH"):
        response = client.open(f"/attempts/{attempt.id}", method=method)
        assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"
    assert client.post(f"/attempts/{attempt.id}/cancel").status_code == 403  # no CSRF token
    head = client.head("/")
    assert head.status_code == 200 and head.get_data() == b""
    assert engine.get(attempt.id).version == attempt.version  # nothing changed


def test_security_headers(client: Client) -> None:
    response = client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'none'") and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "text/html"
