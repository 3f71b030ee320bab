"""Disconnect end to end (issue 10/12 must-have 4): the engine-held refresh token is revoked at the
provider, the instance is deleted on the platform, and the attempt ends DISCONNECTED (not FAILED),
with ``connection.disconnected``. Real sandbox over HTTP; SQLite and PostgreSQL; and a worker
process killed with SIGKILL inside each of the two calls (slow)."""
from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_crash import spawn_worker, wait_for, worker_env
from testkit import QBO, TEST_KEY, connected, renewal_rejected

from engine import Engine
from engine.clock import FakeClock
from engine.core import events as ev
from engine.errors import InvalidTransitionError
from states import State, invalid_step

PROVISION = str(Path(sys.executable).with_name("provision"))



# The sandbox logs (and delays) these calls under the endpoint names of its fault table.
FAULT_ENDPOINT = {"revoke": "provider_token", "delete": "update_instance"}


def calls(sandbox: Any, call: str) -> int:
    """How many revoke (POST .../tokens/revoke) or delete (DELETE /instances/{id}) calls arrived."""
    if call == "revoke":
        return len([r for r in sandbox.requests() if r["path"].endswith("/oauth2/tokens/revoke")])
    return len([r for r in sandbox.requests() if r["method"] == "DELETE" and "/instances/" in r["path"]])


def test_disconnect_revokes_deletes_and_ends_disconnected(make_engine: Callable[..., Engine],
                                                          sandbox: Any) -> None:
    engine = make_engine()
    attempt_id = connected(engine)
    a = engine.get(attempt_id)
    token = a.secrets["user_tokens"]["oauth.user.refresh_token"]
    assert sandbox.store.refresh_tokens[token].valid and int(a.instance_id or 0) in sandbox.store.instances
    sandbox.clear_requests()
    moving = engine.disconnect(attempt_id, actor="ops")
    assert moving.state is State.DISCONNECTING
    engine.run_until_idle()
    done = engine.get(attempt_id)
    assert (done.state, done.failure_reason) == (State.DISCONNECTED, None)
    assert not sandbox.store.refresh_tokens[token].valid
    assert int(done.instance_id or 0) not in sandbox.store.instances
    assert (calls(sandbox, "revoke"), calls(sandbox, "delete")) == (1, 1)
    assert done.secrets["user_tokens"] == {}  # no tokens kept for a connection that is gone
    rows = engine.history(attempt_id)
    assert [(h.trigger, h.dest) for h in rows[-2:]] == [("disconnect", "DISCONNECTING"),
                                                         ("remove", "DISCONNECTED")]
    assert rows[-2].note == "operator:ops"
    assert invalid_step((h.trigger, h.source, h.dest) for h in rows) is None
    feed = [e for e in engine.events(limit=100) if e.attempt_id == attempt_id]
    assert [e.type for e in feed[-2:]] == [ev.DISCONNECTING, ev.DISCONNECTED]
    assert feed[-1].data["customer"] == "acme-42" and feed[-1].data["reason"] is None
    with pytest.raises(InvalidTransitionError):
        engine.disconnect(attempt_id)
    # The customer may connect again: a DISCONNECTED attempt does not block a new one.
    assert engine.start("quickbooks", "again", flow="oauth2", customer="acme-42", **QBO).state is State.NEW


def test_an_instance_already_gone_and_a_failed_attempt_still_disconnect(
        make_engine: Callable[..., Engine], clock: FakeClock, clocked_sandbox: Any) -> None:
    engine = make_engine(clock=clock, sim=clocked_sandbox)
    attempt_id = renewal_rejected(engine, clock, clocked_sandbox, renewal="engine")  # FAILED, instance kept
    engine.client.delete_instance(engine.get(attempt_id).instance_id or "")  # and someone deleted it
    engine.disconnect(attempt_id)
    engine.run_until_idle()
    assert engine.get(attempt_id).state is State.DISCONNECTED  # the 404 meant "already gone"


def test_cli_disconnect(sqlite_url: str, engine_on: Callable[..., Engine], sandbox: Any) -> None:
    engine = engine_on(sqlite_url)
    attempt_id = connected(engine)
    env = {"PROVISION_SECRET_KEY": TEST_KEY, "PROVISION_DB_URL": sqlite_url,
           "ELEMENTS_BASE_URL": sandbox.base_url, "PATH": str(Path(sys.executable).parent)}
    run = subprocess.run([PROVISION, "disconnect", attempt_id], capture_output=True, text=True, env=env,
                         timeout=60)
    assert run.returncode == 0 and f"disconnecting: attempt {attempt_id} is DISCONNECTING" in run.stdout
    again = subprocess.run([PROVISION, "disconnect", attempt_id], capture_output=True, text=True, env=env,
                           timeout=60)
    assert again.returncode == 2 and "cannot disconnect" in again.stderr
    engine.run_until_idle()
    assert engine.get(attempt_id).state is State.DISCONNECTED


@pytest.mark.slow
@pytest.mark.realtime
@pytest.mark.parametrize("endpoint", ["revoke", "delete"])
def test_sigkill_inside_each_disconnect_call_still_ends_disconnected(
        make_engine: Callable[..., Engine], sandbox: Any, db_url: str, endpoint: str) -> None:
    engine = make_engine()
    attempt_id = connected(engine)
    token = engine.get(attempt_id).secrets["user_tokens"]["oauth.user.refresh_token"]
    engine.disconnect(attempt_id)
    sandbox.clear_requests()
    env = worker_env(db_url, sandbox)
    # Held after the effect: revoked/deleted at the sandbox, nothing committed by the worker.
    sandbox.set_faults(delays={FAULT_ENDPOINT[endpoint]: 30.0})
    worker = spawn_worker(env)
    try:
        wait_for(lambda: calls(sandbox, endpoint) > 0, 20, f"the worker to call {endpoint}")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    sandbox.set_faults()
    assert engine.get(attempt_id).state is State.DISCONNECTING
    restarted = spawn_worker(env)
    try:
        wait_for(lambda: engine.get(attempt_id).state is State.DISCONNECTED, 30, "the disconnect to finish")
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(15) == 0
    # Exactly the calls needed: the interrupted call once more (harmless), every other call once.
    expected = {"revoke": (2, 1), "delete": (1, 2)}[endpoint]
    assert (calls(sandbox, "revoke"), calls(sandbox, "delete")) == expected
    assert not sandbox.store.refresh_tokens[token].valid
    assert int(engine.get(attempt_id).instance_id or 0) not in sandbox.store.instances
    rows = engine.history(attempt_id)
    assert [h.trigger for h in rows].count("remove") == 1
