"""``provision serve`` and ``provision worker`` as long-running processes, stopped by SIGTERM."""
from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from werkzeug.test import Client

from engine.core.callbacks import CallbackOutcome
from engine.errors import CallbackRejectedError
from engine.web.callback_app import make_app
from engine.wiring import open_engine
from states.model import State


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
        assert page.status_code == 200 and "<h1>Connected</h1>" in page.text
        assert page.headers["Content-Type"].startswith("text/html")
        assert reader.get(attempt_id).state is State.CALLBACK_RECEIVED
        repeat = requests.get(f"{callback_url}?{urlsplit(location).query}", timeout=10)
        assert repeat.status_code == 200 and "This link was already used" in repeat.text

        hostile = requests.get(f"{callback_url}?state=%3Cscript%3Ealert(1)%3C/script%3E&code=%3Cb%3E",
                               timeout=10)
        assert hostile.status_code == 400 and "Link rejected: unknown state" in hostile.text
        assert "<script>" not in hostile.text and "<b>" not in hostile.text
        assert requests.get(f"{root}/elsewhere", timeout=10).status_code == 404
        assert requests.post(callback_url, data="x" * 100, timeout=10).status_code == 405
        assert requests.get(f"{root}/status", timeout=10).status_code in (200, 404)
    finally:
        for proc in (serve, worker):
            if proc.poll() is None and proc is not worker:
                _stop(proc, cli)
    # SIGTERM lets the worker finish and exit 0 with a summary of what it ran.
    _, err = _stop(worker, cli)
    assert "worker: 2 steps run, stopped by signal" in err
    cli("worker", "--once")
    assert reader.get(attempt_id).state is State.PROVISIONED


class _FakeEngine:
    """Stands in for ``Engine.handle_callback`` to drive each page of the receiver."""

    def __init__(self, result: CallbackOutcome | Exception) -> None:
        self.result = result
        self.queries: list[str] = []

    def handle_callback(self, query: str) -> CallbackOutcome:
        self.queries.append(query)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.mark.parametrize(("result", "status", "title"), [
    (CallbackOutcome("applied", "a", State.CALLBACK_RECEIVED), 200, "Connected"),
    (CallbackOutcome("pending", "a", State.TOKEN_ISSUED), 200, "Connected"),
    (CallbackOutcome("duplicate", "a", State.PROVISIONED), 200, "This link was already used"),
    (CallbackOutcome("applied", "a", State.FAILED, "user_denied"), 200, "Access was denied"),
    (CallbackRejectedError("<script>alert(1)</script>"), 400, "Link rejected"),
])
def test_receiver_pages_escape_everything(result: Any, status: int, title: str) -> None:
    engine = _FakeEngine(result)
    client = Client(make_app(engine, status_factory=lambda e: None))  # type: ignore[arg-type]
    resp = client.get("/oauth/callback?state=s&code=c")
    assert resp.status_code == status and f"<h1>{title}</h1>" in resp.text
    assert engine.queries == ["state=s&code=c"]
    assert "<script>" not in resp.text
    if status == 400:
        assert "Link rejected: &lt;script&gt;alert(1)&lt;/script&gt;" in resp.text
    assert client.get("/status").status_code == 404  # no status page installed
    assert client.open("/callback", method="PUT").status_code == 405
    assert client.head("/callback?state=s&code=c").status_code == 200
    assert engine.queries == ["state=s&code=c"]  # HEAD does not spend the one-time code
