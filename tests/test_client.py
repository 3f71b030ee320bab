"""Client details that end-to-end tests against the sandbox do not reach."""
from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.client import ClientSettings, ElementsClient


class _Gzip(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = gzip.compress(json.dumps({"element": "x", "oauthUrl": "https://consent.example/c"}).encode())
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gzip_server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Gzip)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/elements/api-v2"
    srv.shutdown()
    srv.server_close()


def test_gzip_bodies_are_decoded(gzip_server: str) -> None:
    client = ElementsClient(ClientSettings(gzip_server, "u", "o"))
    try:
        assert client.oauth_url("x", {}) == "https://consent.example/c"
    finally:
        client.close()


def test_environment_proxies_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "")
    client = ElementsClient(ClientSettings("https://api.example.com/elements/api-v2", "u", "o"))
    try:
        assert client.session.proxies.get("https") == "http://proxy.example:3128"
        assert client.session.trust_env is False  # no per-call environment lookups
    finally:
        client.close()
