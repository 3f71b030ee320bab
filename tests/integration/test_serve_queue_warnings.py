"""A saturated ``provision serve`` (real waitress, real sockets) logs one queue warning, not one per request.

One thread, whose request waits until the test lets it go, and five more requests behind it: waitress
warns as it queues each of the five. Through ``run_server`` the first warning is logged with its
advice, the other four are held, and the server tells them when it stops. The server gets its own
``QueueWarnings`` on a logger of this test's, so that another server in the process cannot add to it.
And a server that is not saturated warns about nothing, even when a request comes the moment it is
ready.
"""
from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Iterable
from typing import Any

import pytest
from testkit import on_waitress

from engine.config import ServeSettings
from engine.web.queue_warnings import QueueWarnings

QUEUED = 5
LOGGER = "test.serve_queue_warnings"


def get(port: int, statuses: list[int]) -> None:
    """One GET / on its own connection; its status goes to ``statuses``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/")
        statuses.append(conn.getresponse().status)
    finally:
        conn.close()


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What this test's queue logger logged."""
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_a_saturated_receiver_logs_one_queue_warning_and_a_count(caplog: pytest.LogCaptureFixture) -> None:
    entered, release = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        entered.set()
        release.wait(30)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    warnings = QueueWarnings(1, logger=logging.getLogger(LOGGER))
    statuses: list[int] = []
    try:
        with caplog.at_level(logging.WARNING), on_waitress(app, ServeSettings(threads=1), warnings) as port:
            clients = [threading.Thread(target=get, args=(port, statuses))]
            clients[0].start()
            assert entered.wait(10)  # the one thread is taken
            clients += [threading.Thread(target=get, args=(port, statuses)) for _ in range(QUEUED)]
            for c in clients[1:]:
                c.start()
            assert warnings.wait_for_queued(QUEUED, timeout_s=10), warnings.queued  # all five queued
            release.set()
            for c in clients:
                c.join(30)
    finally:
        release.set()
    assert statuses == [200] * (1 + QUEUED)
    assert logged(caplog) == [
        "Task queue depth is 1: every thread is busy (PROVISION_SERVE_THREADS=1) and requests wait; "
        "run more `provision serve` processes (one process uses about one core; more threads do not "
        "add one)",
        f"{QUEUED - 1} more task queue warnings held back, deepest queue {QUEUED} "
        "(PROVISION_SERVE_THREADS=1, all busy)"]
    assert warnings.queued == QUEUED


def test_a_request_right_after_start_is_not_warned_about_while_the_threads_start(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # Waitress counts a thread as busy until it first waits for work; a loaded CI machine once sent
    # the first request in that window and got "Task queue depth is 1" with no queue at all. The
    # threads here are slowed before they start waiting, so the window is wide: run_server must not
    # say it is ready until they wait.
    from waitress.task import ThreadedTaskDispatcher  # noqa: PLC0415 - the `serve` extra

    started = ThreadedTaskDispatcher.handler_thread

    def slow_start(self: ThreadedTaskDispatcher, thread_no: int) -> None:
        threading.Event().wait(0.3)  # a starved machine's thread, before it waits for a task
        started(self, thread_no)

    monkeypatch.setattr(ThreadedTaskDispatcher, "handler_thread", slow_start)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    warnings = QueueWarnings(1, logger=logging.getLogger(LOGGER))
    statuses: list[int] = []
    with caplog.at_level(logging.WARNING), on_waitress(app, ServeSettings(threads=1), warnings) as port:
        get(port, statuses)
    assert statuses == [200]
    assert warnings.queued == 0
    assert logged(caplog) == []
