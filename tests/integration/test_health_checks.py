"""Health checks end to end (issue 10/12 must-have 5): a sandbox instance that becomes invalid,
disabled or deleted, checked over real HTTP; the verdict recorded, shown, and emitted once as
``connection.unhealthy``. SQLite and PostgreSQL."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from testkit import QBO, TEST_KEY, connected

from engine import Engine, FakeClock
from engine.core import events as ev
from engine.errors import InvalidTransitionError
from states import State

PROVISION = str(Path(sys.executable).with_name("provision"))



def flip(sim: Any, instance_id: str | None, **status: bool) -> None:
    resp = requests.post(f"{sim.root_url}/_sandbox/instances/{instance_id}/status", json=status, timeout=5)
    assert resp.status_code == 200, resp.text


def test_invalid_then_disabled_instance_is_recorded_and_emitted_once_per_change(
        db_url: str, engine_on: Callable[..., Engine], clock: FakeClock, clocked_sandbox: Any) -> None:
    engine = engine_on(db_url, clock=clock, sim=clocked_sandbox)
    attempt_id = connected(engine)
    seen: list[ev.Event] = []
    engine.subscribe(seen.append, types=[ev.UNHEALTHY])
    healthy = engine.check(attempt_id)
    assert (healthy.health, healthy.health_reason, healthy.last_check_at) == ("healthy", None, clock())
    instance_id = healthy.instance_id
    flip(clocked_sandbox, instance_id, valid=False)
    clock.advance(60)
    sick = engine.check(attempt_id)
    assert (sick.state, sick.health, sick.health_reason) == (
        State.PROVISIONED, "unhealthy", "instance_invalid")
    assert sick.next_run_at == healthy.next_run_at  # the renewal schedule is untouched
    engine.check(attempt_id)  # still broken for the same reason: no second event
    flip(clocked_sandbox, instance_id, valid=True, disabled=True)
    engine.check(attempt_id)
    kinds = [(e.type, e.data["reason"], e.data["customer"]) for e in engine.events(limit=100)
             if e.type == ev.UNHEALTHY]
    assert kinds == [(ev.UNHEALTHY, "instance_invalid", "acme-42"),
                     (ev.UNHEALTHY, "instance_disabled", "acme-42")]
    assert [e.data["reason"] for e in seen] == ["instance_invalid", "instance_disabled"]
    assert seen[0].data["hint"] and seen[0].data["instance_id"] == instance_id
    history = engine.history(attempt_id)
    assert [(h.trigger, h.outcome, h.note) for h in history[-2:]] == [
        ("check", "unhealthy", "instance_invalid"), ("check", "unhealthy", "instance_disabled")]
    flip(clocked_sandbox, instance_id, valid=True, disabled=False)
    assert engine.check(attempt_id).health == "healthy"
    assert len([e for e in engine.events(limit=100) if e.type == ev.UNHEALTHY]) == 2
    # Unhealthy attempts show in list; only PROVISIONED attempts can be checked.
    waiting = engine.start("quickbooks", "waiting", flow="oauth2", customer="other", **QBO)
    with pytest.raises(InvalidTransitionError, match="PROVISIONED"):
        engine.check(waiting.id)


def test_deleted_instance_is_unhealthy_and_cli_check_all(
        sqlite_url: str, engine_on: Callable[..., Engine], sandbox: Any) -> None:
    engine = engine_on(sqlite_url)
    gone, fine = connected(engine, "gone"), connected(engine, "fine")
    auth = "User sandbox-user-secret, Organization sandbox-org-secret"
    resp = requests.delete(f"{sandbox.base_url}/instances/{engine.get(gone).instance_id}",
                           headers={"Authorization": auth}, timeout=5)
    assert resp.status_code in (200, 204), resp.text
    env = {"PROVISION_SECRET_KEY": TEST_KEY, "PROVISION_DB_URL": sqlite_url,
           "ELEMENTS_BASE_URL": sandbox.base_url, "ELEMENTS_USER_SECRET": "sandbox-user-secret",
           "ELEMENTS_ORG_SECRET": "sandbox-org-secret", "PATH": str(Path(sys.executable).parent)}
    run = subprocess.run([PROVISION, "--json", "check", "--all"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert run.returncode == 1, run.stderr
    rows = {r["id"]: r for r in json.loads(run.stdout)["checks"]}
    assert (rows[gone]["health"], rows[gone]["reason"]) == ("unhealthy", "instance_missing")
    assert (rows[fine]["health"], rows[fine]["reason"]) == ("healthy", None)
    listed = subprocess.run([PROVISION, "--json", "list", "--customer", "gone"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert [(a["health"], a["health_reason"]) for a in json.loads(listed.stdout)["attempts"]] == [
        ("unhealthy", "instance_missing")]
    one = subprocess.run([PROVISION, "check", fine], capture_output=True, text=True, env=env, timeout=60)
    assert one.returncode == 0 and one.stdout.strip() == f"{fine}  healthy"
    usage = subprocess.run([PROVISION, "check"], capture_output=True, text=True, env=env, timeout=60)
    assert usage.returncode == 2
