"""Webhooks go through the shared ``Transport`` (issue 18 review): one deadline for the whole send,
the response head included; a 2xx counts even when the body after it is endless; a redirect is a
failure, never followed. A raw socket server on 127.0.0.1 plays the hostile receiver."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from webhook_receiver import new_secret

from engine.clients.webhooks import WebhookSender
from engine.config import WebhookSettings

HEAD_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class Receiver:
    """Answers every connection as ``mode`` says; counts the requests it got."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hooks"
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                self.requests += 1
                if self.mode == "drip_head":  # each byte inside the read timeout, the head far beyond it
                    for byte in HEAD_200:
                        if self.done.wait(0.1):
                            return
                        conn.sendall(bytes([byte]))
                elif self.mode == "endless_body":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 314572800\r\n\r\n")
                    while not self.done.is_set():
                        conn.sendall(b"x" * 65536)
                elif self.mode == "redirect":
                    conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/steal\r\n"
                                 b"Content-Length: 0\r\n\r\n")
            except OSError:
                return


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.done.set()
    r.server.close()


@pytest.mark.realtime
def test_sends_are_bounded_by_one_deadline_and_redirects_fail(receiver: Receiver) -> None:
    sender = WebhookSender(WebhookSettings(url=receiver.url, secret=new_secret(), connect_timeout=0.2,
                                           read_timeout=0.3))
    try:
        receiver.mode = "drip_head"
        started = time.monotonic()
        dripped = sender.send("msg_1", "{}")
        assert time.monotonic() - started < 2.0  # the head alone would take 3.8 s
        assert dripped.status is None and dripped.error == "no answer within the timeout"

        receiver.mode = "endless_body"
        endless = sender.send("msg_2", "{}")
        assert endless.status == 200 and endless.error is None  # delivered: only the status counts

        receiver.mode = "redirect"
        before = receiver.requests
        moved = sender.send("msg_3", "{}")
        assert moved.status == 302 and moved.error is not None and "redirect" in moved.error
        assert "127.0.0.1" not in moved.error and receiver.requests == before + 1  # not followed
    finally:
        sender.close()
