"""A step whose lease runs out inside its handler sends nothing to the platform (issue 16 item 8).

The quick create step first claims its realm in the database, then POSTs /instances. In the flaky
run of ``test_db_restarts.py::test_three_workers_survive_a_locked_sqlite_file`` a worker's realm
claim waited 6 s for a locked SQLite file, 4 s past its lease; meanwhile a second worker claimed
the step, found no instance by tag and created one; then the first worker's late POST created a
second instance that nobody recorded (its commit was discarded as a lost lease).

On PostgreSQL the wait is real and deterministic: the test holds ``LOCK TABLE realm_claims``
(which the realm claim's INSERT waits for and the attempt claim does not touch) while the
engine's FakeClock moves past the lease. SQLite has one lock for the whole file, which would stop
the attempt claim too; there (and on PostgreSQL) the second test moves the clock past the lease
inside the step, after the scheduler's check, through the engine's step observer. Real engine,
real sandbox over HTTP, real database.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from testkit import quick_config

from engine import Engine, FakeClock, TickReport
from engine.core.observe import NoObserver
from states import HAPPY_PATHS, Attempt, Flow, State


def posts(sim: Any) -> int:
    return len([r for r in sim.requests() if r["endpoint"] == "create_instance"])


def waiting_for_lock(conn: sa.Connection) -> bool:
    """Whether a session waits for a lock on ``realm_claims`` (the engine's realm claim)."""
    return bool(conn.exec_driver_sql(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'realm_claims'::regclass").scalar())


def assert_released_then_provisioned_once(late: Engine, other: Engine, report: TickReport,
                                          attempt_id: str, sim: Any) -> None:
    """``late`` released the step unstarted; ``other`` then creates exactly one instance."""
    assert posts(sim) == 0, "a POST /instances went out after the step's lease ran out"
    assert [r.outcome for r in report.results] == ["released"]
    a = late.get(attempt_id)
    assert (a.state, a.lease_owner, a.failures, a.last_error) == (State.NEW, None, 0, None)
    other.tick()  # any worker runs the step again: one POST, one instance, the happy path
    a = other.get(attempt_id)
    assert a.state is State.PROVISIONED and posts(sim) == 1
    assert [str(i["id"]) for i in other.client.find_instances_by_tag(a.instance_tag)] == [a.instance_id]
    assert tuple(h.trigger for h in other.history(attempt_id)) == HAPPY_PATHS[Flow.QUICK]


@pytest.mark.postgres
@pytest.mark.realtime
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
    assert_released_then_provisioned_once(late, other, reports[0], attempt_id, sandbox)


class SlowStart(NoObserver):
    """Moves the engine's FakeClock past the lease as the step begins, after the scheduler's check
    (what a slow database does to a handler before its first platform call)."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds

    @contextlib.contextmanager
    def running(self, attempt: Attempt, at: datetime) -> Iterator[None]:
        self.clock.advance(self.seconds)
        yield


def test_a_step_whose_lease_ran_out_as_it_began_sends_no_post(
        db_url: str, clock: FakeClock, sandbox: Any, engine_on: Callable[..., Engine]) -> None:
    other = engine_on(db_url, clock=clock)
    late = engine_on(db_url, clock=clock, observer=SlowStart(clock, other.settings.lease_s))
    attempt_id = late.start("quickbooks", "Slow start", flow="quick", config=quick_config()).id
    report = late.tick()
    assert_released_then_provisioned_once(late, other, report, attempt_id, sandbox)
