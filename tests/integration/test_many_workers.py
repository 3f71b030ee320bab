"""Several worker processes on one database while the platform fails 20% of calls (issue 2/6)."""
from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from test_crash import PROVISION, assert_exactly_once, spawn_worker, worker_env
from testkit import QBO, consent

from engine import Engine
from states import HAPPY_PATHS, TERMINAL, Flow, State

pytestmark = [pytest.mark.slow, pytest.mark.realtime]
FLAKY = {e: {"rate": 0.2, "status": 503, "retry_after": 0.05}
         for e in ("oauth_token", "oauth_url", "create_instance", "list_instances")}


class SandboxProcess:
    """``provision sandbox`` in its own process, so 16 worker threads do not share our GIL with it."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([PROVISION, "sandbox", "--port", "0", "--seed", "7", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("sandbox listening on "), line
        self.base_url = line.rsplit(" ", 1)[1]
        self.root_url = self.base_url.split("/elements/")[0]

    def requests(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = requests.get(self.root_url + "/_sandbox/requests", timeout=30).json()
        return data

    def set_faults(self, fails: dict[str, Any] | None = None) -> None:
        requests.post(
            self.root_url + "/_sandbox/faults", json={"fail": fails or {}}, timeout=5
        ).raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def remote_sandbox() -> Iterator[SandboxProcess]:
    sb = SandboxProcess()
    yield sb
    sb.stop()


def play_user(engine: Engine, pool: ThreadPoolExecutor) -> None:
    """Several users consent at once (each consent is three HTTP round trips)."""
    def one(a: Any) -> None:
        url = engine.redirect_url(a)
        if url:
            engine.handle_callback(consent(url))

    list(pool.map(one, engine.list(State.REDIRECTED)))


def run_workers(
    engine: Engine, sandbox: Any, db_url: str, ids: list[str], processes: int, timeout: float
) -> None:
    env = worker_env(db_url, sandbox, lease_s=30)  # nobody is killed here: leases outlive every step
    sandbox.set_faults(fails=FLAKY)
    workers = [spawn_worker(env, "--concurrency", "4") for _ in range(processes)]
    pool = ThreadPoolExecutor(8)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            play_user(engine, pool)
            counts = engine.counts()
            if sum(n for s, n in counts.items() if State(s) in TERMINAL) == len(ids):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"not settled in {timeout}s: {engine.counts()}")
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        codes = [w.wait(30) for w in workers]
        sandbox.set_faults()
        pool.shutdown()
    assert codes == [0] * processes, [w.stderr.read().decode()[-1500:] for w in workers if w.stderr]


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_four_workers_on_postgresql_drive_400_attempts(
    engine_on: Callable[..., Engine], remote_sandbox: SandboxProcess, pg_schema_url: str
) -> None:
    sandbox = remote_sandbox
    engine = engine_on(pg_schema_url, base_url=sandbox.base_url)
    assert engine.repo.dialect == "postgresql"
    ids = [engine.start("quickbooks", f"Load {i}", **QBO).id for i in range(400)]
    run_workers(engine, sandbox, pg_schema_url, ids, processes=4, timeout=240)
    failed = [(a.failure_reason, a.last_error) for a in engine.list(State.FAILED)]
    assert engine.counts() == {"PROVISIONED": 400}, failed
    assert_exactly_once(engine, ids, Flow.OAUTH1)
    workers = {h.worker for i in ids for h in engine.history(i) if h.trigger != "receive_callback"}
    assert len(workers) >= 2, "the work should be shared between processes"
    fails = [r for r in sandbox.requests() if r["status"] == 503]
    assert fails, "the sandbox must actually have failed some calls"


def test_two_workers_on_one_sqlite_file(engine_on: Callable[..., Engine], remote_sandbox: SandboxProcess,
                                        sqlite_url: str) -> None:
    sandbox = remote_sandbox
    engine = engine_on(sqlite_url, base_url=sandbox.base_url)
    ids = [engine.start("quickbooks", f"Lite {i}", **QBO).id for i in range(60)]
    run_workers(engine, sandbox, sqlite_url, ids, processes=2, timeout=120)
    failed = [(a.failure_reason, a.last_error) for a in engine.list(State.FAILED)]
    assert engine.counts() == {"PROVISIONED": 60}, failed
    assert_exactly_once(engine, ids, Flow.OAUTH1)
    assert HAPPY_PATHS[Flow.OAUTH1][0] == "issue_token"
