"""A step whose lease runs out inside its handler sends nothing to the platform (issue 16 item 8).

The quick create step first claims its realm in the database, then POSTs /instances. In the flaky
run of ``test_db_restarts.py::test_three_workers_survive_a_locked_sqlite_file`` a worker's realm
claim waited 6 s for a locked SQLite file, 4 s past its lease; meanwhile a second worker claimed
the step, found no instance by tag and created one; then the first worker's late POST created a
second instance that nobody recorded (its commit was discarded as a lost lease).

Here the wait is real and deterministic: the test holds PostgreSQL's ``LOCK TABLE realm_claims``
(which the realm claim's INSERT waits for and the attempt claim does not touch) while the
engine's FakeClock moves past the lease. Real engine, real sandbox over HTTP, real PostgreSQL.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from testkit import quick_config

from engine import Engine, FakeClock, TickReport
from states import HAPPY_PATHS, Flow, State

pytestmark = [pytest.mark.postgres, pytest.mark.realtime]


def posts(sim: Any) -> int:
    return len([r for r in sim.requests() if r["endpoint"] == "create_instance"])


def waiting_for_lock(conn: sa.Connection) -> bool:
    """Whether a session waits for a lock on ``realm_claims`` (the engine's realm claim)."""
    return bool(conn.exec_driver_sql(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'realm_claims'::regclass").scalar())


def test_a_step_past_its_lease_after_a_database_wait_sends_no_post(
        pg_schema_url: str, clock: FakeClock, sandbox: Any, engine_on: Callable[..., Engine]) -> None:
    late = engine_on(pg_schema_url, clock=clock)
    other = engine_on(pg_schema_url, clock=clock)
    attempt_id = late.start("quickbooks", "Late", flow="quick", config=quick_config()).id
    reports: list[TickReport] = []
    locker = sa.create_engine(pg_schema_url)
    try:
        with locker.begin() as conn:
            conn.exec_driver_sql("LOCK TABLE realm_claims IN EXCLUSIVE MODE")
            worker = threading.Thread(target=lambda: reports.append(late.tick()))
            worker.start()
            deadline = time.monotonic() + 10
            while not waiting_for_lock(conn):  # the step is claimed and its realm claim waits
                assert time.monotonic() < deadline, "the step never reached its realm claim"
                time.sleep(0.02)
            assert late.get(attempt_id).lease_owner == late.worker_id
            clock.advance(late.settings.lease_s)  # the lease runs out while the handler waits
        worker.join(20)  # the lock is released: the realm claim goes on, too late for a POST
    finally:
        locker.dispose()
    assert not worker.is_alive()
    assert posts(sandbox) == 0, "a POST /instances went out after the step's lease ran out"
    assert [r.outcome for r in reports[0].results] == ["released"]
    a = late.get(attempt_id)
    assert (a.state, a.lease_owner, a.failures, a.last_error) == (State.NEW, None, 0, None)
    other.tick()  # any worker runs the step again: one POST, one instance, the happy path
    a = other.get(attempt_id)
    assert a.state is State.PROVISIONED and posts(sandbox) == 1
    assert [str(i["id"]) for i in other.client.find_instances_by_tag(a.instance_tag)] == [a.instance_id]
    assert tuple(h.trigger for h in other.history(attempt_id)) == HAPPY_PATHS[Flow.QUICK]
