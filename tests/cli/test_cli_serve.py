"""``provision serve``, ``provision console`` and ``provision worker`` as long-running processes,
stopped by SIGTERM."""
from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from werkzeug.test import Client

from engine.core.callbacks import CallbackOutcome
from engine.errors import CallbackRejectedError
from engine.web.callback_app import make_app
from engine.wiring import open_engine
from states.attempt import Attempt
from states.model import Flow, State

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture()
def reader(cli: Any) -> Iterator[Any]:
    """An in-process engine on the CLI's database, to watch states without spending a process."""
    engine = open_engine(cli.db_url, environ=cli.env)
    yield engine
    engine.close()


def _wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str], cli: Any) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    cli.outputs += [out, err]
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return out, err


def test_serve_and_worker_processes(cli: Any, reader: Any) -> None:
    attempt_id = cli.start_oauth1()
    serve = cli.popen("serve", "--port", "0")
    worker = cli.popen("worker")
    try:
        banner = serve.stdout.readline() if serve.stdout else ""
        assert banner.startswith("serving callbacks on http://127.0.0.1:"), banner
        callback_url = banner.split(" on ", 1)[1].strip()
        assert callback_url.endswith("/callback")
        root = callback_url.removesuffix("/callback")
        assert "started" in (worker.stderr.readline() if worker.stderr else "")

        _wait_for(lambda: reader.get(attempt_id).state is State.REDIRECTED)
        location = cli.consent(reader.redirect_url(reader.get(attempt_id)))
        page = requests.get(f"{callback_url}?{urlsplit(location).query}", timeout=10)
        assert page.status_code == 200 and "Connecting..." in page.text  # not "Connected": not yet true
        assert page.headers["Content-Type"].startswith("text/html")
        assert page.url.startswith(f"{callback_url}/progress?t=") and attempt_id not in page.url
        progress_url = page.url
        assert reader.get(attempt_id).state is State.CALLBACK_RECEIVED
        repeat = requests.get(f"{callback_url}?{urlsplit(location).query}", timeout=10)
        assert repeat.status_code == 200 and "This link is no longer valid" in repeat.text

        hostile = requests.get(f"{callback_url}?state=%3Cscript%3Ealert(1)%3C/script%3E&code=%3Cb%3E",
                               timeout=10)
        assert hostile.status_code == 400 and "This link is no longer valid" in hostile.text
        assert "<script>" not in hostile.text and "<b>" not in hostile.text and "state" not in hostile.text
        assert requests.get(f"{root}/elsewhere", timeout=10).status_code == 404
        assert requests.post(callback_url, data="x" * 100, timeout=10).status_code == 405
        assert requests.get(f"{root}/status", timeout=10).status_code == 404  # the console moved off
        assert requests.get(f"{root}/readyz", timeout=10).json() == {"status": "ready"}
    finally:
        for proc in (serve, worker):
            if proc.poll() is None and proc is not worker:
                _stop(proc, cli)
    # SIGTERM lets the worker finish and exit 0 with a summary of what it ran.
    _, err = _stop(worker, cli)
    assert "worker: claimed 1, advanced 2, retrying 0, failed 0, stopped by signal" in err  # 2 chained
    cli("worker", "--once")
    assert reader.get(attempt_id).state is State.PROVISIONED
    serve = cli.popen("serve", "--port", "0")
    try:
        banner = serve.stdout.readline() if serve.stdout else ""
        base = banner.split(" on ", 1)[1].strip().removesuffix("/callback")
        # The progress link of an earlier process does not open here (no shared key was set)...
        parts = urlsplit(progress_url)
        stale = requests.get(f"{base}{parts.path}?{parts.query}", timeout=10)
        assert stale.status_code == 400 and "This link is no longer valid" in stale.text
    finally:
        _stop(serve, cli)


def test_console_process_serves_loopback_and_refuses_to_be_exposed(cli: Any) -> None:
    attempt_id = cli.start_oauth1()
    exposed = cli("console", "--host", "0.0.0.0", "--port", "0", expect=2)
    assert "not a loopback address" in exposed.stderr and "PROVISION_CONSOLE_TOKEN" in exposed.stderr
    console = cli.popen("console", "--port", "0")
    try:
        banner = console.stdout.readline() if console.stdout else ""
        assert banner.startswith("console on http://127.0.0.1:"), banner
        root = banner.split(" on ", 1)[1].strip().rstrip("/")
        page = requests.get(f"{root}/", timeout=10)
        assert page.status_code == 200 and "No login: loopback only" in page.text and attempt_id in page.text
        assert requests.get(f"{root}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{root}/callback?state=x", timeout=10).status_code == 404  # not the receiver
    finally:
        _stop(console, cli)

class _FakeEngine:
    """Stands in for ``Engine.handle_callback`` to drive each page of the receiver."""

    def __init__(self, result: CallbackOutcome | Exception) -> None:
        self.result = result
        self.queries: list[str] = []

    def get(self, attempt_id: str) -> Attempt:
        assert attempt_id == "a"
        outcome = self.result
        assert isinstance(outcome, CallbackOutcome) and outcome.state is not None
        return Attempt("a", "quickbooks", Flow.OAUTH2, "n", outcome.state, 1, T0, T0,
                       failure_reason=outcome.reason)

    def handle_callback(self, query: str) -> CallbackOutcome:
        self.queries.append(query)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.mark.parametrize(("result", "status", "title"), [
    (CallbackOutcome("applied", "a", State.CALLBACK_RECEIVED), 200, "Connecting..."),
    (CallbackOutcome("pending", "a", State.TOKEN_ISSUED), 200, "Connecting..."),
    (CallbackOutcome("duplicate", "a", State.PROVISIONED), 200, "This link is no longer valid"),
    (CallbackOutcome("applied", "a", State.FAILED, "user_denied"), 200, "Not connected"),
    (CallbackRejectedError("<script>alert(1)</script>"), 400, "This link is no longer valid"),
])
def test_receiver_pages_escape_everything(result: Any, status: int, title: str) -> None:
    engine = _FakeEngine(result)
    client = Client(make_app(engine, probe=lambda: None))  # type: ignore[arg-type]
    resp = client.get("/oauth/callback?state=s&code=c", follow_redirects=True)
    assert resp.status_code == status and f'<h1>{title}' in resp.text.replace(
        '<span class="spinner" aria-hidden="true"></span>', "")
    assert engine.queries == ["state=s&code=c"]
    assert "<script" not in resp.text and "alert(1)" not in resp.text  # the reason is for the log only
    assert client.get("/status").status_code == 404  # the status page is on the console now
    assert client.open("/callback", method="PUT").status_code == 405
    assert client.head("/callback?state=s&code=c").status_code == 200
    assert engine.queries == ["state=s&code=c"]  # HEAD does not spend the one-time code
