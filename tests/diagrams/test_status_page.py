"""The read-only status page through werkzeug's test ``Client`` over a real engine on SQLite."""
from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from werkzeug.test import Client

from engine.core.facade import Engine
from engine.web import status_page
from engine.web.status_page import StatusPage
from states.attempt import Attempt

StartQuick = Callable[..., Attempt]
Walk = Callable[[str, Sequence[tuple[str, str, str, float, dict[str, Any]]]], Attempt]
SECRET = "s3cr3t-never-in-a-diagram"  # conftest's QUICK_CONFIG api secret
HOSTILE = "<script>alert(1)</script>"
DENIED = {"kind": "user_denied", "message": "provider redirected with error=access_denied",
          "hint": "The user did not approve; start a new attempt if they want to connect."}


@pytest.fixture
def client(engine: Engine) -> Client:
    return Client(StatusPage(engine))


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
    body = text(client, "/status")
    ids = re.findall(r'<a href="/status/([0-9a-f-]{36})">', body)
    assert ids == [third.id, second.id, first.id]
    counts = dict(re.findall(r'<tr><td><span class="(\w+)">\1</span></td><td>(\d+)</td></tr>', body))
    assert counts == {"NEW": "2", "TOKEN_ISSUED": "0", "REDIRECTED": "0", "CALLBACK_RECEIVED": "0",
                      "PROVISIONED": "1", "FAILED": "0"}
    assert "<td><b>total</b></td><td>3</td>" in body


def test_index_is_limited_and_filterable(client: Client, start_quick: StartQuick, walk: Walk,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_page, "LIST_LIMIT", 2)
    attempts = [start_quick(f"n{i}") for i in range(3)]
    walk(attempts[0].id, [("fail", "NEW", "FAILED", 5, {"note": "cancelled"})])
    body = text(client, "/status")
    assert len(re.findall(r'<a href="/status/', body)) == 2 and "(limit 2)" in body
    failed = text(client, "/status?state=failed")
    assert re.findall(r'<a href="/status/([0-9a-f-]{36})">', failed) == [attempts[0].id]
    assert "400" in text(client, "/status?state=bogus", 400)


def test_attempt_page_shows_fields_timeline_and_mermaid_without_dot(
        client: Client, start_quick: StartQuick, walk: Walk, monkeypatch: pytest.MonkeyPatch) -> None:
    no_dot(monkeypatch)
    attempt = start_quick("Acme")
    error = {**DENIED, "secret": SECRET}  # a stray field: the page shows only kind, message and hint
    walk(attempt.id, [("fail", "NEW", "FAILED", 30, {"note": "user_denied", "error": error})])
    body = text(client, f"/status/{attempt.id}")
    for shown in (attempt.id, "quickbooks", "quick", "Acme", "user_denied", "2026-03-01 12:00:01 UTC"):
        assert f"<td>{shown}</td>" in body, shown
    assert '<td><span class="FAILED">FAILED</span></td>' in body
    row = re.search(r'<table class="timeline">.*?<tbody>(.*?)</tbody>', body, re.S)
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row[1], re.S)
    assert cells[:8] == ["1", "fail", "NEW", '<span class="FAILED">FAILED</span>', "2026-03-01 12:00:31 UTC",
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
    body = text(client, f"/status/{attempt.id}")
    diagram = re.search(r'<div class="diagram" id="diagram">(.*?)</div>', body, re.S)
    assert diagram and diagram[1].startswith("<svg") and diagram[1].rstrip().endswith("</svg>")
    assert "1. quick_provision 12:00:04 (2 tries)" in diagram[1] and "<?xml" not in body
    response = client.get(f"/status/{attempt.id}/diagram.svg")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert "(current)" in response.get_data(as_text=True)


def test_diagram_files_without_dot(client: Client, start_quick: StartQuick,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    no_dot(monkeypatch)
    attempt = start_quick()
    missing = text(client, f"/status/{attempt.id}/diagram.svg", 503)
    assert "apt-get install graphviz" in missing and "--format mermaid" in missing
    response = client.get(f"/status/{attempt.id}/diagram.mmd")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    assert 'state "NEW (current)" as NEW' in response.get_data(as_text=True)


def test_hostile_values_are_escaped(client: Client, start_quick: StartQuick, walk: Walk,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    no_dot(monkeypatch)
    attempt = start_quick(HOSTILE)
    error = {"kind": "x", "message": HOSTILE, "hint": HOSTILE}
    walk(attempt.id, [("fail", "NEW", "FAILED", 1, {"note": HOSTILE, "error": error})])
    for url in ("/status", f"/status/{attempt.id}"):
        body = text(client, url)
        assert "<script" not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_hostile_values_are_escaped_in_the_svg(need_dot: str, client: Client, start_quick: StartQuick,
                                               walk: Walk) -> None:
    attempt = start_quick(HOSTILE)
    walk(attempt.id, [("fail", "NEW", "FAILED", 1, {"note": HOSTILE})])
    for url in (f"/status/{attempt.id}", f"/status/{attempt.id}/diagram.svg"):
        assert "<script" not in text(client, url)


def test_unknown_attempt_is_a_404_page(client: Client) -> None:
    body = text(client, "/status/00000000-0000-4000-8000-000000000000", 404)
    assert "no attempt with id" in body and "<h1>404 Not Found</h1>" in body
    assert "404" in text(client, "/status/" + "x" * 300, 404)
    assert "404" in text(client, f"/status/{HOSTILE}/diagram.svg", 404)
    text(client, "/elsewhere", 404)


def test_only_get_and_head(client: Client, engine: Engine, start_quick: StartQuick) -> None:
    attempt = start_quick()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = client.open(f"/status/{attempt.id}", method=method)
        assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"
    head = client.head("/status")
    assert head.status_code == 200 and head.get_data() == b""
    assert engine.get(attempt.id).version == attempt.version  # nothing changed


def test_links_honour_the_mount_point(client: Client, start_quick: StartQuick) -> None:
    attempt = start_quick()
    body = text(client, "/status", base_url="http://localhost/ops")
    assert f'<a href="/ops/status/{attempt.id}">' in body


def test_security_headers(client: Client) -> None:
    response = client.get("/status")
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.mimetype == "text/html"
