"""A measurement only: callbacks that cost the driver (almost) nothing (``engine_bench --callbacks free``).

Not a product path. ``Engine.handle_callback`` parses, hashes, encrypts and writes each callback in
its own statement, in the driver process, on the same two cores as the worker processes. To see
how far that cost holds the 2-worker / 1-worker ratio down, this replaces it with one transaction
per poll that moves every REDIRECTED attempt to CALLBACK_RECEIVED the way an applied callback does
(history row, inbox row, encrypted parameters, due now), without any of the checks. The workers'
side is unchanged. Compare ``--callbacks engine`` and ``--callbacks free`` in the same run.
"""
from __future__ import annotations

import threading

import sqlalchemy as sa

from engine import Engine
from persistence.schema import attempts, callbacks, history
from persistence.statements import callback_received_values
from states.model import State, Trigger

# What a provider sends back (bench/engine_bench.provider_redirect); the fake API accepts any values.
# Each attempt names its own company (realmId): the engine refuses a second live connection of one.
PARAMS = {"oauth_token": "rt", "oauth_verifier": "v", "dataSource": "QBO"}


def params_of(attempt_id: str) -> dict[str, str]:
    """The callback parameters for one attempt, with a realmId of its own."""
    return {**PARAMS, "realmId": str(int(attempt_id.replace("-", "")[:12], 16))}


def apply_all_redirected(driver: Engine) -> int:
    """Move REDIRECTED attempts (up to 500) to CALLBACK_RECEIVED in one transaction; how many moved."""
    repo = driver.repo
    now = driver.now()
    c = attempts.c
    with repo.engine.begin() as conn:
        # At most 500 a time: SQLite before 3.32 allows 999 bound parameters per statement.
        pick = sa.select(c.id, c.history_seq).where(c.state == State.REDIRECTED.value).limit(500)
        if repo.dialect == "postgresql":
            pick = pick.with_for_update()  # a worker cannot move them meanwhile; the lock is cheap
        rows = conn.execute(pick).all()
        if not rows:
            return 0
        ids = [r.id for r in rows]
        sealed = {i: repo.codec.seal(params_of(i)) for i in ids}
        conn.execute(history.insert(), [
            {"attempt_id": r.id, "seq": r.history_seq + 1, "trigger": Trigger.RECEIVE_CALLBACK.value,
             "source": State.REDIRECTED.value, "dest": State.CALLBACK_RECEIVED.value, "at": now,
             "duration_ms": 0, "worker": driver.worker_id, "outcome": "ok", "tries": 1, "error": None,
             "note": "callback"}
            for r in rows])
        conn.execute(callbacks.insert(), [
            {"attempt_id": i, "received_at": now, "params": sealed[i], "digest": None, "status": "applied",
             "reason": None} for i in ids])
        # The columns Engine.handle_callback's own statement sets, without its guard.
        conn.execute(attempts.update().where(c.id == sa.bindparam("b_id")).values(callback_received_values()),
                     [{"b_id": i, "g_now": now, "v_callback_secrets": sealed[i]} for i in ids])
    return len(ids)


def answer_until(driver: Engine, done: threading.Event, poll: float) -> None:
    """Apply REDIRECTED attempts' callbacks in bulk until ``done`` is set (a driver thread)."""
    while not done.is_set():
        if not apply_all_redirected(driver):
            done.wait(poll)
