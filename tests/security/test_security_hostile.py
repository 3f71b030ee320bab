"""A hostile platform: every endpoint answers badly. Attempts end classified, never crash or hang.

The server answers each request according to the current ``mode``: not JSON, wrong JSON types,
missing fields, a body larger than the client accepts, a slow drip, an HTML 500, a connection
closed mid-answer. Real attempts of every flow are driven against it through the engine.
"""
from __future__ import annotations

import json
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from testkit import QBO, QUICK_CONFIG

from engine import Engine, FakeClock, RetryPolicy
from engine.clients.elements import ElementsClient
from engine.clients.transport import MAX_INSTANCE_ID_CHARS
from engine.config import ClientSettings
from states import State

CLASSIFIED = {"malformed_response", "timeout", "unavailable", "connection", "bad_request", "unauthorized",
              "not_found", "forbidden", "conflict", "rate_limited", "provider_rejected", "redirect",
              "invalid_value"}
MAX_BODY = 2000


class Hostile(BaseHTTPRequestHandler):
    """Answers per ``server.mode``; logs nothing."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _send(
        self, status: int, body: bytes, ctype: str = "application/json", length: int | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, length: int, pause: float) -> None:
        """A 200 whose ``length`` body bytes come one at a time, ``pause`` seconds apart."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        for _ in range(length):
            try:
                self.wfile.write(b" ")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(pause)

    def _answer(self) -> None:
        if self.headers.get("Content-Length"):
            self.rfile.read(int(self.headers["Content-Length"]))
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "not_json":
            self._send(200, b"<html>welcome to nginx</html>", "text/html")
        elif mode == "wrong_types":  # every documented field has the wrong JSON type
            self._send(200, json.dumps({"token": ["x"], "secret": {"a": 1}, "oauthUrl": 42, "id": None,
                                        "configuration": "nope"}).encode())
        elif mode == "json_list":
            self._send(200, b"[1, 2, 3]")
        elif mode == "missing_fields":
            self._send(200, b"{}")
        elif mode == "null":
            self._send(200, b"null")
        elif mode == "huge":
            self._send(200, b"[" + b"1," * (MAX_BODY * 5) + b"1]")
        elif mode == "drip":  # a byte at a time, each inside the read timeout, the whole far beyond it
            self._drip(DRIP_BYTES, 0.03)
        elif mode == "html_500":
            self._send(500, b"<html>Bad Gateway</html>", "text/html")
        elif mode == "truncated":
            self._send(200, b'{"id": 1', length=500)  # promises 500 bytes, closes after 8
        elif mode == "redirect":  # to another origin, as a hijacked or misconfigured endpoint would
            self.send_response(307)
            self.send_header("Location", self.server.elsewhere + "/steal")  # type: ignore[attr-defined]
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "long_id":  # one character longer than attempts.instance_id holds
            self._send(200, json.dumps({"id": "7" * (MAX_INSTANCE_ID_CHARS + 1), "tags": [],
                                        "configuration": {}}).encode())
        elif mode == "endless":  # 300 MB announced and streamed until the client hangs up
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(300 * 1024 * 1024))
            self.end_headers()
            chunk = b" " * 65536
            try:
                for _ in range(300 * 16):
                    self.wfile.write(chunk)
            except OSError:
                return
        elif mode == "drip_per_second":  # the incident: one byte a second, each inside the read timeout
            self._drip(60, 1.0)
        elif mode == "head_drip":  # the status line and headers themselves, a byte each 0.4 s
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 100 + b"\r\n\r\n"
            for i in range(len(head)):
                try:
                    self.wfile.write(head[i:i + 1])
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.4)
        elif mode == "error_json_wrong_types":
            self._send(
                400, json.dumps({"message": ["a"], "providerMessage": {"x": 1}, "requestId": 5}).encode()
            )

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer


class Elsewhere(BaseHTTPRequestHandler):
    """Another origin: records whatever reaches it (a followed redirect would land here)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.seen.append((self.command, self.path, self.rfile.read(length)))  # type: ignore[attr-defined]
        body = json.dumps({"access_token": "stolen", "refresh_token": "stolen", "id": "666"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_PUT = _record


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.url = f"http://127.0.0.1:{server.server_port}"  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture
def elsewhere() -> Iterator[Any]:
    server = _serve(Elsewhere)
    server.seen = []  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hostile(elsewhere: Any) -> Iterator[Any]:
    server = _serve(Hostile)
    server.mode = "not_json"  # type: ignore[attr-defined]
    server.elsewhere = elsewhere.url  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


MODES = [
    "not_json",
    "wrong_types",
    "json_list",
    "missing_fields",
    "null",
    "huge",
    "drip",
    "html_500",
    "truncated",
    "error_json_wrong_types",
    "redirect",
    "long_id",
]
DRIP_BYTES = 25
DRIP_S = DRIP_BYTES * 0.03  # how long the hostile server takes to drip its body: beyond every deadline here


@pytest.mark.parametrize("mode", MODES)
def test_every_flow_ends_classified(mode: str, hostile: Any, sqlite_url: str,
                                    engine_on: Callable[..., Engine]) -> None:
    hostile.mode = mode
    clock = FakeClock()
    engine = engine_on(
        sqlite_url,
        clock=clock,
        base_url=hostile.url + "/elements/api-v2",
        connect_timeout=0.3,
        read_timeout=0.3,
        max_body_bytes=MAX_BODY,
        # The drip costs real time per run: one run each (budget 0) keeps the test fast.
        policy=RetryPolicy(
            in_process_attempts=1, budget=0 if mode == "drip" else 2, durable_initial=1, durable_max=1
        ),
    )
    started = time.monotonic()
    ids = [engine.start("quickbooks", f"{mode} {flow}", flow=flow, **(
        {"config": QUICK_CONFIG} if flow == "quick" else QBO)).id for flow in ("oauth1", "oauth2", "quick")]
    seen: set[str] = set()
    for _ in range(4):  # budget 2: three runs exhaust it
        report = engine.tick()  # must never raise
        for attempt_id in ids:
            a = engine.get(attempt_id)
            if a.last_error:
                seen.add(a.last_error["kind"])
                assert a.last_error["kind"] in CLASSIFIED, a.last_error
        clock.advance(seconds=5)
        if report.claimed == 0:
            break
    for attempt_id in ids:
        a = engine.get(attempt_id)
        assert a.state is State.FAILED, (mode, a, a.last_error)
        assert a.failure_reason in ("retries_exhausted", "permanent_error"), a.failure_reason
        assert a.last_error and a.last_error["kind"] in CLASSIFIED and a.last_error["kind"] != "internal"
        assert a.next_run_at is None and a.lease_owner is None  # nothing stuck
    assert "internal" not in seen
    # 3 attempts x 3 runs, each bounded by connect + read timeout (the drip by the body deadline).
    assert time.monotonic() - started < (3 * DRIP_S if mode == "drip" else 9 * 0.6) + 3, (
        "a step outlived its timeouts"
    )
    if mode == "drip":
        assert seen == {"timeout"}
    if mode == "huge":
        assert seen == {"malformed_response"}


def test_renewal_against_hostile_platform_is_retried_not_crashed(hostile: Any, sqlite_url: str, sandbox: Any,
                                                                   engine_on: Callable[..., Engine]) -> None:
    """A provisioned attempt whose platform turns hostile keeps its instance and retries its check."""
    clock = FakeClock()
    good = engine_on(sqlite_url, clock=clock)
    a = good.start(
        "quickbooks",
        "renew",
        flow="quick",
        config={**QUICK_CONFIG, "oauth.user.refresh_interval": "3600", "oauth.user.refresh_time": "0"},
    )
    good.run_until_idle()
    assert good.get(a.id).state is State.PROVISIONED
    hostile.mode = "wrong_types"
    bad = engine_on(sqlite_url, clock=clock, base_url=hostile.url + "/elements/api-v2", read_timeout=0.3,
                    connect_timeout=0.3)
    clock.advance(seconds=2 * 3600)
    bad.tick()
    after = bad.get(a.id)
    assert after.instance_id == good.get(a.id).instance_id
    assert after.last_error is None or after.last_error["kind"] in CLASSIFIED | {"renewal_rejected"}
    assert after.state in (State.PROVISIONED, State.FAILED)
    assert after.next_run_at is None or after.next_run_at > clock() - timedelta(seconds=1)


def test_slow_drip_is_cut_at_the_body_deadline(hostile: Any, sqlite_url: str,
                                               engine_on: Callable[..., Engine]) -> None:
    hostile.mode = "drip"
    engine = engine_on(
        sqlite_url, base_url=hostile.url + "/elements/api-v2", connect_timeout=0.2, read_timeout=0.2
    )
    started = time.monotonic()
    client = engine.client
    assert isinstance(client, ElementsClient)
    with pytest.raises(Exception) as err:
        client.request("oauth_url", "GET", "/elements/quickbooks/oauth/url")
    elapsed = time.monotonic() - started
    assert getattr(err.value, "kind", None) == "timeout"
    assert elapsed < 0.4 + 0.2 < DRIP_S, f"the drip held the call for {elapsed:.2f}s"


def _provider_client(hostile: Any, **settings: Any) -> ElementsClient:
    """A client whose provider endpoints are the hostile server's (the platform is never called)."""
    return ElementsClient(ClientSettings(hostile.url + "/elements/api-v2", "u", "o",
                                         provider_root=hostile.url + "/_provider", **settings))


def test_provider_redirect_is_not_followed_and_the_token_stays_home(hostile: Any, elsewhere: Any) -> None:
    """Regression test for issue 15: a 307 re-posted the refresh token to another origin."""
    hostile.mode = "redirect"
    client = _provider_client(hostile)
    try:
        with pytest.raises(Exception) as err:
            client.refresh_oauth2("client-id", "client-secret", "the-refresh-token")
        assert getattr(err.value, "kind", None) == "redirect" and not getattr(err.value, "transient", True)
        with pytest.raises(Exception) as err:
            client.reconnect_oauth1("ck", "cs", "tok", "ts")
        assert getattr(err.value, "kind", None) == "redirect"
        assert "the-refresh-token" not in str(err.value)
    finally:
        client.close()
    assert elsewhere.seen == []  # nothing followed the redirect: no token re-posted, none taken back


def test_platform_redirect_is_a_classified_error(hostile: Any, elsewhere: Any) -> None:
    """A 3xx on the prepared-request path raised AttributeError before issue 15."""
    hostile.mode = "redirect"
    client = _provider_client(hostile)
    try:
        for call in (lambda: client.create_instance({"name": "x"}), lambda: client.get_instance("1"),
                     lambda: client.find_instances_by_tag("t"), lambda: client.oauth_url("quickbooks", {})):
            with pytest.raises(Exception) as err:
                call()
            assert getattr(err.value, "kind", None) == "redirect", err.value
    finally:
        client.close()
    assert elsewhere.seen == []


def test_300_mb_answer_is_capped_with_bounded_memory(hostile: Any) -> None:
    hostile.mode = "endless"
    client = _provider_client(hostile)  # the default cap: 1 MB
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(Exception) as err:
            client.refresh_oauth2("client-id", "client-secret", "rt")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        client.close()
    assert getattr(err.value, "kind", None) == "malformed_response"
    assert "larger than" in str(err.value)
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a capped answer"
    assert time.monotonic() - started < 5


def test_one_byte_per_second_drip_is_cut_at_the_deadline(hostile: Any) -> None:
    """The incident of issue 15: a 1 byte/s drip held a step 60 s with a 3 s read timeout."""
    hostile.mode = "drip_per_second"
    client = _provider_client(hostile, connect_timeout=0.5, read_timeout=1.5)  # deadline: 2 s
    started = time.monotonic()
    try:
        with pytest.raises(Exception) as err:
            client.refresh_oauth2("client-id", "client-secret", "rt")
    finally:
        client.close()
    elapsed = time.monotonic() - started
    assert getattr(err.value, "kind", None) == "timeout"
    assert elapsed < 3.5, f"the drip held the call for {elapsed:.1f}s"


def test_a_dripped_status_line_and_headers_are_cut_at_the_deadline(hostile: Any) -> None:
    """The deadline covers the response head too, not only the body: each header byte arrives inside
    the read timeout, the whole head would take a minute."""
    hostile.mode = "head_drip"
    client = _provider_client(hostile, connect_timeout=0.5, read_timeout=1.0)  # deadline: 1.5 s
    started = time.monotonic()
    try:
        with pytest.raises(Exception) as err:
            client.refresh_oauth2("client-id", "client-secret", "rt")
        # The connection the watchdog cut is not reused: a second call is cut the same way.
        with pytest.raises(Exception) as again:
            client.refresh_oauth2("client-id", "client-secret", "rt")
    finally:
        client.close()
    elapsed = time.monotonic() - started
    assert getattr(err.value, "kind", None) == "timeout" and getattr(again.value, "kind", None) == "timeout"
    assert elapsed < 2 * 1.5 + 1.5, f"the dripped head held two calls for {elapsed:.1f}s"


def test_over_long_instance_id_fails_the_attempt_once_classified(hostile: Any, sqlite_url: str,
                                                                  engine_on: Callable[..., Engine]) -> None:
    """An id longer than attempts.instance_id is a permanent, classified error, not a DataError per tick."""
    hostile.mode = "long_id"
    clock = FakeClock()
    engine = engine_on(sqlite_url, clock=clock, base_url=hostile.url + "/elements/api-v2")
    a = engine.start("quickbooks", "long id", flow="quick", config=QUICK_CONFIG)
    engine.tick()
    after = engine.get(a.id)
    assert after.state is State.FAILED and after.failure_reason == "permanent_error"
    assert after.last_error and after.last_error["kind"] == "invalid_value"
    assert "'id'" in after.last_error["message"] and after.instance_id is None
