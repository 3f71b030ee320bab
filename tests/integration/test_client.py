"""Client details that end-to-end tests against the sandbox do not reach."""
from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from engine.clients.elements import ElementsClient
from engine.config import ClientSettings, client_settings_from_env


class _Quiet(BaseHTTPRequestHandler):
    """A test server's handler: answers 200 with ``body`` and extra headers, logs nothing."""

    def _answer(self, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Gzip(_Quiet):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = gzip.compress(json.dumps({"element": "x", "oauthUrl": "https://consent.example/c"}).encode())
        self._answer(body, {"Content-Encoding": "gzip"})


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
    # engine.config reads the environment once; the client never consults it per call.
    settings = client_settings_from_env(base_url="https://api.example.com/elements/api-v2")
    client = ElementsClient(settings)
    try:
        assert client.session.proxies.get("https") == "http://proxy.example:3128"
        assert client.session.trust_env is False  # no per-call environment lookups
    finally:
        client.close()


@pytest.mark.parametrize("params", [
    None,
    {"apiKey": "k y", "apiSecret": "s/+&=?", "callbackUrl": "https://app.example/cb?x=1&y=ä"},
    [("tags[]", "provision:attempt-1"), ("tags[]", "two")],
])
@pytest.mark.parametrize("method,body", [("GET", None), ("POST", {"name": "n", "n": [1, "ü"]}),
                                         ("DELETE", None)])
def test_requests_are_prepared_as_session_request_would(params: object, method: str,
                                                        body: Mapping[str, Any] | None) -> None:
    """``_prepare`` skips Session.request's per-call merging: the request on the wire must not change."""
    client = ElementsClient(ClientSettings("https://api.example.com/elements/api-v2", "u", "o"))
    try:
        ours = client._prepare(method, "/elements/quickbooks/oauth/token", params, body, client._headers)
        theirs = client.session.prepare_request(requests.Request(
            method, "https://api.example.com/elements/api-v2/elements/quickbooks/oauth/token",
            params=params, json=body, headers=client._headers))
        assert (ours.method, ours.url, ours.body) == (theirs.method, theirs.url, theirs.body)
        assert dict(ours.headers) == dict(theirs.headers)  # session defaults (User-Agent...) included
    finally:
        client.close()


class _Cookies(_Quiet):
    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).seen.append(self.headers.get("Cookie"))
        body = json.dumps({"oauthUrl": "https://consent.example/c"}).encode()
        self._answer(body, {"Set-Cookie": "AWSALB=sticky-1; Path=/"})


def test_cookies_set_by_the_platform_are_sent_back() -> None:
    """A load balancer's affinity cookie comes back on the next call, as with Session.request."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Cookies)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}/elements/api-v2"
    client = ElementsClient(ClientSettings(base, "u", "o"))
    try:
        client.oauth_url("x", {})
        client.oauth_url("x", {})
        assert _Cookies.seen == [None, "AWSALB=sticky-1"]
    finally:
        client.close()
        srv.shutdown()
        srv.server_close()
