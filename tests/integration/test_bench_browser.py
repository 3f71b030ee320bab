"""bench/http_callbacks.Browser, the simulated user's GET, against a real socket on 127.0.0.1.

The browser keeps one connection per receiver alive. A receiver that closed an idle connection
must cost a second try on a new one, not a failed benchmark run; any answer but the receiver's
303 to the progress page must fail it, naming the status.
"""
from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from http_callbacks import Browser  # noqa: E402 - a benchmark module, not a package

REDIRECT = "https://app.example/cb?state=s1&oauth_token=t&oauth_verifier=v&realmId=1"
SEE_OTHER = (b"HTTP/1.1 303 See Other\r\nLocation: /callback/progress?t=abc\r\n"
             b"Content-Length: 0\r\n\r\n")


@contextmanager
def receiver(answers: list[bytes], *, close_after_each: bool) -> Iterator[tuple[str, list[bytes]]]:
    """A one-thread HTTP server: gives ``answers`` in turn, records each request line; with
    ``close_after_each`` it closes the connection after every answer without saying so (no
    ``Connection: close``), as a server does when a kept-alive connection idles too long."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    seen: list[bytes] = []

    def serve() -> None:
        pending = list(answers)
        while pending:
            conn, _ = server.accept()
            with conn:
                while pending:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        request += chunk
                    if not request:
                        break  # the client closed it: wait for its next connection
                    seen.append(request.split(b"\r\n", 1)[0])
                    conn.sendall(pending.pop(0))
                    if close_after_each:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/callback", seen
    finally:
        server.close()
        thread.join(timeout=5)


def test_a_connection_the_receiver_closed_is_retried_once_on_a_new_one() -> None:
    with receiver([SEE_OTHER, SEE_OTHER], close_after_each=True) as (url, seen):
        browser = Browser(timeout_s=5)
        browser.deliver(url, REDIRECT)
        browser.deliver(url, REDIRECT)  # the kept-alive connection is gone: sent again on a new one
    assert len(seen) == 2 and all(line.startswith(b"GET /callback?state=s1&oauth_token=t") for line in seen)


def test_a_kept_alive_connection_serves_every_callback() -> None:
    with receiver([SEE_OTHER] * 3, close_after_each=False) as (url, seen):
        browser = Browser(timeout_s=5)
        for _ in range(3):
            browser.deliver(url, REDIRECT)
    assert len(seen) == 3


def test_any_other_answer_fails_the_run_and_names_it() -> None:
    refused = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 14\r\n\r\nstate expired."
    with receiver([refused], close_after_each=False) as (url, _seen):
        with pytest.raises(RuntimeError, match="answered 400: b'state expired.'"):
            Browser(timeout_s=5).deliver(url, REDIRECT)


def test_a_receiver_that_is_not_there_is_not_retried() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(ConnectionRefusedError):
        Browser(timeout_s=5).deliver(f"http://127.0.0.1:{port}/callback", REDIRECT)
