"""``provision serve`` under load (issue 16 item 9): 10,000 forged callbacks and 1,000 slow, idle
connections against a real ``provision serve`` process on 127.0.0.1 leave its memory, its threads
and the inbox bounded, idle connections are closed, and a real callback is applied meanwhile.

The forged traffic comes from 127.0.0.2 and the slow connections from 127.0.0.3 (the whole of
127/8 is loopback on Linux), so the rate limit of the attacker's address does not touch the real
user's 127.0.0.1. Counts and wall time are bounded; nothing here asserts a timing.
"""
from __future__ import annotations

import http.client
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from testkit import QBO, TEST_KEY, consent, provision_path

from engine import Engine
from states import State

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="binds client sockets to 127.0.0.2/3 (Linux loopback)")]

FORGED = 10_000
SLOW = 1_000
THREADS = 4
IDLE_TIMEOUT_S = 3


def _status(pid: int, field: str) -> int:
    """A number from /proc/PID/status (VmRSS in kB, Threads)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@contextmanager
def serve_on(db_url: str, sandbox: Any, settings: Mapping[str, str] | None = None,
             log: Path | None = None) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``provision serve`` on ``db_url`` and a free port, with small limits so that tests stay quick
    (``settings`` overrides them); its log (stderr) goes to ``log`` when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISION_", "ELEMENTS_"))}
    env.update({"PROVISION_SECRET_KEY": TEST_KEY, "ELEMENTS_BASE_URL": sandbox.base_url,
                "PROVISION_SERVE_THREADS": str(THREADS), "PROVISION_SERVE_CONNECTION_LIMIT": "3000",
                "PROVISION_SERVE_IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT_S),
                "PROVISION_SERVE_REFUSED_BURST": "20", "PROVISION_SERVE_REFUSED_PER_MINUTE": "60",
                "PYTHONUNBUFFERED": "1", **(settings or {})})
    # As an operator would: PostgreSQL is never migrated implicitly (SQLite is), so upgrade first.
    subprocess.run([provision_path(), "--db", db_url, "db", "upgrade"], env=env, check=True,
                   capture_output=True, timeout=60)
    stderr = log.open("w") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen([provision_path(), "--db", db_url, "serve", "--port", "0"], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=stderr)
    try:
        banner = proc.stdout.readline() if proc.stdout else ""
        assert banner.startswith("serving callbacks on http://127.0.0.1:"), banner
        yield proc, banner.split(" on ", 1)[1].strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if not isinstance(stderr, int):
            stderr.close()


@pytest.fixture
def served(db_url: str, sandbox: Any) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``serve_on`` the test's database (a SQLite file, then PostgreSQL)."""
    with serve_on(db_url, sandbox) as running:
        yield running


def _slow_connections(port: int) -> list[socket.socket]:
    """SLOW connections that send half a request line, then nothing."""
    socks = []
    for _ in range(SLOW):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.3", 0))
        sock.sendall(b"GET /callback?state=")
        socks.append(sock)
    return socks


def _flood(port: int, count: int) -> Counter[int]:
    """``count`` forged callbacks over a keep-alive connection from 127.0.0.2; the status counts."""
    seen: Counter[int] = Counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=("127.0.0.2", 0))
    for i in range(count):
        query = ("state=00000000-0000-0000-0000-000000000000.x&code=c", f"state=forged{i}", "code=x")[i % 3]
        try:
            conn.request("GET", f"/callback?{query}")
            resp = conn.getresponse()
            resp.read()
            seen[resp.status] += 1
        except (ConnectionError, http.client.HTTPException):
            conn.close()  # the server may close a connection; open the next one
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=("127.0.0.2", 0))
            seen[0] += 1
    conn.close()
    return seen


def test_forged_flood_and_slow_connections_leave_the_receiver_bounded(
        served: tuple[subprocess.Popen[str], str], db_url: str, engine_on: Callable[..., Engine]) -> None:
    proc, callback_url = served
    port = urlsplit(callback_url).port
    assert port is not None
    engine = engine_on(db_url)
    a = engine.start("quickbooks", "Under load", flow="oauth2", **QBO)
    engine.run_until_idle()
    location = consent(engine.redirect_url(engine.get(a.id)) or "")
    assert requests.get(callback_url.removesuffix("/callback") + "/healthz", timeout=10).status_code == 200
    rss_before = _status(proc.pid, "VmRSS")

    slow = _slow_connections(port)
    with ThreadPoolExecutor(4) as pool:
        floods = [pool.submit(_flood, port, FORGED // 4) for _ in range(4)]
        # The real user's callback, during the flood and with the slow connections open.
        page = requests.get(f"{callback_url}?{urlsplit(location).query}", timeout=30)
        threads_during = _status(proc.pid, "Threads")
        statuses = sum((f.result() for f in floods), Counter[int]())
    assert page.status_code == 200 and "Connecting..." in page.text
    assert engine.get(a.id).state is State.CALLBACK_RECEIVED

    assert sum(statuses.values()) == FORGED
    # A burst of 20, then about one a second, reached the engine; the rest got 429 before it.
    assert statuses[429] > FORGED * 0.9, statuses
    assert set(statuses) <= {400, 429}, statuses
    # Bounded: a fixed pool of threads (werkzeug's server had one per connection), a few MB of memory
    # for 1,000 connections and 10,000 requests, one inbox row (the real callback) for all of it.
    assert threads_during <= THREADS + 4, threads_during
    rss_growth_kb = _status(proc.pid, "VmRSS") - rss_before
    assert rss_growth_kb < 64 * 1024, rss_growth_kb
    assert [c.status for c in engine.repo.callbacks()] == ["applied"]

    # Idle connections are closed by the server (its idle timeout), not held forever.
    def all_closed() -> bool:
        for sock in list(slow):
            sock.settimeout(0)
            try:
                if sock.recv(4096) == b"":
                    slow.remove(sock)
                    sock.close()
            except BlockingIOError:
                return False
            except OSError:
                slow.remove(sock)
                sock.close()
        return not slow

    try:
        _wait_for(all_closed, timeout=IDLE_TIMEOUT_S * 10)
    finally:
        for sock in slow:
            sock.close()
    assert requests.get(callback_url.removesuffix("/callback") + "/readyz", timeout=10).status_code == 200


def test_several_serve_processes_share_one_port(sqlite_url: str, sandbox: Any) -> None:
    """``PROVISION_SERVE_REUSEPORT=true``: K processes listen on one port (SO_REUSEPORT); the
    port keeps answering while any one of them runs."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVISION_", "ELEMENTS_"))}
    env.update({"PROVISION_SECRET_KEY": TEST_KEY, "ELEMENTS_BASE_URL": sandbox.base_url,
                "PROVISION_SERVE_REUSEPORT": "true", "PYTHONUNBUFFERED": "1"})
    procs = [subprocess.Popen([provision_path(), "--db", sqlite_url, "serve", "--port", str(port)], env=env,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    try:
        for proc in procs:
            banner = proc.stdout.readline() if proc.stdout else ""
            assert banner == f"serving callbacks on http://127.0.0.1:{port}/callback\n", banner
        for proc in procs[:-1]:  # stop all but the last: the port is still served
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        for _ in range(5):
            assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)
            proc.communicate()


def test_idle_connections_at_the_connection_limit_hold_new_ones_until_the_idle_timeout(
        sqlite_url: str, sandbox: Any, tmp_path: Path) -> None:
    """``PROVISION_SERVE_CONNECTION_LIMIT`` idle keep-alive connections (browsers after their last
    page) fill the receiver: it stops accepting and says so in its log, a new client waits in the
    listen backlog, and is answered once the idle timeout has closed the idle ones. This is what a
    receiver exposed to browsers directly meets at about limit / (idle timeout + time on the
    progress page) callbacks per second (operator guide, "The two listeners")."""
    limit, log = 10, tmp_path / "serve.log"
    with serve_on(sqlite_url, sandbox, {"PROVISION_SERVE_CONNECTION_LIMIT": str(limit),
                                        "PROVISION_SERVE_IDLE_TIMEOUT_SECONDS": "2"}, log) as (_, url):
        port = urlsplit(url).port or 80
        idle: list[http.client.HTTPConnection] = []
        try:
            for _ in range(limit):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/healthz")
                first = conn.getresponse()
                assert first.status == 200 and b"ok" in first.read()
                idle.append(conn)  # kept alive: its socket stays open
            late = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            late.request("GET", "/healthz")  # connects: the kernel's backlog holds it
            resp = late.getresponse()
            assert resp.status == 200 and b"ok" in resp.read()
            # It was answered only after the server had closed idle connections to make room: their
            # end of stream is waiting already. (Without the limit it is answered at once, while
            # every idle one stays open for the 2 s of the idle timeout.)
            socks = [conn.sock for conn in idle if conn.sock is not None]
            closed, _, _ = select.select(socks, [], [], 0.2)
            assert closed and all(sock.recv(4096) == b"" for sock in closed), "no idle connection closed"
            for sock in socks:  # and the idle timeout closes the rest
                sock.settimeout(10)
                assert sock.recv(4096) == b""
            late.close()
        finally:
            for conn in idle:
                conn.close()
    text = log.read_text()
    assert "reached the connection limit, no longer accepting new connections" in text, text[-2000:]
