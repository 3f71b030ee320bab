"""Each error class through the sandbox: final state, reason, hint, and the recorded waits."""
from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
from testkit import QBO, QUICK_CONFIG

from engine import Engine, RetryPolicy
from states import State

FAST = RetryPolicy(in_process_attempts=3, in_process_initial=0.1, in_process_max=2.0, durable_initial=5,
                   durable_max=60, budget=2)


def quick(engine: Engine) -> Any:
    return engine.start("quickbooks", "Err", flow="quick", config=QUICK_CONFIG)


def drive(engine: Engine, clock: Any, rounds: int = 20, until: State | None = None) -> None:
    """Tick, jumping the fake clock to each durable retry (stop early once any attempt is ``until``)."""
    for _ in range(rounds):
        engine.run_until_idle()
        due = engine.repo.next_due_at()
        if due is None or (until is not None and engine.list(until)):
            return
        clock.now = max(clock.now, due)


def test_503_storm_is_retried_in_process_then_succeeds(make_engine: Callable[..., Engine], sandbox: Any,
                                                       clock: Any, waits: list[float]) -> None:
    sandbox.set_faults(
        fails={"create_instance": {"rate": 1.0, "status": 503, "count": 2, "retry_after": 0.5}}
    )
    engine = make_engine(clock=clock, policy=FAST)
    a = quick(engine)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.PROVISIONED
    assert waits == [0.5, 0.5]  # Retry-After honoured, no real sleeping
    [h] = engine.history(a.id)
    assert h.tries == 3


def test_503_storm_exhausts_the_budget(make_engine: Callable[..., Engine], sandbox: Any, clock: Any,
                                       waits: list[float]) -> None:
    sandbox.set_faults(fails={"create_instance": {"rate": 1.0, "status": 503}})
    engine = make_engine(clock=clock, policy=FAST)
    a = quick(engine)
    t0 = clock()
    drive(engine, clock)
    a = engine.get(a.id)
    assert a.state is State.FAILED and a.failure_reason == "retries_exhausted"
    assert a.last_error and a.last_error["kind"] == "unavailable" and a.last_error["status"] == 503
    assert "retries automatically" in a.last_error["hint"]
    assert len(waits) == 2 * (FAST.budget + 1)  # in-process waits of each of the 3 steps
    creates = [r for r in sandbox.requests() if r["endpoint"] == "create_instance" and r["method"] == "POST"]
    assert len(creates) == 3 * (FAST.budget + 1)
    assert clock() - t0 >= __import__("datetime").timedelta(seconds=FAST.durable_initial / 2)
    [h] = engine.history(a.id)
    # tries = earlier failed runs of the step (2) + HTTP tries in the run that gave up (3)
    assert (h.trigger, h.dest, h.tries) == ("fail", "FAILED", 2 + 3)


def test_429_with_long_retry_after_is_rescheduled_durably(make_engine: Callable[..., Engine], sandbox: Any,
                                                          clock: Any, waits: list[float]) -> None:
    sandbox.set_faults(fails={"oauth_token": {"rate": 1.0, "status": 429, "count": 1, "retry_after": 30}})
    engine = make_engine(clock=clock, policy=FAST)
    a = engine.start("quickbooks", "Throttled", **QBO)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert (
        a.state is State.NEW and a.failures == 1 and a.last_error and a.last_error["kind"] == "rate_limited"
    )
    assert waits == []  # 30 s is too long to block a worker: durable instead
    assert a.next_run_at is not None and (a.next_run_at - clock()).total_seconds() >= 30
    drive(engine, clock, until=State.REDIRECTED)
    assert engine.get(a.id).state is State.REDIRECTED


def test_read_timeout_is_transient(make_engine: Callable[..., Engine], sandbox: Any, clock: Any,
                                   waits: list[float]) -> None:
    sandbox.set_faults(delays={"oauth_url": 0.6})
    engine = make_engine(clock=clock, policy=RetryPolicy(in_process_attempts=2, budget=0), read_timeout=0.2)
    a = engine.start("sfdc", "Slow", flow="oauth2", **QBO)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.FAILED and a.failure_reason == "retries_exhausted"
    assert a.last_error and a.last_error["kind"] == "timeout" and len(waits) == 1


def test_connection_refused(make_engine: Callable[..., Engine], clock: Any, waits: list[float]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    engine = make_engine(clock=clock, policy=FAST, base_url=f"http://127.0.0.1:{port}/elements/api-v2")
    a = quick(engine)
    drive(engine, clock)
    a = engine.get(a.id)
    assert a.state is State.FAILED and a.failure_reason == "retries_exhausted"
    assert a.last_error and a.last_error["kind"] == "connection"
    assert "apiSecret" not in str(a.last_error) and str(port) not in a.last_error["message"]


# 401 is the engine's own credentials: it parks the queue instead (the test after this one).
@pytest.mark.parametrize("status,kind", [(400, "bad_request"), (403, "forbidden"),
                                         (404, "not_found"), (409, "conflict")])
def test_permanent_statuses_fail_at_once(make_engine: Callable[..., Engine], sandbox: Any, clock: Any,
                                         waits: list[float], status: int, kind: str) -> None:
    sandbox.set_faults(fails={"create_instance": {"rate": 1.0, "status": status}})
    engine = make_engine(clock=clock, policy=FAST)
    a = quick(engine)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.FAILED and a.failure_reason == "permanent_error"
    assert a.last_error and a.last_error["kind"] == kind and a.last_error["status"] == status
    assert a.last_error["hint"] and a.last_error["request_id"]
    assert waits == []


def test_bad_platform_secrets_park_the_queue_and_fail_no_attempt(make_engine: Callable[..., Engine]) -> None:
    """A 401 is the engine's configuration error (issue 15 must-have 6): the attempt is not charged."""
    engine = make_engine(user_secret="wrong-user-secret")
    a = quick(engine)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.NEW and a.failures == 0 and a.failure_reason is None
    assert engine.history(a.id) == []
    assert engine.parking.parked and engine.parking.reason
    assert "ELEMENTS_USER_SECRET" in engine.parking.reason
    assert engine.tick().claimed == 0  # parked: nothing is claimed during the backoff


def test_unknown_element_gives_404(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    a = engine.start("nosuchelement", "x", **QBO)
    engine.run_until_idle()
    a = engine.get(a.id)
    assert a.state is State.FAILED and a.last_error and a.last_error["kind"] == "not_found"
    assert "nosuchelement" in a.last_error["message"]


def test_worker_loop_survives_a_database_error(make_engine: Callable[..., Engine], sandbox: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing tick (database locked, connection dropped) is logged; the worker goes on."""
    import threading
    import time

    import sqlalchemy as sa

    from engine import EngineSettings

    engine = make_engine(settings=EngineSettings(poll_max_s=0.05))
    a = quick(engine)
    real_claim = engine.repo.claim_due
    calls = []

    def flaky_claim(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise sa.exc.OperationalError("UPDATE attempts", {}, Exception("database is locked"))
        return real_claim(*args, **kw)

    monkeypatch.setattr(engine.repo, "claim_due", flaky_claim)
    stop = threading.Event()
    worker = threading.Thread(target=engine.run, args=(stop,))
    worker.start()
    deadline = time.monotonic() + 10
    while engine.get(a.id).state is not State.PROVISIONED and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    engine.wake()
    worker.join(5)
    assert not worker.is_alive() and len(calls) >= 2
    assert engine.get(a.id).state is State.PROVISIONED
