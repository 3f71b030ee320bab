"""A platform that quotes our secrets back in its error text gets them masked before anything is
stored: the user and organization secrets of the Authorization header and the OAuth ``state``.

A real HTTP server on 127.0.0.1 plays a platform whose 400 answers echo what it was sent (seen in
the wild: error messages that repeat a bad credential); the real engine runs the attempt to FAILED
on a real SQLite file, whose bytes are then searched for the secrets.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from testkit import QBO

from engine import Engine
from states import State

USER_SECRET = "user-secret-echoed-4711"
ORG_SECRET = "sandbox-org-secret"  # engine_on's organization secret


class _Echo(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        query = parse_qs(urlsplit(self.path).query)
        self.seen.append(query)
        auth = self.headers.get("Authorization", "")
        body = json.dumps({
            "message": f"Invalid credentials {auth} for state {query.get('state', ['-'])[0]}",
            "providerMessage": f"no such organization {ORG_SECRET} (user {USER_SECRET})",
            "requestId": "echo-1"}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo_platform() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Echo", (_Echo,), {"seen": seen}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/elements/api-v2", seen
    finally:
        server.shutdown()
        server.server_close()


def test_secrets_the_platform_echoes_are_masked_before_they_are_stored(
        sqlite_url: str, engine_on: Callable[..., Engine], echo_platform: tuple[str, list[dict[str, Any]]]
) -> None:
    base_url, seen = echo_platform
    engine = engine_on(sqlite_url, base_url=base_url, user_secret=USER_SECRET)
    attempt = engine.start("quickbooks", "Echo", flow="oauth2", **QBO)
    engine.run_until_idle()
    failed = engine.get(attempt.id)
    assert failed.state is State.FAILED and seen and seen[0].get("state")
    state = seen[0]["state"][0]
    stored = json.dumps([failed.last_error, [h.error for h in engine.history(attempt.id)],
                         [e.data for e in engine.events(limit=100)]])
    assert "Invalid credentials" in stored and "no such organization" in stored  # the error is kept
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    file_bytes = b"".join(p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())
    for secret in (USER_SECRET, ORG_SECRET, state):
        assert secret not in stored
        assert secret.encode() not in file_bytes
