"""Test helper, not a test: the fault catalogue's rows about workers, processes and the platform.

Each row injects its fault, runs the engine (or ``provision worker`` processes) until the attempts
settle and returns its ``Tally`` (``fault_audit``); the test module that covers the fault in depth
is named in each docstring. Worker processes and the platform's lateness run on real time.
"""
from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa
from integration.fault_audit import Kit, Tally, audit, quick, stop_worker
from integration.test_clock_skew import spawn as spawn_skewed
from integration.test_crash import play_user, spawn_worker, wait_for, worker_env
from integration.test_receiver_load import _flood as forged_flood
from integration.test_receiver_load import serve_on
from integration.test_worker_survives import db_now, terminate_backends
from test_reauth_crash import _rejected as rejected_renewal
from testkit import QBO, consent

from engine import Engine, EngineSettings, RetryPolicy
from states import TERMINAL, State


def kill_when(sim: Any, env: dict[str, str], endpoint: str, called: Callable[[], bool]) -> None:
    """Spawn a worker while the sandbox holds ``endpoint``'s answers after their effect, SIGKILL it
    once ``called()`` (the effect happened, nothing is committed), then clear the faults."""
    sim.set_faults(delays={endpoint: 30.0})
    worker = spawn_worker(env)
    try:
        wait_for(called, 20, f"a call to {endpoint}")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    sim.set_faults()


def kill_9_in_each_step(kit: Kit) -> Tally:
    """A ``provision worker`` SIGKILLed while the sandbox holds the answer of each step after its
    effect (request token, redirect URL, create), then restarted (``test_crash.py``)."""
    engine, sim = kit.engine_on(kit.db_url), kit.sandbox
    env = worker_env(kit.db_url, sim)

    def kill_inside(endpoint: str) -> None:
        def calls() -> int:
            return len([r for r in sim.requests() if r["endpoint"] == endpoint])

        before = calls()
        kill_when(sim, env, endpoint, lambda: calls() > before)

    ids = [engine.start("quickbooks", "Kill token", flow="oauth1", **QBO).id]
    kill_inside("oauth_token")
    ids.append(engine.start("quickbooks", "Kill url", flow="oauth1", **QBO).id)
    kill_inside("oauth_url")

    def redirected() -> bool:  # in process, once the killed worker's leases expired
        engine.run_until_idle()
        return all(engine.get(i).state is State.REDIRECTED for i in ids)

    wait_for(redirected, 20, "both OAuth1 attempts to wait for their callbacks")
    assert play_user(engine) == 2  # the worker below runs their create steps (and the quick one's)
    ids += quick(engine, 1, "Kill create")
    kill_inside("create_instance")
    restarted = spawn_worker(env)
    try:
        wait_for(lambda: all(engine.get(i).state in TERMINAL for i in ids), 30, "every attempt to settle")
    finally:
        stop_worker(restarted)
    return audit(engine, sim, ids)


def worker_loop(engine: Engine, done: Callable[[], bool], fault: Callable[[], None]) -> None:
    """``Engine.run`` in a thread until ``done()``; ``fault()`` runs meanwhile. The loop must not exit."""
    stop, crashed = threading.Event(), []

    def run() -> None:
        try:
            engine.run(stop)
        except BaseException as exc:  # noqa: BLE001 - recorded: the loop must survive
            crashed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        fault()
        wait_for(lambda: done() or bool(crashed), 30, "the worker to finish the attempts")
    finally:
        stop.set()
        engine.wake()
        thread.join(20)
    assert not crashed and not thread.is_alive(), crashed


def fast_engine(kit: Kit, url: str) -> Engine:
    """Short timeouts and leases, so a failed commit's lease expires in two seconds of real time."""
    return kit.engine_on(url, settings=EngineSettings(lease_s=2, poll_max_s=0.05),
                         policy=RetryPolicy(in_process_attempts=1, durable_initial=0.2, durable_max=0.5),
                         connect_timeout=0.5, read_timeout=0.5)


def database_errors_in_the_worker_loop(kit: Kit) -> Tally:
    """The database fails once at the claim, at a commit (a create: the instance exists, the
    transition does not) and at the wait computation, under ``Engine.run`` (``test_worker_survives.py``)."""
    engine = fast_engine(kit, kit.db_url)
    repo: Any = engine.repo
    failed: set[str] = set()

    def fail_once(name: str) -> None:
        real = getattr(repo, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = "commit" if name in ("apply", "apply_many") else name
            if key not in failed:
                failed.add(key)
                raise sa.exc.OperationalError(f"-- {name}", {}, Exception("database is locked"))
            return real(*args, **kwargs)

        setattr(repo, name, wrapper)

    for name in ("claim_due", "apply", "apply_many", "next_due_at"):
        fail_once(name)
    ids = quick(engine, 4, "Loop")
    worker_loop(engine, lambda: all(engine.get(i).state in TERMINAL for i in ids), lambda: None)
    assert failed == {"claim_due", "commit", "next_due_at"}
    return audit(engine, kit.sandbox, ids)


def pg_sessions_terminated_during_ticks(kit: Kit) -> Tally:
    """The engine's PostgreSQL sessions terminated three times while ``Engine.run`` provisions."""
    url = kit.db_url
    since = db_now(url)
    engine = fast_engine(kit, url)
    ids = quick(engine, 4, "Restarts")

    def restarts() -> None:
        for _ in range(3):
            terminate_backends(url, since)
            time.sleep(0.2)  # realtime: let the worker reconnect and move on between restarts

    worker_loop(engine, lambda: all(engine.get(i).state in TERMINAL for i in ids), restarts)
    return audit(engine, kit.sandbox, ids)


def kill_9_during_the_reauthorize_put(kit: Kit) -> Tally:
    """The worker SIGKILLed while the platform holds the re-authentication PUT's answer (the code
    is spent); the restarted worker adopts the new tokens (``test_reauth_crash.py``)."""
    sim, url = kit.clocked, kit.db_url
    engine = kit.engine_on(url, clock=kit.clock, sim=sim)
    a = rejected_renewal(engine, kit.clock, sim)
    engine.reauthorize(a.id)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or ""))
    env = worker_env(url, sim)
    kill_when(sim, env, "update_instance", lambda: any(
        r["endpoint"] == "update_instance" and r["method"] == "PUT" for r in sim.requests()))
    restarted = spawn_worker(env)

    def settled() -> bool:  # on real time the token is overdue: renewed and pushed at once, then idle
        now = engine.get(a.id)
        return now.state is not State.CALLBACK_RECEIVED and not now.secrets.get("push_pending") and (
            now.next_run_at is None or now.next_run_at > datetime.now(timezone.utc))

    try:
        wait_for(settled, 30, "the restarted worker")
    finally:
        stop_worker(restarted)
    return audit(engine, sim, [a.id])


def slow_platform(kit: Kit) -> Tally:
    """The platform commits each POST /instances 2.5 s after receiving it, past the client's 1 s read
    timeout ("hold before commit"); five attempts (``test_exactly_one_instance.py``)."""
    sim = kit.clocked
    sim.set_faults(delays=["create_instance=2.5:before"])
    engine = kit.engine_on(kit.db_url, clock=kit.clock, sim=sim, read_timeout=1.0,
                           settings=EngineSettings(concurrency=5))
    ids = quick(engine, 5, "Slow")
    engine.tick()  # five POSTs time out
    wait_for(lambda: len(sim.store.instances) == 5, 10, "the platform to commit the late POSTs")
    sim.set_faults()
    for _ in range(3):  # past the settle time, then past the follow-up check
        kit.clock.advance(5)
        engine.run_until_idle()
    return audit(engine, sim, ids)


def cancel_during_create(kit: Kit) -> Tally:
    """An operator cancels an attempt while its POST /instances is held before commit, then restarts
    it: the restarted attempt adopts the late instance (``test_exactly_one_instance.py``)."""
    sim = kit.clocked
    sim.set_faults(delays=["create_instance=1.5:before"])
    engine = kit.engine_on(kit.db_url, clock=kit.clock, sim=sim, read_timeout=10.0)
    [attempt_id] = quick(engine, 1, "Cancelled")
    ticking = threading.Thread(target=engine.tick)
    ticking.start()
    try:
        wait_for(lambda: engine.get(attempt_id).lease_owner is not None, 5, "the create step")
        assert engine.cancel(attempt_id, actor="ops").state is State.FAILED
    finally:
        ticking.join(20)
    sim.set_faults()
    engine.restart(attempt_id, actor="ops")
    kit.clock.advance(30)  # the settle time (3 x the read timeout)
    engine.run_until_idle()
    return audit(engine, sim, [attempt_id])


def clock_skew(kit: Kit) -> Tally:
    """Two worker processes whose clocks differ by 60 s, creates held 1.5 s (``test_clock_skew.py``)."""
    engine, sim = kit.engine_on(kit.db_url), kit.sandbox
    sim.set_faults(delays=["create_instance=1.5:before"])
    ids = quick(engine, 4, "Skew")
    workers = [spawn_skewed(kit.db_url, sim, 0), spawn_skewed(kit.db_url, sim, 60)]
    try:
        wait_for(lambda: all(engine.get(i).state in TERMINAL for i in ids), 30, "the skewed workers")
    finally:
        for worker in workers:
            stop_worker(worker)
    return audit(engine, sim, ids)


def forged_callback_flood(kit: Kit) -> Tally:
    """1,000 forged callbacks from 127.0.0.2 against a real ``provision serve`` while three users'
    real callbacks arrive (``test_receiver_load.py``); forged ones are not stored."""
    url = kit.db_url
    engine = kit.engine_on(url)  # migrates the database before the server opens it
    ids = [engine.start("quickbooks", f"Flooded {i}", flow="oauth2", **QBO).id for i in range(3)]
    engine.run_until_idle()
    locations = [consent(engine.redirect_url(engine.get(i)) or "") for i in ids]
    with serve_on(url, kit.sandbox) as (proc, callback_url), ThreadPoolExecutor(2) as pool:
        port = urlsplit(callback_url).port
        assert port is not None and proc.poll() is None
        floods = [pool.submit(forged_flood, port, 500) for _ in range(2)]
        for location in locations:
            page = requests.get(f"{callback_url}?{urlsplit(location).query}", timeout=30)
            assert page.status_code == 200
        assert all(sum(f.result().values()) == 500 for f in floods)
    engine.run_until_idle()
    assert [c.status for c in engine.repo.callbacks()] == ["applied"] * 3  # one row per real callback
    return audit(engine, kit.sandbox, ids)
