"""Cancel stops attempts on their way, never a connection (DESIGN §2: "any non-terminal --fail-->
FAILED"); a connection ends with ``disconnect``. Checked through the API, the ``provision`` CLI
(single and bulk) and the console, on a real sandbox and real databases.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testkit import QBO, TEST_KEY, connected

from engine import Engine
from engine.errors import DuplicateConnectionError, InvalidTransitionError
from states import State

PROVISION = str(Path(sys.executable).with_name("provision"))


def test_a_connected_or_ended_attempt_is_not_cancelled(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    live = connected(engine, "acme")
    before = (engine.get(live), len(engine.history(live)), len(engine.events(limit=1000)))
    with pytest.raises(InvalidTransitionError) as refused:
        engine.cancel(live, actor="ops")
    assert "cannot cancel" in str(refused.value) and f"provision disconnect {live}" in str(refused.value)
    # Nothing moved: same row, no history row, no event, and the customer still holds its connection.
    assert (engine.get(live), len(engine.history(live)), len(engine.events(limit=1000))) == before
    with pytest.raises(DuplicateConnectionError):
        engine.start("quickbooks", "again", flow="oauth2", customer="acme", **QBO)

    engine.disconnect(live)
    engine.run_until_idle()
    assert engine.get(live).state is State.DISCONNECTED
    with pytest.raises(InvalidTransitionError, match="in state DISCONNECTED"):
        engine.cancel(live)
    on_its_way = engine.start("quickbooks", "new", flow="oauth2", customer="acme", **QBO)
    assert engine.cancel(on_its_way.id).failure_reason == "cancelled"
    with pytest.raises(InvalidTransitionError, match="in state FAILED"):
        engine.cancel(on_its_way.id)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([PROVISION, *args], capture_output=True, text=True, env=env, timeout=60)
    assert "Traceback" not in run.stderr, run.stderr
    return run


def test_cli_cancel_and_restart_select_only_attempts_they_apply_to(
        sqlite_url: str, engine_on: Callable[..., Engine], sandbox: Any) -> None:
    engine = engine_on(sqlite_url)
    live = connected(engine, "acme")
    waiting = engine.start("quickbooks", "waiting", flow="oauth2", customer="other", **QBO).id
    env = {"PROVISION_SECRET_KEY": TEST_KEY, "PROVISION_DB_URL": sqlite_url,
           "ELEMENTS_BASE_URL": sandbox.base_url, "PATH": str(Path(sys.executable).parent)}

    single = _run(env, "cancel", live)
    assert single.returncode == 2 and "cannot cancel" in single.stderr
    assert f"provision disconnect {live}" in single.stderr
    for action in ("cancel", "restart"):
        wrong = _run(env, action, "--state", "provisioned", "--dry-run")
        assert wrong.returncode == 2 and "--state" in wrong.stderr and "not PROVISIONED" in wrong.stderr
    unknown = _run(env, "cancel", "--state", "sleeping", "--dry-run")
    assert unknown.returncode == 2 and "unknown state 'sleeping'" in unknown.stderr

    # Without --state a bulk action selects only the states it applies to.
    dry = json.loads(_run(env, "--json", "cancel", "--element", "quickbooks", "--dry-run").stdout)
    assert dry["ids"] == [waiting]
    restart = json.loads(_run(env, "--json", "restart", "--element", "quickbooks", "--dry-run").stdout)
    assert restart["ids"] == []
    done = json.loads(_run(env, "--json", "cancel", "--element", "quickbooks", "--yes").stdout)
    assert (done["ids"], done["skipped"]) == ([waiting], [])
    assert engine.get(live).state is State.PROVISIONED and engine.get(waiting).state is State.FAILED
    plain = _run(env, "restart", "--element", "quickbooks", "--dry-run").stdout.splitlines()
    assert plain == [waiting, "restart: 1 attempt would change (dry run; nothing changed)"]
