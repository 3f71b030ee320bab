"""kill -9 during the re-authentication PUT ends PROVISIONED with current tokens (issue 16 item 7).

The consent code of a re-authorisation is single use. The sandbox re-authenticates the instance
and then holds the PUT's answer; the worker is SIGKILLed in that window, so the code is spent and
nothing is committed. The restarted worker must look at the instance, see its new tokens and adopt
them, instead of PUTting the spent code again (which the provider refuses: ``permanent_error``).

The attempt is taken to FAILED(renewal_rejected) and through the new consent in process on a fake
clock set in the past (2026-01-01), so the real-time worker finds the CALLBACK_RECEIVED step due
(and, after it, renews at once: the attempt stays PROVISIONED with the newest tokens).
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest
from integration.test_crash import spawn_worker, wait_for, worker_env
from testkit import consent, renewal_rejected

from engine import Engine
from engine.clock import FakeClock
from states import State

pytestmark = [pytest.mark.slow, pytest.mark.realtime]


def _rejected(engine: Engine, clock: FakeClock, sandbox: Any) -> Any:
    """An OAuth2 attempt whose renewal the provider refused (its refresh token was used elsewhere)."""
    # Engine-owned renewal: the sandbox's clock stays in the past while the worker runs in real
    # time, so a platform-owned instance would look overdue and be failed after the adopt.
    return engine.get(renewal_rejected(engine, clock, sandbox, name="Reauth crash", renewal="engine"))


def test_sigkill_during_the_reauthenticate_put_adopts_the_new_tokens(
        make_engine: Callable[..., Engine], clock: FakeClock, clocked_sandbox: Any, db_url: str) -> None:
    sandbox = clocked_sandbox
    engine = make_engine(clock=clock, sim=sandbox)
    a = _rejected(engine, clock, sandbox)
    engine.reauthorize(a.id)
    engine.run_until_idle()
    engine.handle_callback(consent(engine.redirect_url(engine.get(a.id)) or ""))
    assert engine.get(a.id).state is State.CALLBACK_RECEIVED  # the worker does the PUT

    def puts() -> list[dict[str, Any]]:
        return [r for r in sandbox.requests() if r["endpoint"] == "update_instance" and r["method"] == "PUT"]

    env = worker_env(db_url, sandbox)
    sandbox.set_faults(delays={"update_instance": 30.0})
    worker = spawn_worker(env)
    try:
        wait_for(lambda: len(puts()) == 1, 20, "the worker to send the re-authentication PUT")
        worker.send_signal(signal.SIGKILL)  # the platform used the code; nothing is committed
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    sandbox.set_faults()
    assert engine.get(a.id).state is State.CALLBACK_RECEIVED
    assert engine.get(a.id).secrets.get("reauth_sent_at")  # the marker went in before the PUT

    restarted = spawn_worker(env)
    try:
        wait_for(lambda: engine.get(a.id).state is not State.CALLBACK_RECEIVED, 30,
                 "the restarted worker to finish the step")
    finally:
        restarted.send_signal(signal.SIGTERM)
        code = restarted.wait(15)
        assert code == 0, (restarted.stderr.read() if restarted.stderr else b"").decode()[-2000:]
    done = engine.get(a.id)
    assert done.state is State.PROVISIONED and done.instance_id == a.instance_id, done.last_error
    assert len(puts()) == 1  # the spent code was never sent again
    notes = [h.note for h in engine.history(a.id) if h.trigger == "provision"]
    assert notes[-1] == f"adopted instance {a.instance_id}, re-authenticated by an earlier try"
    # Current tokens: the attempt holds the refresh token the platform and provider now accept.
    current = done.secrets["user_tokens"]["oauth.user.refresh_token"]
    assert current != a.secrets["user_tokens"]["oauth.user.refresh_token"]
    assert sandbox.store.refresh_tokens[current].valid
    assert "reauth_sent_at" not in done.secrets or done.secrets["reauth_sent_at"] is None
    assert len(engine.client.find_instances_by_tag(a.instance_tag)) == 1
