"""A saturated ``provision serve`` (real waitress, real sockets) logs one queue warning, not one per request.

One thread, whose request waits until the test lets it go, and five more requests behind it: waitress
warns as it queues each of the five. Through ``run_server`` the first warning is logged with its
advice, the other four are held, and the server tells them when it stops.
"""
from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Iterable
from typing import Any

import pytest

from engine.config import ServeSettings
from engine.web.queue_warnings import QUEUE_LOGGER
from engine.web.wsgi_server import run_server

QUEUED = 5


class Seen(logging.Filter):
    """Counts the queue warnings waitress emits, before ``run_server``'s own filter decides."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.changed = threading.Condition()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Task queue depth is %d":
            with self.changed:
                self.count += 1
                self.changed.notify_all()
        return True


def test_a_saturated_receiver_logs_one_queue_warning_and_a_count(caplog: pytest.LogCaptureFixture) -> None:
    entered, release = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        entered.set()
        release.wait(30)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    seen = Seen()
    queue_log = logging.getLogger(QUEUE_LOGGER)
    queue_log.addFilter(seen)  # added first, so it runs before run_server's
    stop, ready = threading.Event(), threading.Event()
    port: list[int] = []

    def listening(bound: int) -> None:
        port.append(bound)
        ready.set()

    server = threading.Thread(target=run_server, args=(app, "127.0.0.1", 0), daemon=True, kwargs={
        "settings": ServeSettings(threads=1), "ready": listening, "stop": stop})
    statuses: list[int] = []

    def get() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port[0], timeout=30)
        try:
            conn.request("GET", "/")
            statuses.append(conn.getresponse().status)
        finally:
            conn.close()

    try:
        with caplog.at_level(logging.WARNING, logger=QUEUE_LOGGER):
            server.start()
            assert ready.wait(10)
            clients = [threading.Thread(target=get)]
            clients[0].start()
            assert entered.wait(10)  # the one thread is taken
            clients += [threading.Thread(target=get) for _ in range(QUEUED)]
            for c in clients[1:]:
                c.start()
            with seen.changed:
                assert seen.changed.wait_for(lambda: seen.count == QUEUED, timeout=10), seen.count
            release.set()
            for c in clients:
                c.join(30)
            stop.set()
            server.join(10)
    finally:
        release.set()
        stop.set()
        queue_log.removeFilter(seen)
    assert statuses == [200] * (1 + QUEUED)
    told = [r.getMessage() for r in caplog.records if r.name == QUEUE_LOGGER]
    assert told == [
        "Task queue depth is 1: every thread is busy (PROVISION_SERVE_THREADS=1) and requests wait; "
        "raise it, or run more `provision serve` processes",
        f"{QUEUED - 1} more task queue warnings held back, deepest queue {QUEUED} "
        "(PROVISION_SERVE_THREADS=1, all busy)"]
    assert not server.is_alive()
