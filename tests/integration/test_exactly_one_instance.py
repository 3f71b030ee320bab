"""Exactly one instance per attempt on a slow platform and across a cancel (issue 16 item 8).

The sandbox holds POST /instances *before* its effect ("hold before commit"): the client's read
timeout fires, and the platform creates the instance anyway, later. The engine's clock is a
FakeClock (the settle time passes by advancing it); the platform's lateness is real time, so these
tests wait, bounded, for the platform to commit, never for a fixed time.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from testkit import quick_config

from engine import Engine
from engine.clock import FakeClock
from engine.config import EngineSettings
from states import State

pytestmark = [pytest.mark.realtime]
MakeEngine = Callable[..., Engine]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def posts(sim: Any) -> int:
    return len([r for r in sim.requests() if r["endpoint"] == "create_instance"])


def tagged(eng: Engine, attempt_id: str) -> list[str]:
    return sorted(str(i["id"]) for i in eng.client.find_instances_by_tag(eng.get(attempt_id).instance_tag))


def test_a_slow_platform_gets_exactly_five_instances_for_five_attempts(
        db_url: str, clock: FakeClock, clocked_sandbox: Any, engine_on: MakeEngine) -> None:
    sim = clocked_sandbox
    sim.set_faults(delays=["create_instance=2.5:before"])  # commits 2.5 s after receiving
    eng = engine_on(db_url, clock=clock, sim=sim, read_timeout=1.0, settings=EngineSettings(concurrency=5))
    ids = [eng.start("quickbooks", f"Slow {i}", flow="quick", config=quick_config()).id for i in range(5)]
    eng.tick()  # five POSTs, each times out after 1 s
    errors = [eng.get(i).last_error or {} for i in ids]
    assert [(e.get("kind"), e.get("ambiguous_create")) for e in errors] == [("timeout", True)] * 5
    wait_for(lambda: len(sim.store.instances) == 5, 10, "the platform to commit the five late POSTs")
    clock.advance(4.9)  # the settle time is max(5 s, 3 x the 1 s read timeout): not yet
    eng.tick()
    assert all(eng.get(i).state is State.NEW for i in ids)
    clock.advance(0.1)
    eng.tick()  # the look-ups adopt the late instances; no second POST went out
    assert all(eng.get(i).state is State.PROVISIONED for i in ids)
    clock.advance(5)
    eng.tick()  # the follow-up check finds nothing to delete
    assert posts(sim) == 5 and len(sim.store.instances) == 5
    assert all(tagged(eng, i) == [eng.get(i).instance_id] for i in ids)
    rows = [eng.repo.get(i) for i in ids]
    assert all(r is not None and r.secrets.get("duplicate_check_at") is None for r in rows)


def test_a_late_duplicate_is_deleted_by_the_follow_up_check(
        db_url: str, clock: FakeClock, clocked_sandbox: Any, engine_on: MakeEngine) -> None:
    """A settle time shorter than the platform's lateness: the second POST's instance is kept, and
    the first one, appearing later, is deleted and recorded in the history and the event feed."""
    sim = clocked_sandbox
    sim.set_faults(delays=["create_instance=2.5:before"])
    eng = engine_on(db_url, clock=clock, sim=sim, read_timeout=1.0,
                    settings=EngineSettings(create_settle_s=1))
    attempt_id = eng.start("quickbooks", "Late", flow="quick", config=quick_config()).id
    eng.tick()  # POST 1 times out; the platform commits it about 1.5 s from now
    sim.set_faults()
    clock.advance(1)
    eng.tick()  # the look-up finds nothing yet: POST 2 creates the instance at once
    kept = eng.get(attempt_id).instance_id
    assert eng.get(attempt_id).state is State.PROVISIONED and kept is not None
    wait_for(lambda: len(tagged(eng, attempt_id)) == 2, 10, "the late instance of POST 1")
    clock.advance(1)
    eng.tick()
    assert tagged(eng, attempt_id) == [kept]
    last = eng.history(attempt_id)[-1]
    assert (last.trigger, last.source, last.dest) == (
        "remove_duplicate", State.PROVISIONED, State.PROVISIONED)
    assert last.note is not None and f"kept {kept}" in last.note
    assert [e.type for e in eng.events()][-1] == "connection.duplicate_removed"
    assert [r["method"] for r in sim.requests() if r["endpoint"] == "update_instance"] == ["DELETE"]


def test_cancel_during_a_create_then_restart_adopts_the_instance(
        db_url: str, clock: FakeClock, clocked_sandbox: Any, engine_on: MakeEngine) -> None:
    sim = clocked_sandbox
    sim.set_faults(delays=["create_instance=1.5:before"])
    eng = engine_on(db_url, clock=clock, sim=sim, read_timeout=10.0)
    attempt_id = eng.start("quickbooks", "Cancelled", flow="quick", config=quick_config()).id
    worker = threading.Thread(target=eng.tick)
    worker.start()
    try:
        wait_for(lambda: eng.get(attempt_id).lease_owner is not None, 5, "the create step to start")
        cancelled = eng.cancel(attempt_id, actor="ops")
    finally:
        worker.join(20)
    assert cancelled.state is State.FAILED and len(sim.store.instances) == 1  # committed after the cancel
    note = eng.history(attempt_id)[-1].note or ""
    assert "a create may be in flight" in note and eng.get(attempt_id).instance_tag in note
    sim.set_faults()
    eng.restart(attempt_id, actor="ops")
    eng.tick()  # within the settle time (30 s = 3 x the read timeout): no POST, no look-up
    assert eng.get(attempt_id).state is State.NEW and posts(sim) == 1
    clock.advance(30)
    eng.tick()
    assert eng.get(attempt_id).state is State.PROVISIONED
    assert posts(sim) == 1 and len(sim.store.instances) == 1
    assert tagged(eng, attempt_id) == [eng.get(attempt_id).instance_id]
