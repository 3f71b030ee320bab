"""Two worker processes whose clocks differ by 60 s: exactly one instance per attempt (issue 16 item 8).

Leases and due times are on the database's clock (engine.clock.DatabaseClock): a worker 60 s ahead
no longer sees the other worker's 30-second leases as expired and runs no step a second time. The
sandbox holds each POST /instances before creating the instance, so a second run of a create step
(the duplicate of the original finding: 4 of 10 attempts at 15 s of skew) would find no instance by
tag yet and POST again.
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
from testkit import TEST_KEY, quick_config

from engine import Engine
from states import State

pytestmark = [pytest.mark.slow, pytest.mark.realtime]
SKEWED_WORKER = str(Path(__file__).with_name("skewed_worker.py"))


def spawn(db_url: str, sandbox: Any, skew_s: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PROVISION_DB_URL": db_url, "ELEMENTS_BASE_URL": sandbox.base_url,
           "PROVISION_SECRET_KEY": TEST_KEY, "PROVISION_LEASE_SECONDS": "30",
           "PROVISION_READ_TIMEOUT_SECONDS": "5", "PROVISION_CONNECT_TIMEOUT_SECONDS": "0.5",
           "PROVISION_BATCH_SIZE": "2", "PROVISION_POLL_SECONDS": "0.1",
           "PROVISION_COMMIT_WINDOW_SECONDS": "0"}
    return subprocess.Popen([sys.executable, SKEWED_WORKER, str(skew_s), "--concurrency", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_two_workers_60_s_apart_create_one_instance_per_attempt(
        db_url: str, sandbox: Any, engine_on: Callable[..., Engine]) -> None:
    eng = engine_on(db_url)
    sandbox.set_faults(delays=["create_instance=1.5:before"])
    ids = [eng.start("quickbooks", f"Skew {i}", flow="quick", config=quick_config()).id for i in range(10)]
    workers = [spawn(db_url, sandbox, 0), spawn(db_url, sandbox, 60)]
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not all(eng.get(i).state is State.PROVISIONED for i in ids):
            time.sleep(0.1)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        errors = [(w.wait(20), (w.stderr.read() if w.stderr else b"").decode()[-1500:]) for w in workers]
    assert all(rc == 0 for rc, _ in errors), errors
    assert all(eng.get(i).state is State.PROVISIONED for i in ids)
    posts = [r for r in sandbox.requests() if r["endpoint"] == "create_instance"]
    assert len(posts) == 10, f"{len(posts)} POSTs for 10 attempts: a step ran twice"
    for attempt_id in ids:
        a = eng.get(attempt_id)
        assert [str(i["id"]) for i in eng.client.find_instances_by_tag(a.instance_tag)] == [a.instance_id]
