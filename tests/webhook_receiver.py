"""A webhook receiver on 127.0.0.1 for the events tests: verifies every request with the
``standardwebhooks`` package's own verifier and answers from a script (issue 10/12)."""
from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes)."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    """One request: its webhook id, verified payload (None if the signature failed) and our answer."""

    webhook_id: str
    payload: dict[str, Any] | None
    status: int
    at: Any = None  # the test's clock when it arrived


@dataclass
class Answer:
    """What the receiver answers: a status, headers, and an optional wait before answering."""

    status: int = 200
    headers: dict[str, str] | None = None
    hold: threading.Event | None = None  # answer only once this is set


class Receiver:
    """Records every request; ``script`` answers the first requests, then ``default``."""

    def __init__(self, secret: str, port: int = 0, clock: Callable[[], Any] | None = None) -> None:
        self.verifier = Webhook(secret)
        self.script: list[Answer] = []
        self.default = Answer(200)
        self.received: list[Received] = []
        self.arrived = threading.Event()
        self.clock = clock
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    payload = receiver.verifier.verify(body, dict(self.headers.items()))
                except WebhookVerificationError:
                    payload = None
                with receiver._lock:
                    answer = receiver.script.pop(0) if receiver.script else receiver.default
                    status = answer.status if payload is not None else 401
                    receiver.received.append(Received(self.headers.get("webhook-id", ""), payload, status,
                                                      receiver.clock() if receiver.clock else None))
                receiver.arrived.set()
                if answer.hold is not None:
                    answer.hold.wait(30)
                self.send_response(status)
                for k, v in (answer.headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def accepted(self) -> list[Received]:
        """Verified requests answered 2xx, deduplicated by webhook id (first one kept), in arrival order."""
        seen: set[str] = set()
        out = []
        for r in self.received:
            if r.payload is not None and 200 <= r.status < 300 and r.webhook_id not in seen:
                seen.add(r.webhook_id)
                out.append(r)
        return out

    def stop(self) -> None:
        """Stop listening."""
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiving(secret: str, port: int = 0, clock: Callable[[], Any] | None = None) -> Iterator[Receiver]:
    """A running ``Receiver``, stopped afterwards."""
    r = Receiver(secret, port, clock)
    try:
        yield r
    finally:
        r.stop()


def dumps(payload: Any) -> str:
    """Compact JSON (for comparing payloads)."""
    return json.dumps(payload, sort_keys=True)
