"""Crash recovery with real processes: ``provision worker`` killed with SIGKILL inside each step.

The sandbox holds each response for a while *after* performing the request's effect, so a worker
killed in that window leaves, e.g., an instance created on the platform but no commit in our
database. After a restart every attempt must reach PROVISIONED with a gap-free history, no
repeated transition, and exactly one instance per attempt (DESIGN §4).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testkit import QBO, TEST_KEY, consent, quick_config

from engine import Engine
from states import HAPPY_PATHS, TERMINAL, Flow, State, invalid_step

pytestmark = [pytest.mark.slow, pytest.mark.realtime]
PROVISION = str(Path(sys.executable).with_name("provision"))
LEASE_S = 2.0


def worker_env(db_url: str, sandbox: Any, lease_s: float = LEASE_S, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PROVISION_DB_URL=db_url,
        ELEMENTS_BASE_URL=sandbox.base_url,
        PROVISION_SECRET_KEY=TEST_KEY,
        PROVISION_LEASE_SECONDS=str(lease_s),
        PROVISION_CONNECT_TIMEOUT_SECONDS="0.5",
        PROVISION_READ_TIMEOUT_SECONDS=str(lease_s / 3),
        PROVISION_RETRY_IN_PROCESS_ATTEMPTS="1",
        PROVISION_POLL_SECONDS="0.1",
        PROVISION_RETRY_DURABLE_INITIAL_SECONDS="0.2",
        PROVISION_RETRY_DURABLE_MAX_SECONDS="1",
        PROVISION_RETRY_BUDGET="50",
        **extra,
    )
    return env


def spawn_worker(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([PROVISION, "worker", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def play_user(engine: Engine) -> int:
    """Consent for every REDIRECTED attempt and deliver its callback (the user's browser)."""
    done = 0
    for a in engine.list(State.REDIRECTED):
        url = engine.redirect_url(a)
        if url:
            engine.handle_callback(consent(url))
            done += 1
    return done


def assert_exactly_once(engine: Engine, ids: list[str], flow: Flow) -> None:
    for attempt_id in ids:
        a = engine.get(attempt_id)
        assert a.state is State.PROVISIONED, (a, a.last_error)
        rows = engine.history(attempt_id)
        assert invalid_step((h.trigger, h.source, h.dest) for h in rows) is None
        assert [h.seq for h in rows] == list(range(1, len(rows) + 1))
        assert tuple(h.trigger for h in rows) == HAPPY_PATHS[flow]  # nothing repeated, nothing skipped
        found = engine.client.find_instances_by_tag(a.instance_tag)
        assert [str(i["id"]) for i in found] == [a.instance_id], f"{len(found)} instances for {attempt_id}"


@pytest.mark.parametrize("endpoint,flow", [
    ("oauth_token", Flow.OAUTH1), ("oauth_url", Flow.OAUTH1), ("create_instance", Flow.OAUTH1),
    ("create_instance", Flow.QUICK),
])
def test_sigkill_inside_each_step_loses_nothing(make_engine: Callable[..., Engine], sandbox: Any, db_url: str,
                                                endpoint: str, flow: Flow) -> None:
    engine = make_engine()
    if flow is Flow.QUICK:
        ids = [
            engine.start("quickbooks", f"Crash {i}", flow="quick", config=quick_config()).id for i in range(3)
        ]
    else:
        ids = [engine.start("quickbooks", f"Crash {i}", flow="oauth1", **QBO).id for i in range(3)]
    if endpoint == "create_instance" and flow is Flow.OAUTH1:
        engine.run_until_idle()  # in-process up to REDIRECTED; the worker will do the create step
        assert play_user(engine) == 3
    env = worker_env(db_url, sandbox)
    sandbox.set_faults(delays={endpoint: 30.0})
    before = len([r for r in sandbox.requests() if r["endpoint"] == endpoint])
    worker = spawn_worker(env)
    try:
        wait_for(lambda: len([r for r in sandbox.requests() if r["endpoint"] == endpoint]) > before, 20,
                 f"the worker to call {endpoint}")
        worker.send_signal(signal.SIGKILL)  # inside the step's window: effect done, nothing committed
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    sandbox.set_faults()
    if endpoint == "create_instance":
        # The platform already created an instance that our database does not know about yet.
        assert any(engine.client.find_instances_by_tag(engine.get(i).instance_tag) for i in ids)
        assert all(engine.get(i).instance_id is None for i in ids)
    restarted = spawn_worker(env)
    try:
        def settled() -> bool:
            play_user(engine)
            return all(engine.get(i).state in TERMINAL for i in ids)

        wait_for(settled, 30, "every attempt to settle after the restart")
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(15) == 0, (restarted.stderr.read() if restarted.stderr else b"").decode()[
            -2000:
        ]
    assert_exactly_once(engine, ids, flow)
    adopted = [h for i in ids for h in engine.history(i) if h.note and "adopted" in h.note]
    if endpoint == "create_instance":
        assert adopted, "the restarted worker must adopt the instance created before the crash"
