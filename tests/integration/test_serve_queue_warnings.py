"""A saturated ``provision serve`` (real waitress, real sockets) logs one queue warning, not one per request.

One thread, whose request waits until the test lets it go, and five more requests behind it: waitress
warns as it queues each of the five. Through ``run_server`` the first warning is logged with its
advice, the other four are held, and the server tells them when it stops. The server gets its own
``QueueWarnings`` on a logger of this test's, so that another server in the process cannot add to it.
"""
from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Iterable
from typing import Any

import pytest

from engine.config import ServeSettings
from engine.web.queue_warnings import QueueWarnings
from engine.web.wsgi_server import run_server

QUEUED = 5
LOGGER = "test.serve_queue_warnings"


def test_a_saturated_receiver_logs_one_queue_warning_and_a_count(caplog: pytest.LogCaptureFixture) -> None:
    entered, release = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        entered.set()
        release.wait(30)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    warnings = QueueWarnings(1, logger=logging.getLogger(LOGGER))
    stop, ready = threading.Event(), threading.Event()
    port: list[int] = []

    def listening(bound: int) -> None:
        port.append(bound)
        ready.set()

    server = threading.Thread(target=run_server, args=(app, "127.0.0.1", 0), daemon=True, kwargs={
        "settings": ServeSettings(threads=1), "ready": listening, "stop": stop, "queue_warnings": warnings})
    statuses: list[int] = []

    def get() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port[0], timeout=30)
        try:
            conn.request("GET", "/")
            statuses.append(conn.getresponse().status)
        finally:
            conn.close()

    try:
        with caplog.at_level(logging.WARNING):
            server.start()
            assert ready.wait(10)
            clients = [threading.Thread(target=get)]
            clients[0].start()
            assert entered.wait(10)  # the one thread is taken
            clients += [threading.Thread(target=get) for _ in range(QUEUED)]
            for c in clients[1:]:
                c.start()
            assert warnings.wait_for_queued(QUEUED, timeout_s=10), warnings.queued  # all five queued
            release.set()
            for c in clients:
                c.join(30)
            stop.set()
            server.join(10)
    finally:
        release.set()
        stop.set()
    assert statuses == [200] * (1 + QUEUED)
    assert not server.is_alive()
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        "Task queue depth is 1: every thread is busy (PROVISION_SERVE_THREADS=1) and requests wait; "
        "run more `provision serve` processes (one process uses about one core; more threads do not "
        "add one)",
        f"{QUEUED - 1} more task queue warnings held back, deepest queue {QUEUED} "
        "(PROVISION_SERVE_THREADS=1, all busy)"]
    assert warnings.queued == QUEUED
